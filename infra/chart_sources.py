"""Every Helm chart the platform installs, pulled from the stack's EU registry mirror as an OCI
artefact, by digest.

Why mirrored as OCI and not vendored in this repository: the charts are third-party code under
their own licences and release processes; a copy here would be a fork to keep in step by hand,
and the registry mirror already exists (every image comes from it, ``infra/images.py``). Helm
stores a chart in an OCI registry as ``<host>/<folder>/<chart>:<version>`` (``helm push
<chart>-<version>.tgz oci://<host>/<folder>``; helm.sh/docs/topics/registries), so each chart
lives on the mirror at ``oci://<mirror host>/charts/<chart>`` with its version as the tag.

The release names the chart by digest, ``oci://<mirror>/charts/<chart>@sha256:<digest>`` with
``version`` set: Helm resolves an OCI chart by digest since v3.17.0 (pkg/registry
``ValidateReference``: the digest is pulled, the version's tag must agree), and pulumi-kubernetes'
Release hands the reference to Helm's downloader as is (provider pkg/provider/helm_release.go
``locateChart`` -> ``ChartDownloader.DownloadTo``). pulumi-kubernetes before 4.23 embeds Helm
v3.15, which appends ``:<version>`` to the digest and cannot download it: pyproject.toml requires
4.30 or later (Helm v3.20.2 in its go.mod). A digest is never guessed: ``platform.charts`` holds the digest
``helm push`` printed for each ``<chart>:<version>``; a chart without one (or a stack without a
mirror) is a deploy blocker naming the commands, as for images. ``sovereign charts list --stack S``
prints each chart, where it comes from upstream and where it goes on the mirror.

This module has no dependency on the Pulumi program at import time (infra/config.py validates
``platform.charts`` with it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic_core import PydanticCustomError

from infra import images

if TYPE_CHECKING:
    from infra.config import StackConfig

MIRROR_FOLDER = "charts"  # oci://<mirror host>/charts/<chart>:<version>
_KEY_RE = re.compile(r"^(?P<chart>[a-z0-9]([-a-z0-9]*[a-z0-9])?):(?P<version>v?\d+\.\d+\.\d+[-+.\w]*)$")


@dataclass(frozen=True)
class PinnedChart:
    """A chart at the version the program installs, and its vendor's repository."""

    name: str
    version: str
    upstream: str  # a Helm repository URL (https://) or an OCI folder (oci://…)
    used_for: str

    @property
    def key(self) -> str:
        """``<chart>:<version>``: the key of ``platform.charts``."""
        return f"{self.name}:{self.version}"

    def mirror(self, cfg: StackConfig) -> str | None:
        """``oci://<mirror host>/charts/<chart>``, or None without a mirror."""
        host = images.mirror_host(cfg)
        return f"oci://{host}/{MIRROR_FOLDER}/{self.name}" if host else None

    def digest(self, cfg: StackConfig) -> str | None:
        return cfg.platform.charts.get(self.key)

    def reference(self, cfg: StackConfig) -> tuple[str, str | None]:
        """(chart, repository) for the Release: the mirror's reference by digest; without a digest
        the mirror's reference by version, without a mirror the vendor's repository (a deploy
        blocker stops `pulumi up` in both cases before anything is created)."""
        mirrored, digest = self.mirror(cfg), self.digest(cfg)
        if mirrored is None:
            if self.upstream.startswith("oci://"):
                return f"{self.upstream}/{self.name}", None
            return self.name, self.upstream
        return (f"{mirrored}@{digest}" if digest else mirrored), None

    def pull_and_push(self, cfg: StackConfig) -> str:
        """The commands that mirror the chart (run where the vendor's repository is reachable)."""
        host = images.mirror_host(cfg) or "<endpoints.registry_mirror>"
        if self.upstream.startswith("oci://"):
            pull = f"helm pull {self.upstream}/{self.name} --version {self.version}"
        else:
            pull = f"helm pull {self.name} --repo {self.upstream} --version {self.version}"
        return f"{pull} && helm push {self.name}-{self.version}.tgz oci://{host}/{MIRROR_FOLDER}"


def installed(cfg: StackConfig) -> list[PinnedChart]:
    """Every chart the program installs with this config (both phases: all are in phase 1)."""
    from infra.k8s_platform import cluster_services, gpu, memory_store, monitoring, openbao

    platform = cfg.platform
    store = (
        [PinnedChart(memory_store.CHART, platform.memory_store.chart_version, memory_store.CHART_REPO,
                     "the CloudNativePG operator and its CRDs (the memory store)")]
        if platform.memory_store.enabled
        else []
    )  # fmt: skip
    return [
        PinnedChart(
            cluster_services.CCM_WAIT.chart, cluster_services.CCM_WAIT.version, cluster_services.HCLOUD_REPO,
            "the Hetzner Cloud controller manager",
        ),
        PinnedChart(
            cluster_services.CSI_WAIT.chart, cluster_services.CSI_WAIT.version, cluster_services.HCLOUD_REPO,
            "Hetzner Cloud volumes (the default StorageClass)",
        ),
        PinnedChart(
            cluster_services.LOCAL_PATH_WAIT.chart, cluster_services.LOCAL_PATH_WAIT.version,
            cluster_services.LOCAL_PATH_REPO, "the GPU servers' local volumes (model weights)",
        ),
        PinnedChart(
            monitoring.RELEASE, monitoring.KUBE_PROMETHEUS_WAIT.version, monitoring.PROMETHEUS_REPO,
            "Prometheus and the prometheus-operator CRDs",
        ),
        PinnedChart("openbao", platform.openbao.chart_version, openbao.CHART_REPO, "OpenBao (keys, PKI)"),
        PinnedChart(
            "gpu-operator", platform.gpu_operator_version, gpu.GPU_OPERATOR_REPO, "the NVIDIA GPU operator"
        ),
        PinnedChart("keda", platform.keda_version, gpu.KEDA_REPO, "KEDA (the models' autoscaling)"),
        *store,
    ]  # fmt: skip


def find(cfg: StackConfig, name: str) -> PinnedChart:
    for chart in installed(cfg):
        if chart.name == name:
            return chart
    raise KeyError(f"{name} is not a chart the program installs")


def check_charts(value: Mapping[str, str]) -> dict[str, str]:
    """``platform.charts`` validation: ``<chart>:<version>`` -> a sha256 digest."""
    problems: list[str] = []
    out: dict[str, str] = {}
    for key, digest in value.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            problems.append(
                "charts: a key is not <chart>:<version> (e.g. keda:2.17.2, as `sovereign charts list` "
                "prints it)"
            )
            continue
        if not isinstance(digest, str) or not images.DIGEST_RE.match(digest):
            problems.append(
                f"charts.{key}: the value is not a digest: sha256:<64 lowercase hex>, as `helm push` "
                "prints it (Digest:) or `crane digest <mirror>/charts/<chart>:<version>` reads it"
            )
            continue
        out[key] = digest
    if problems:
        # infra/config.py NOT_ECHOED: the message names the key and the rule, never the value
        raise PydanticCustomError("value_not_echoed", "; ".join(problems))
    return out


def blockers(cfg: StackConfig) -> list[str]:
    """What stops a deploy: no mirror, and each chart without a digest. Never a guessed value."""
    needed = installed(cfg)
    found = []
    if images.mirror_host(cfg) is None:
        found.append(
            f"endpoints.registry_mirror is not set: every Helm chart ({len(needed)}, `sovereign charts list "
            f"--stack {cfg.stack}`) is installed from the stack's EU registry mirror as an OCI artefact, "
            "never from the vendors' repositories at deploy time; set it and mirror them"
        )
    for chart in needed:
        if chart.digest(cfg) is None:
            found.append(
                f"platform.charts has no digest for {chart.key} ({chart.used_for}): mirror it with "
                f"`{chart.pull_and_push(cfg)}` and add `{chart.key}: <digest>` to platform.charts with the "
                "digest helm push prints (never a guessed value)"
            )
    return found


def blocked(cfg: StackConfig) -> set[str]:
    """The chart references the program renders for charts that a deploy blocker names."""
    no_mirror = images.mirror_host(cfg) is None
    return {c.reference(cfg)[0] for c in installed(cfg) if no_mirror or c.digest(cfg) is None}
