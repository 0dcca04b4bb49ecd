"""Every container image the platform runs, by digest from the stack's EU registry mirror.

The stack names images by their upstream reference (``vllm/vllm-openai:v0.11.0``, a chart's
``ghcr.io/kedacore/keda:2.17.2``); ``platform.images`` maps each upstream reference to the
``sha256:`` digest it has on ``endpoints.registry_mirror`` once mirrored. The program renders
every reference as ``<mirror host>/<upstream registry>/<path>:<tag>@sha256:<digest>``: the mirror
keeps each upstream registry under a path of its name (roles/rke2/templates/registries.yaml.j2
rewrites ``docker.io/vllm/vllm-openai`` to ``<mirror>/docker.io/vllm/vllm-openai``), and an image
already named after the mirror host (the gateway's) is pulled from it as is. The tag is kept for
the reader; the digest alone decides what containerd pulls.

A digest is never guessed: an image without one is a deploy blocker (infra/program.py) naming
the image and the command that reads its digest from the mirror. ``sovereign images list
--stack S`` prints every image the stack needs, upstream and mirror reference, to mirror them.

This module has no dependency on the Pulumi program at import time (infra/config.py validates
``platform.images`` with it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.config import StackConfig

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REF_RE = re.compile(
    r"^(?:(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/)?(?P<path>[a-z0-9]+(?:(?:[._]|__|-+|/)[a-z0-9]+)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class Ref:
    """A parsed image reference, its registry made explicit (Docker's rules)."""

    registry: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """registry/path:tag, without the digest: the key of ``platform.images``."""
        return f"{self.registry}/{self.path}" + (f":{self.tag}" if self.tag else "")


def parse(reference: str) -> Ref:
    """Parse *reference*; a first component without a dot or port (and not localhost) is a path
    on Docker Hub, and a single-component Docker Hub path is under ``library/``."""
    match = _REF_RE.match(reference.strip())
    if match is None:
        raise ValueError(f"{reference!r} is not an image reference (registry/path:tag)")
    host, path = match["host"], match["path"]
    if host is not None and "." not in host and ":" not in host and host != "localhost":
        host, path = None, f"{host}/{path}"
    if host is None:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    host = host.lower()
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = DOCKER_HUB
    return Ref(host, path, match["tag"], match["digest"])


def normalize(reference: str) -> str:
    """The upstream reference as ``platform.images`` keys it: registry/path:tag."""
    return parse(reference).name


def check_images(value: Mapping[str, str]) -> dict[str, str]:
    """``platform.images`` validation: a tagged upstream reference without a digest -> a sha256
    digest; keys normalised (``vllm/vllm-openai:v0.11.0`` is ``docker.io/vllm/vllm-openai:v0.11.0``)."""
    problems: list[str] = []
    out: dict[str, str] = {}
    for key, digest in value.items():
        try:
            ref = parse(key)
        except ValueError as exc:
            problems.append(f"images.{key}: {exc}")
            continue
        if ref.tag is None or ref.digest is not None:
            problems.append(
                f"images.{key}: the key is the upstream reference with its tag and without a digest, "
                "as `sovereign images list` prints it (e.g. docker.io/vllm/vllm-openai:v0.11.0)"
            )
            continue
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            problems.append(
                f"images.{key}: {digest!r} is not a digest: sha256:<64 lowercase hex>, as "
                "`crane digest <mirror>/<registry>/<path>:<tag>` prints it after mirroring"
            )
            continue
        if out.get(ref.name, digest) != digest:
            problems.append(f"images.{key}: {ref.name} is listed twice with different digests")
        out[ref.name] = digest
    if problems:
        raise ValueError("; ".join(problems))
    return out


def mirror_host(cfg: StackConfig) -> str | None:
    """The host of ``endpoints.registry_mirror`` (a URL or a bare host), or None."""
    mirror = cfg.endpoints.registry_mirror
    if not mirror:
        return None
    return mirror.split("://", 1)[-1].split("/", 1)[0].lower()


def digest_of(cfg: StackConfig, upstream: str) -> str | None:
    ref = parse(upstream)
    return ref.digest or cfg.platform.images.get(ref.name)


def mirror_path(cfg: StackConfig, upstream: str) -> tuple[str, str] | None:
    """(host, path) of *upstream* on the mirror: ``<upstream registry>/<path>``, or the path as
    is for an image already named after the mirror host; None without a mirror."""
    host = mirror_host(cfg)
    if host is None:
        return None
    ref = parse(upstream)
    return (host, ref.path) if ref.registry == host else (host, f"{ref.registry}/{ref.path}")


def mirror_tagged(cfg: StackConfig, upstream: str) -> str | None:
    """``<mirror>/<registry>/<path>:<tag>``: where the operator mirrors *upstream* to."""
    where, ref = mirror_path(cfg, upstream), parse(upstream)
    return f"{where[0]}/{where[1]}" + (f":{ref.tag}" if ref.tag else "") if where else None


def reference(cfg: StackConfig, upstream: str) -> str:
    """What the program puts into a pod spec for *upstream*: the mirror reference by digest.
    Without a digest (or without a mirror) the reference the deploy blocker names; `pulumi up`
    stops before creating anything while that blocker stands."""
    ref = parse(upstream)
    tagged = mirror_tagged(cfg, upstream)
    if tagged is None:
        return ref.name + (f"@{ref.digest}" if ref.digest else "")
    digest = digest_of(cfg, upstream)
    return f"{tagged}@{digest}" if digest else tagged


# --- the charts' image values: how each pinned chart's template builds an image reference ------
# (component of infra/policy/charts.py's ChartFacts.images) -> (values path, style)
#   registry: {registry, repository, tag} -> "{registry}/{repository}:{tag}" (KEDA 2.17.2
#             templates/*/deployment.yaml; openbao 0.19.1 templates/server-statefulset.yaml):
#             the digest rides on the tag, "<tag>@sha256:…"
#   repo-tag: {repository, tag} -> "{repository}:{tag}" (node-feature-discovery 0.17.3
#             templates/master.yaml): the same
#   nvidia:   {repository, image, version} -> "{repository}/{image}@{version}" when version is a
#             sha256 digest (gpu-operator v25.3.4 api/nvidia/v1/clusterpolicy_types.go ImagePath)
#   nvidia-operator: the operator's own "{repository}/{image}:{version}" (gpu-operator v25.3.4
#             templates/_helpers.tpl gpu-operator.fullimage, no digest form): "<tag>@sha256:…"
#   name-tag: {name, tag} -> "{name}:{tag}" (hcloud-csi 2.22.1 templates/_common_images.tpl
#             hcloud-csi.images.image, tag through tpl): "<tag>@sha256:…"
#   sha:      {registry, repository, tag, sha} -> "{registry}/{repository}:{tag}@sha256:{sha}"
#             (kube-prometheus-stack 88.5.3 templates/prometheus-operator/deployment.yaml for the
#             operator and --prometheus-config-reloader, templates/prometheus/prometheus.yaml for
#             Prometheus, templates/alertmanager/alertmanager.yaml for Alertmanager; its grafana
#             sub-chart 12.11.1 templates/_pod.tpl for Grafana and its k8s-sidecar containers): the
#             chart's own digest field, hex without "sha256:"
# registry also fits kube-prometheus-stack's kube-state-metrics sub-chart 8.4.0 (templates/_helpers.tpl
# kube-state-metrics.image "{registry}/{repository}:{tag}" with image.sha unset).
# repo-tag also fits hcloud-cloud-controller-manager 1.35.0 (templates/deployment.yaml
# "{{ image.repository }}:{{ tpl image.tag . }}") and local-path-provisioner 0.0.37
# (templates/deployment.yaml image and --helper-image, templates/configmap.yaml helperPod.yaml:
# "{{ repository }}:{{ tag }}" with privateRegistry.registryUrl unset).
CHART_IMAGE_VALUES: dict[str, dict[str, tuple[str, str]]] = {
    "keda": {
        "operator": ("image.keda", "registry"),
        "metrics-apiserver": ("image.metricsApiServer", "registry"),
        "admission-webhooks": ("image.webhooks", "registry"),
    },
    "openbao": {"server": ("server.image", "registry")},
    "gpu-operator": {
        "operator": ("operator", "nvidia-operator"),
        "node-feature-discovery": ("node-feature-discovery.image", "repo-tag"),
        **{
            key: (key, "nvidia")
            for key in (
                "validator",
                "driver",
                "toolkit",
                "devicePlugin",
                "dcgmExporter",
                "gfd",
                "migManager",
                "dcgm",
                "nodeStatusExporter",
            )
        },
    },
    "hcloud-cloud-controller-manager": {"hcloud-cloud-controller-manager": ("image", "repo-tag")},
    "hcloud-csi": {
        "csi-attacher": ("controller.image.csiAttacher", "name-tag"),
        "csi-resizer": ("controller.image.csiResizer", "name-tag"),
        "csi-provisioner": ("controller.image.csiProvisioner", "name-tag"),
        "controller-liveness-probe": ("controller.image.livenessProbe", "name-tag"),
        "controller": ("controller.image.hcloudCSIDriver", "name-tag"),
        "csi-node-driver-registrar": ("node.image.csiNodeDriverRegistrar", "name-tag"),
        "node-liveness-probe": ("node.image.livenessProbe", "name-tag"),
        "node": ("node.image.hcloudCSIDriver", "name-tag"),
    },
    "cloudnative-pg": {"operator": ("image", "repo-tag")},
    "local-path-provisioner": {
        "local-path-provisioner": ("image", "repo-tag"),
        "helper-pod": ("helperImage", "repo-tag"),
    },
    "kube-prometheus-stack": {
        "prometheus-operator": ("prometheusOperator.image", "sha"),
        "prometheus-config-reloader": ("prometheusOperator.prometheusConfigReloader.image", "sha"),
        "prometheus": ("prometheus.prometheusSpec.image", "sha"),
        "alertmanager": ("alertmanager.alertmanagerSpec.image", "sha"),
        "kube-state-metrics": ("kube-state-metrics.image", "registry"),
        "grafana": ("grafana.image", "sha"),
        "grafana-sidecar": ("grafana.sidecar.image", "sha"),
    },
}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _at(path: str, leaf: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = leaf
    for key in reversed(path.split(".")):
        node = {key: node}
    return node


def chart_images(chart: str, version: str, values: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(component, upstream reference) of every image a release of *chart* at *version* runs
    with *values*, as infra/policy/charts.py declares it; [] for an undeclared chart."""
    from infra.policy import charts

    rule = charts.CHARTS.get((chart, version))
    return [(i.component, i.ref) for i in rule(values, chart).images] if rule else []


def chart_values(cfg: StackConfig, chart: str, version: str, values: dict[str, Any]) -> dict[str, Any]:
    """*values* with every image of the release pointed at the mirror, by digest where
    ``platform.images`` has it. Without a mirror the values are left as they are (a deploy
    blocker then names the missing mirror)."""
    styles = CHART_IMAGE_VALUES.get(chart, {})
    if mirror_host(cfg) is None:
        return values
    out = dict(values)
    for component, upstream in chart_images(chart, version, values):
        if component not in styles:
            continue  # an image this table does not know stays a completeness finding
        path, style = styles[component]
        ref, where = parse(upstream), mirror_path(cfg, upstream)
        assert where is not None  # noqa: S101 (mirror_host is set)
        host, mirrored = where
        digest = digest_of(cfg, upstream)
        tag = (ref.tag or "") + (f"@{digest}" if digest else "")
        if style == "registry":
            leaf = {"registry": host, "repository": mirrored, "tag": tag}
        elif style == "repo-tag":
            leaf = {"repository": f"{host}/{mirrored}", "tag": tag}
        elif style == "name-tag":
            leaf = {"name": f"{host}/{mirrored}", "tag": tag}
        elif style == "sha":
            sha = digest.removeprefix("sha256:") if digest else ""
            leaf = {"registry": host, "repository": mirrored, "tag": ref.tag or "", "sha": sha}
        else:
            folder, _, name = mirrored.rpartition("/")
            version_value = digest if digest and style == "nvidia" else tag
            leaf = {"repository": f"{host}/{folder}", "image": name, "version": version_value}
        out = _merge(out, _at(path, leaf))
    return out


# --- what a stack needs ----------------------------------------------------------------------


@dataclass
class StackImage:
    upstream: str  # registry/path:tag, the key of platform.images
    used_by: list[str] = field(default_factory=list)

    def mirror(self, cfg: StackConfig) -> str | None:
        return mirror_tagged(cfg, self.upstream)

    def digest(self, cfg: StackConfig) -> str | None:
        return digest_of(cfg, self.upstream)

    def rendered(self, cfg: StackConfig) -> str:
        return reference(cfg, self.upstream)


def required(cfg: StackConfig) -> list[StackImage]:
    """Every image the program deploys with this config (phase 1: no gateway and no models
    until ``platform.openbao.initialised``), each once, with what uses it."""
    from infra.k8s_platform import cluster_services, monitoring, upgrades
    from infra.k8s_platform.gpu import gpu_operator_values
    from infra.k8s_platform.memory_store import CHART as CNPG_CHART
    from infra.k8s_platform.memory_store import operator_values
    from infra.k8s_platform.openbao import helm_values

    found: dict[str, StackImage] = {}

    def need(upstream: str, used_by: str) -> None:
        key = normalize(upstream)
        found.setdefault(key, StackImage(key)).used_by.append(used_by)

    platform = cfg.platform
    store = platform.memory_store
    if platform.openbao.initialised:
        need(platform.gateway.image, "the gateway and the weights tools (platform.gateway.image)")
        if store.enabled:
            need(store.image, "the memory store's PostgreSQL (platform.memory_store.image)")
        for i, model in enumerate(platform.models):
            need(model.image, f"vLLM {model.name} (platform.models.{i}.image)")
    for chart, version, values in (
        ("openbao", platform.openbao.chart_version, helm_values(cfg)),
        ("keda", platform.keda_version, None),
        ("gpu-operator", platform.gpu_operator_version, gpu_operator_values()),
        ("hcloud-cloud-controller-manager", cluster_services.CCM_WAIT.version, cluster_services.ccm_values()),
        ("hcloud-csi", cluster_services.CSI_WAIT.version, cluster_services.csi_values()),
        (
            cluster_services.LOCAL_PATH_WAIT.chart,
            cluster_services.LOCAL_PATH_WAIT.version,
            cluster_services.local_path_values(cfg),
        ),
        (monitoring.RELEASE, monitoring.KUBE_PROMETHEUS_WAIT.version, monitoring.values(cfg)),
        *([(CNPG_CHART, store.chart_version, operator_values(cfg))] if store.enabled else []),
    ):
        for component, upstream in chart_images(chart, version, values):
            need(upstream, f"Helm release {chart.rsplit('/', 1)[-1]} {version}: {component}")
    need(upgrades.SUC_IMAGE, "system-upgrade-controller")
    need(upgrades.KUBECTL_IMAGE, "system-upgrade-controller's cordon/drain Jobs")
    need(upgrades.rke2_upgrade_image(cfg.rke2.version), f"RKE2 upgrade Plans ({cfg.rke2.version})")
    return list(found.values())


def digest_command(mirrored: str) -> str:
    return f"`crane digest {mirrored}` (or `skopeo inspect --format '{{{{.Digest}}}}' docker://{mirrored}`)"


def blockers(cfg: StackConfig) -> list[str]:
    """What stops a deploy: no mirror, and each image without a digest (named, with the command
    that reads its digest once mirrored). Never a guessed value."""
    needed = required(cfg)
    found = []
    if mirror_host(cfg) is None:
        found.append(
            f"endpoints.registry_mirror is not set: every image the platform runs ({len(needed)}, "
            f"`sovereign images list --stack {cfg.stack}`) comes from the stack's EU registry mirror by "
            "digest, and the rke2 role sends pulls nowhere else; set it (with its residency.extra_hosts "
            "entry) and mirror them (docs/first-deploy.md)"
        )
    for image in needed:
        if image.digest(cfg) is not None:
            continue
        mirrored = image.mirror(cfg) or f"<endpoints.registry_mirror>/{mirror_path_hint(image.upstream)}"
        found.append(
            f"platform.images has no digest for {image.upstream} ({'; '.join(image.used_by)}): once it is "
            f"on the mirror as {mirrored}, add `{image.upstream}: <digest>` to platform.images with the "
            f"digest {digest_command(mirrored)} prints (never a guessed value)"
        )
    return found


def mirror_path_hint(upstream: str) -> str:
    ref = parse(upstream)
    return f"{ref.registry}/{ref.path}" + (f":{ref.tag}" if ref.tag else "")


def blocked(cfg: StackConfig) -> set[str]:
    """The references the program renders for images that a deploy blocker names (normalised)."""
    no_mirror = mirror_host(cfg) is None
    return {
        normalize(image.rendered(cfg)) for image in required(cfg) if no_mirror or image.digest(cfg) is None
    }
