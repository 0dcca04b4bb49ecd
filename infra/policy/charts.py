"""What each pinned Helm chart and RKE2 itself provide, for the completeness check.

The charts cannot be rendered here (no chart archives, no helm binary, no network), so what a
release installs and what it needs is declared per chart and pinned version, each fact citing
the template it comes from (read at the chart's release tag). A release of a chart or version
that is not declared here is itself a finding: nobody has checked what it renders.

Values are read as Helm merges them: the release's values over the chart's defaults; each
lookup below names the default from the chart's ``values.yaml`` at that tag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

KEDA = "https://github.com/kedacore/charts/blob/v2.17.2/keda"
OPENBAO = "https://github.com/openbao/openbao-helm/blob/openbao-0.19.1/charts/openbao"
GPU_OPERATOR = "https://github.com/NVIDIA/gpu-operator/blob/v25.3.4"
RKE2 = "https://github.com/rancher/rke2/blob/v1.33.5%2Brke2r1"
GPU_CHART = f"{GPU_OPERATOR}/deployments/gpu-operator"
NFD_CHART = f"{GPU_CHART}/charts/node-feature-discovery"
KUBE_PROMETHEUS = "https://github.com/prometheus-community/helm-charts/blob/kube-prometheus-stack-88.5.3/charts/kube-prometheus-stack"
HCLOUD_CSI = "https://github.com/hetznercloud/csi-driver/blob/v2.22.1/chart"
HCLOUD_CCM = "https://github.com/hetznercloud/hcloud-cloud-controller-manager/blob/v1.35.0/chart"
CNPG = "https://github.com/cloudnative-pg/charts/blob/cloudnative-pg-v0.27.1/charts/cloudnative-pg"
LOCAL_PATH = (
    "https://github.com/rancher/local-path-provisioner/blob/v0.0.37/deploy/chart/local-path-provisioner"
)


PROMETHEUS_OPERATOR = "monitoring.coreos.com"


@dataclass(frozen=True)
class Kind:
    """An API kind (group, kind) and where the fact comes from."""

    group: str
    kind: str
    source: str


@dataclass(frozen=True)
class Claim:
    """A PersistentVolumeClaim a chart renders; storage_class None: the cluster's default class."""

    name: str
    storage_class: str | None
    source: str


@dataclass(frozen=True)
class Ref:
    """A Secret, ConfigMap or ServiceAccount the chart's pods reference by a name from values."""

    kind: str
    name: str
    source: str


@dataclass(frozen=True)
class Image:
    component: str
    ref: str
    source: str


@dataclass(frozen=True)
class ChartFacts:
    crds: list[Kind] = field(default_factory=list)  # CRDs the release installs
    uses: list[Kind] = field(default_factory=list)  # kinds it renders or its operator creates
    claims: list[Claim] = field(default_factory=list)
    references: list[Ref] = field(default_factory=list)
    creates: list[Ref] = field(default_factory=list)  # Secrets, ConfigMaps, ServiceAccounts it creates
    storage_classes: list[tuple[str, bool]] = field(default_factory=list)  # (name, is the default)
    images: list[Image] = field(default_factory=list)


def chart_name(reference: str) -> str:
    """The chart's name in a Release's ``chart`` input: a plain name, ``repo/name`` or an OCI
    reference ``oci://host/folder/name[:tag][@sha256:…]`` (infra/chart_sources.py)."""
    leaf = reference.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return leaf.split(":", 1)[0] if reference.startswith("oci://") else leaf


def value(values: Mapping[str, Any] | None, path: str, default: Any) -> Any:
    """``values`` at a dotted *path*, else the chart's *default* (Helm's merge over values.yaml)."""
    node: Any = values or {}
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node or node[key] is None:
            return default
        node = node[key]
    return node


def _on(values: Mapping[str, Any] | None, path: str, default: bool) -> bool:
    got = value(values, path, default)
    return str(got).lower() == "true" if not isinstance(got, bool) else got


# --- KEDA 2.17.2 (kedacore/charts, tag v2.17.2) -------------------------------------------------


def keda(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    crds = []
    if _on(values, "crds.install", True):  # values.yaml crds.install: true
        for group, kind, file in (
            ("keda.sh", "ScaledObject", "crd-scaledobjects.yaml"),
            ("keda.sh", "ScaledJob", "crd-scaledjobs.yaml"),
            ("keda.sh", "TriggerAuthentication", "crd-triggerauthentications.yaml"),
            ("keda.sh", "ClusterTriggerAuthentication", "crd-clustertriggerauthentications.yaml"),
            ("eventing.keda.sh", "CloudEventSource", "crd-cloudeventsources.yaml"),
            ("eventing.keda.sh", "ClusterCloudEventSource", "crd-clustercloudeventsources.yaml"),
        ):
            crds.append(Kind(group, kind, f"{KEDA}/templates/crds/{file}"))
    uses = []
    webhooks = _on(values, "webhooks.enabled", True)
    for component, enabled, folder in (
        ("operator", True, "manager"),
        ("metricServer", True, "metrics-server"),
        ("webhooks", webhooks, "webhooks"),
    ):
        on = enabled and _on(values, f"prometheus.{component}.enabled", False)
        for kind, key, file in (
            ("ServiceMonitor", "serviceMonitor", "servicemonitor.yaml"),
            ("PodMonitor", "podMonitor", "podmonitor.yaml"),
            ("PrometheusRule", "prometheusRules", "prometheusrules.yaml"),
        ):
            if on and _on(values, f"prometheus.{component}.{key}.enabled", False):
                uses.append(Kind(PROMETHEUS_OPERATOR, kind, f"{KEDA}/templates/{folder}/{file}"))
    if _on(values, "certificates.certManager.enabled", False):
        uses.append(
            Kind("cert-manager.io", "Certificate", f"{KEDA}/templates/cert-manager/keda-tls-certificate.yaml")
        )
    # image: "{{ $registry }}/{{ repository }}:{{ tag | default .Chart.AppVersion }}" with
    # $registry = global.image.registry | default image.<c>.registry (deployment.yaml of each)
    images = []
    for component, key, repo, folder in (
        ("operator", "keda", "kedacore/keda", "manager"),
        ("metrics-apiserver", "metricsApiServer", "kedacore/keda-metrics-apiserver", "metrics-server"),
        ("admission-webhooks", "webhooks", "kedacore/keda-admission-webhooks", "webhooks"),
    ):
        if key == "webhooks" and not webhooks:
            continue
        registry = value(values, "global.image.registry", None) or value(
            values, f"image.{key}.registry", "ghcr.io"
        )
        repository = value(values, f"image.{key}.repository", repo)
        tag = value(values, f"image.{key}.tag", "") or "2.17.2"
        prefix = f"{registry}/" if registry else ""
        images.append(
            Image(component, f"{prefix}{repository}:{tag}", f"{KEDA}/templates/{folder}/deployment.yaml")
        )
    creates = [
        Ref("ServiceAccount", "keda-operator", f"{KEDA}/templates/manager/serviceaccount.yaml"),
        Ref("ServiceAccount", "keda-metrics-server", f"{KEDA}/templates/metrics-server/serviceaccount.yaml"),
    ]
    if webhooks:
        creates.append(
            Ref("ServiceAccount", "keda-webhook", f"{KEDA}/templates/webhooks/serviceaccount.yaml")
        )
    # the metrics API server (and the webhooks) mount the TLS Secret certificates.secretName, which
    # the chart does not render: the operator generates it at start (certificates.autoGenerated: true)
    secret = value(values, "certificates.secretName", "kedaorg-certs")
    references = [Ref("Secret", secret, f"{KEDA}/templates/metrics-server/deployment.yaml (certificates)")]
    if _on(values, "certificates.autoGenerated", True):
        creates.append(Ref("Secret", secret, f"{KEDA}/values.yaml certificates.autoGenerated (the operator)"))
    return ChartFacts(crds=crds, uses=uses, images=images, creates=creates, references=references)


# --- OpenBao chart 0.19.1 (openbao/openbao-helm, tag openbao-0.19.1; appVersion v2.4.3) ----------


def openbao(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    uses = []
    operator = _on(values, "global.serverTelemetry.prometheusOperator", False)
    if operator or _on(values, "serverTelemetry.serviceMonitor.enabled", False):
        uses.append(
            Kind(PROMETHEUS_OPERATOR, "ServiceMonitor", f"{OPENBAO}/templates/prometheus-servicemonitor.yaml")
        )
    rules = value(values, "serverTelemetry.prometheusRules.rules", [])
    if rules and (operator or _on(values, "serverTelemetry.prometheusRules.enabled", False)):
        uses.append(
            Kind(
                PROMETHEUS_OPERATOR, "PrometheusRule", f"{OPENBAO}/templates/prometheus-prometheusrules.yaml"
            )
        )
    # templates/_helpers.tpl "openbao.volumeclaims": no storageClassName unless set (the default class)
    claims = []
    volumeclaims = f"{OPENBAO}/templates/_helpers.tpl (openbao.volumeclaims)"
    standalone = not _on(values, "server.ha.enabled", False)
    if _on(values, "server.dataStorage.enabled", True) and (
        standalone or _on(values, "server.ha.raft.enabled", False)
    ):
        claims.append(Claim("data", value(values, "server.dataStorage.storageClass", None), volumeclaims))
    if _on(values, "server.auditStorage.enabled", False):
        claims.append(Claim("audit", value(values, "server.auditStorage.storageClass", None), volumeclaims))
    references = []
    for volume in value(values, "server.extraVolumes", []) or []:  # _helpers.tpl openbao.volumes
        kind = {"secret": "Secret", "configMap": "ConfigMap"}.get(str(volume.get("type")))
        if kind:
            references.append(
                Ref(kind, str(volume.get("name")), f"{OPENBAO}/templates/_helpers.tpl (openbao.volumes)")
            )
    for env in value(values, "server.extraSecretEnvironmentVars", []) or []:
        references.append(
            Ref(
                "Secret",
                str(env.get("secretName")),
                f"{OPENBAO}/templates/_helpers.tpl (openbao.extraSecretEnvironmentVars)",
            )
        )
    # server-statefulset.yaml: "{{ registry | default "docker.io" }}/{{ repository }}:
    #                           {{ tag | default (trimPrefix "v" .Chart.AppVersion) }}"
    registry = value(values, "server.image.registry", "quay.io")
    repository = value(values, "server.image.repository", "openbao/openbao")
    tag = value(values, "server.image.tag", "") or "2.4.3"
    images = [
        Image("server", f"{registry}/{repository}:{tag}", f"{OPENBAO}/templates/server-statefulset.yaml")
    ]
    creates = [
        Ref("ConfigMap", f"{release}-config", f"{OPENBAO}/templates/server-config-configmap.yaml"),
        Ref("ServiceAccount", release, f"{OPENBAO}/templates/server-serviceaccount.yaml"),
    ]
    return ChartFacts(uses=uses, claims=claims, references=references, images=images, creates=creates)


# --- NVIDIA GPU operator v25.3.4 (NVIDIA/gpu-operator, tag v25.3.4) ------------------------------
# Chart.yaml in git carries placeholders (v1.0.0-devel); the release sets version and appVersion
# to v25.3.4, which is the default image version of the operator and its validator.


def _nvidia_image(values: Mapping[str, Any] | None, key: str, repo: str, image: str, version: str) -> str:
    """api/nvidia/v1/clusterpolicy_types.go ImagePath: repository/image@version when version is
    a sha256 digest, else repository/image:version."""
    repository = value(values, f"{key}.repository", repo)
    name = value(values, f"{key}.image", image)
    got = value(values, f"{key}.version", version)
    return f"{repository}/{name}@{got}" if str(got).startswith("sha256:") else f"{repository}/{name}:{got}"


def gpu_operator(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    crds = [
        Kind("nvidia.com", "ClusterPolicy", f"{GPU_CHART}/crds/nvidia.com_clusterpolicies.yaml"),
        Kind("nvidia.com", "NVIDIADriver", f"{GPU_CHART}/crds/nvidia.com_nvidiadrivers.yaml"),
    ]
    nfd = _on(values, "nfd.enabled", True)
    if nfd:  # the node-feature-discovery subchart (condition nfd.enabled) and its crds/
        nfd_crds = f"{NFD_CHART}/crds/nfd-api-crds.yaml"
        crds += [
            Kind("nfd.k8s-sigs.io", k, nfd_crds)
            for k in ("NodeFeature", "NodeFeatureGroup", "NodeFeatureRule")
        ]
    uses = [Kind("nvidia.com", "ClusterPolicy", f"{GPU_CHART}/templates/clusterpolicy.yaml")]
    dcgm_exporter = _on(values, "dcgmExporter.enabled", True)
    if dcgm_exporter and _on(values, "dcgmExporter.serviceMonitor.enabled", False):
        # the operator creates the DCGM exporter's ServiceMonitor and reports the state NotReady
        # while the CRD is missing ("couldn't find ServiceMonitor CRD"): the ClusterPolicy never
        # gets ready (gpu-operator#2262 changes this after v25.3.4)
        uses.append(
            Kind(
                PROMETHEUS_OPERATOR,
                "ServiceMonitor",
                f"{GPU_OPERATOR}/controllers/object_controls.go (func ServiceMonitor)",
            )
        )
    if nfd and _on(values, "node-feature-discovery.prometheus.enable", False):
        uses.append(Kind(PROMETHEUS_OPERATOR, "PodMonitor", f"{NFD_CHART}/templates/prometheus.yaml"))
    policy_types = f"{GPU_OPERATOR}/api/nvidia/v1/clusterpolicy_types.go (ImagePath)"
    # templates/_helpers.tpl gpu-operator.fullimage: repository/image:version (no digest form)
    images = [
        Image(
            "operator",
            f"{value(values, 'operator.repository', 'nvcr.io/nvidia')}/"
            f"{value(values, 'operator.image', 'gpu-operator')}:"
            f"{value(values, 'operator.version', 'v25.3.4')}",
            f"{GPU_CHART}/templates/_helpers.tpl (gpu-operator.fullimage)",
        ),
        Image(
            "validator",
            _nvidia_image(
                values, "validator", "nvcr.io/nvidia/cloud-native", "gpu-operator-validator", "v25.3.4"
            ),
            policy_types,
        ),
    ]
    for key, enabled, repo, image, version in (
        ("driver", True, "nvcr.io/nvidia", "driver", "580.82.07"),  # the operator appends the node's OS
        ("toolkit", True, "nvcr.io/nvidia/k8s", "container-toolkit", "v1.17.8-ubuntu20.04"),
        ("devicePlugin", True, "nvcr.io/nvidia", "k8s-device-plugin", "v0.17.4"),
        ("dcgmExporter", True, "nvcr.io/nvidia/k8s", "dcgm-exporter", "4.3.1-4.4.0-ubuntu22.04"),
        ("gfd", True, "nvcr.io/nvidia", "k8s-device-plugin", "v0.17.4"),
        ("migManager", True, "nvcr.io/nvidia/cloud-native", "k8s-mig-manager", "v0.12.3-ubuntu20.04"),
        ("dcgm", False, "nvcr.io/nvidia/cloud-native", "dcgm", "4.3.1-1-ubuntu22.04"),
        ("nodeStatusExporter", False, "nvcr.io/nvidia/cloud-native", "gpu-operator-validator", "v25.3.4"),
    ):  # defaults from deployments/gpu-operator/values.yaml at v25.3.4
        if _on(values, f"{key}.enabled", enabled):
            images.append(Image(key, _nvidia_image(values, key, repo, image, version), policy_types))
    if nfd:  # subchart values.yaml image.repository, tag default .Chart.AppVersion (v0.17.3)
        repository = value(
            values, "node-feature-discovery.image.repository", "registry.k8s.io/nfd/node-feature-discovery"
        )
        tag = value(values, "node-feature-discovery.image.tag", "v0.17.3")
        images.append(
            Image("node-feature-discovery", f"{repository}:{tag}", f"{NFD_CHART}/templates/master.yaml")
        )
    creates = [
        Ref("ServiceAccount", "gpu-operator", f"{GPU_CHART}/templates/serviceaccount.yaml"),
        # a pre-upgrade hook (operator.upgradeCRD, default true) with its own account
        Ref("ServiceAccount", "gpu-operator-upgrade-crd-hook-sa", f"{GPU_CHART}/templates/upgrade_crd.yaml"),
    ]
    if nfd:
        # the subchart's fullname: "<release>-node-feature-discovery" (_helpers.tpl, no override)
        full = f"{release}-node-feature-discovery"
        creates += [
            # master.serviceAccount.name node-feature-discovery in the parent's values.yaml
            Ref("ServiceAccount", "node-feature-discovery", f"{NFD_CHART}/templates/serviceaccount.yaml"),
            Ref("ServiceAccount", f"{full}-prune", f"{NFD_CHART}/templates/post-delete-job.yaml"),
            Ref("ConfigMap", f"{full}-master-conf", f"{NFD_CHART}/templates/nfd-master-conf.yaml"),
            Ref("ConfigMap", f"{full}-worker-conf", f"{NFD_CHART}/templates/nfd-worker-conf.yaml"),
        ]
    return ChartFacts(crds=crds, uses=uses, images=images, creates=creates)


# --- kube-prometheus-stack 88.5.3 (prometheus-community/helm-charts, tag kube-prometheus-stack-88.5.3;
# appVersion v0.93.1, the prometheus-operator) ------------------------------------------------------
KUBE_PROMETHEUS_CRDS = (
    ("Alertmanager", "crd-alertmanagers.yaml"),
    ("AlertmanagerConfig", "crd-alertmanagerconfigs.yaml"),
    ("PodMonitor", "crd-podmonitors.yaml"),
    ("Probe", "crd-probes.yaml"),
    ("Prometheus", "crd-prometheuses.yaml"),
    ("PrometheusAgent", "crd-prometheusagents.yaml"),
    ("PrometheusRule", "crd-prometheusrules.yaml"),
    ("ScrapeConfig", "crd-scrapeconfigs.yaml"),
    ("ServiceMonitor", "crd-servicemonitors.yaml"),
    ("ThanosRuler", "crd-thanosrulers.yaml"),
)


def _kps_image(values: Mapping[str, Any] | None, key: str, repo: str, tag: str) -> str:
    """``{{ global.imageRegistry | default <key>.registry }}/<repository>:<tag>[@sha256:<sha>]``
    (templates/prometheus-operator/deployment.yaml, templates/prometheus/prometheus.yaml)."""
    registry = value(values, "global.imageRegistry", None) or value(values, f"{key}.registry", "quay.io")
    got = f"{registry}/{value(values, f'{key}.repository', repo)}:{value(values, f'{key}.tag', '') or tag}"
    sha = value(values, f"{key}.sha", "")
    return f"{got}@sha256:{sha}" if sha else got


# its sub-charts at the versions its Chart.yaml pins
KSM_CHART = "https://github.com/prometheus-community/helm-charts/blob/kube-state-metrics-8.4.0/charts/kube-state-metrics"
GRAFANA_CHART = "https://github.com/grafana-community/helm-charts/blob/grafana-12.11.1/charts/grafana"


def _ksm_image(values: Mapping[str, Any] | None) -> str:
    """kube-state-metrics 8.4.0 templates/_helpers.tpl kube-state-metrics.image:
    ``{{ global.imageRegistry | image.registry }}/<repository>:<tag | v+appVersion>[@<sha>]`` (the sha
    with its ``sha256:`` prefix); values.yaml image: registry.k8s.io, appVersion 2.20.0."""
    key = "kube-state-metrics.image"
    registry = value(values, "global.imageRegistry", None) or value(
        values, f"{key}.registry", "registry.k8s.io"
    )
    repository = value(values, f"{key}.repository", "kube-state-metrics/kube-state-metrics")
    got = f"{registry}/{repository}:{value(values, f'{key}.tag', '') or 'v2.20.0'}"
    sha = value(values, f"{key}.sha", "")
    return f"{got}@{sha}" if sha else got


def _grafana_image(values: Mapping[str, Any] | None, key: str, registry: str, repo: str, tag: str) -> str:
    """grafana 12.11.1 templates/_pod.tpl: ``{{ global.imageRegistry | <key>.registry }}/<repository>:
    <tag>[@sha256:<sha>]`` (the grafana container's tag defaults to appVersion 13.2.0; the sidecars'
    is values.yaml sidecar.image.tag)."""
    got = value(values, "global.imageRegistry", None) or value(values, f"{key}.registry", registry)
    ref = f"{got}/{value(values, f'{key}.repository', repo)}:{value(values, f'{key}.tag', '') or tag}"
    sha = value(values, f"{key}.sha", "")
    return f"{ref}@sha256:{sha}" if sha else ref


def kube_prometheus_stack(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    crds = []
    if _on(values, "crds.enabled", True):  # Chart.yaml dependency crds (condition crds.enabled)
        crds = [
            Kind(PROMETHEUS_OPERATOR, kind, f"{KUBE_PROMETHEUS}/charts/crds/crds/{file}")
            for kind, file in KUBE_PROMETHEUS_CRDS
        ]
    uses = []
    if _on(values, "prometheus.enabled", True):
        uses.append(
            Kind(PROMETHEUS_OPERATOR, "Prometheus", f"{KUBE_PROMETHEUS}/templates/prometheus/prometheus.yaml")
        )
        uses.append(
            Kind(
                PROMETHEUS_OPERATOR,
                "ServiceMonitor",
                f"{KUBE_PROMETHEUS}/templates/prometheus/servicemonitor.yaml",
            )
        )
    if _on(values, "alertmanager.enabled", True):
        uses.append(
            Kind(
                PROMETHEUS_OPERATOR,
                "Alertmanager",
                f"{KUBE_PROMETHEUS}/templates/alertmanager/alertmanager.yaml",
            )
        )
    if _on(values, "defaultRules.create", True):
        uses.append(
            Kind(PROMETHEUS_OPERATOR, "PrometheusRule", f"{KUBE_PROMETHEUS}/templates/prometheus/rules-1.14")
        )
    # the Prometheus StatefulSet (made by the operator) claims storageSpec.volumeClaimTemplate; without
    # storageSpec the data is an emptyDir (templates/prometheus/prometheus.yaml "storage:")
    claims = []
    template = value(values, "prometheus.prometheusSpec.storageSpec.volumeClaimTemplate", None)
    if _on(values, "prometheus.enabled", True) and isinstance(template, Mapping):
        storage_class = value(template, "spec.storageClassName", None)
        source = f"{KUBE_PROMETHEUS}/templates/prometheus/prometheus.yaml (storage)"
        claims.append(Claim("prometheus-db", storage_class, source))
    # the Alertmanager StatefulSet (the operator's) likewise claims alertmanagerSpec.storage's template
    # (templates/alertmanager/alertmanager.yaml "storage:"; prometheus-operator
    # pkg/alertmanager/statefulset.go)
    template = value(values, "alertmanager.alertmanagerSpec.storage.volumeClaimTemplate", None)
    if _on(values, "alertmanager.enabled", True) and isinstance(template, Mapping):
        source = f"{KUBE_PROMETHEUS}/templates/alertmanager/alertmanager.yaml (storage)"
        claims.append(Claim("alertmanager-db", value(template, "spec.storageClassName", None), source))
    images = [
        Image(
            "prometheus-operator",
            _kps_image(
                values, "prometheusOperator.image", "prometheus-operator/prometheus-operator", "v0.93.1"
            ),
            f"{KUBE_PROMETHEUS}/templates/prometheus-operator/deployment.yaml",
        ),
        Image(
            "prometheus-config-reloader",
            _kps_image(
                values,
                "prometheusOperator.prometheusConfigReloader.image",
                "prometheus-operator/prometheus-config-reloader",
                "v0.93.1",
            ),
            f"{KUBE_PROMETHEUS}/templates/prometheus-operator/deployment.yaml (--prometheus-config-reloader)",
        ),
    ]
    if _on(values, "prometheus.enabled", True):
        images.append(
            Image(
                "prometheus",
                _kps_image(
                    values, "prometheus.prometheusSpec.image", "prometheus/prometheus", "v3.14.0-distroless"
                ),
                f"{KUBE_PROMETHEUS}/templates/prometheus/prometheus.yaml",
            )
        )
    if _on(values, "alertmanager.enabled", True):
        images.append(
            Image(
                "alertmanager",
                _kps_image(
                    values, "alertmanager.alertmanagerSpec.image", "prometheus/alertmanager", "v0.34.0"
                ),
                f"{KUBE_PROMETHEUS}/templates/alertmanager/alertmanager.yaml",
            )
        )
    if _on(values, "prometheusOperator.admissionWebhooks.enabled", True) and _on(
        values, "prometheusOperator.admissionWebhooks.patch.enabled", True
    ):
        images.append(
            Image(
                "admission-webhook-certgen",
                _kps_image(
                    values,
                    "prometheusOperator.admissionWebhooks.patch.image",
                    "jkroepke/kube-webhook-certgen",
                    "1.8.7",
                ).replace("quay.io/", "ghcr.io/", 1)
                if not value(values, "prometheusOperator.admissionWebhooks.patch.image.registry", None)
                else _kps_image(
                    values,
                    "prometheusOperator.admissionWebhooks.patch.image",
                    "jkroepke/kube-webhook-certgen",
                    "1.8.7",
                ),
                f"{KUBE_PROMETHEUS}/templates/prometheus-operator/admission-webhooks/job-patch/job-createSecret.yaml",
            )
        )
    # sub-charts (Chart.yaml dependencies): kube-state-metrics 8.4.0 and grafana 12.11.1 declared
    # below; node-exporter is not, so refused here while the values leave it on
    if _on(values, "kubeStateMetrics.enabled", True):
        images.append(
            Image(
                "kube-state-metrics",
                _ksm_image(values),
                f"{KSM_CHART}/templates/_helpers.tpl (kube-state-metrics.image)",
            )
        )
    if _on(values, "grafana.enabled", True):
        images.append(
            Image(
                "grafana",
                _grafana_image(values, "grafana.image", "docker.io", "grafana/grafana", "13.2.0"),
                f"{GRAFANA_CHART}/templates/_pod.tpl (container grafana)",
            )
        )
        sidecars = ("dashboards", "datasources", "alerts", "notifiers", "plugins")
        if any(
            _on(values, f"grafana.sidecar.{s}.enabled", s in ("dashboards", "datasources")) for s in sidecars
        ):
            images.append(
                Image(
                    "grafana-sidecar",
                    _grafana_image(
                        values, "grafana.sidecar.image", "quay.io", "kiwigrid/k8s-sidecar", "2.10.1"
                    ),
                    f"{GRAFANA_CHART}/templates/_pod.tpl (grafana-sc-* containers)",
                )
            )
    if _on(values, "nodeExporter.enabled", True):
        images.append(
            Image(
                "nodeExporter",
                "<sub-chart nodeExporter: not declared in infra/policy/charts.py>",
                KUBE_PROMETHEUS,
            )
        )
    fullname = release if "kube-prometheus-stack" in release else f"{release}-kube-prometheus-stack"
    creates = [
        Ref(
            "ServiceAccount",
            f"{fullname[:26].rstrip('-')}-operator",
            f"{KUBE_PROMETHEUS}/templates/prometheus-operator/serviceaccount.yaml",
        ),
        Ref(
            "ServiceAccount",
            f"{fullname[:26].rstrip('-')}-prometheus",
            f"{KUBE_PROMETHEUS}/templates/prometheus/serviceaccount.yaml",
        ),
    ]
    short = fullname[:26].rstrip("-")
    if _on(values, "alertmanager.enabled", True):
        creates += [
            Ref(
                "ServiceAccount",
                f"{short}-alertmanager",
                f"{KUBE_PROMETHEUS}/templates/alertmanager/serviceaccount.yaml",
            ),
            # the configuration Secret alertmanager-<crname> (templates/alertmanager/secret.yaml)
            Ref(
                "Secret",
                f"alertmanager-{short}-alertmanager",
                f"{KUBE_PROMETHEUS}/templates/alertmanager/secret.yaml",
            ),
        ]
    if _on(values, "kubeStateMetrics.enabled", True):
        ksm = release if "kube-state-metrics" in release else f"{release}-kube-state-metrics"
        creates.append(
            Ref("ServiceAccount", ksm[:63].rstrip("-"), f"{KSM_CHART}/templates/serviceaccount.yaml")
        )
        if _on(values, "kube-state-metrics.customResourceState.enabled", False):
            creates.append(
                Ref(
                    "ConfigMap",
                    f"{ksm[:63].rstrip('-')}-customresourcestate-config",
                    f"{KSM_CHART}/templates/crs-configmap.yaml",
                )
            )
    if _on(values, "grafana.enabled", True):
        graf = (release if "grafana" in release else f"{release}-grafana")[:63].rstrip("-")
        creates += [
            Ref("ServiceAccount", graf, f"{GRAFANA_CHART}/templates/serviceaccount.yaml"),
            Ref("ConfigMap", graf, f"{GRAFANA_CHART}/templates/configmap.yaml (grafana.ini)"),
        ]
        if not value(values, "grafana.admin.existingSecret", ""):
            # the admin user and a random password, kept on upgrade by lookup (templates/secret.yaml)
            creates.append(Ref("Secret", graf, f"{GRAFANA_CHART}/templates/secret.yaml"))
        if _on(values, "grafana.sidecar.dashboards.enabled", True):
            creates.append(
                Ref(
                    "ConfigMap",
                    f"{graf}-config-dashboards",
                    f"{GRAFANA_CHART}/templates/configmap-dashboard-provider.yaml",
                )
            )
        if _on(values, "grafana.sidecar.datasources.enabled", True):
            creates.append(
                Ref(
                    "ConfigMap",
                    f"{short}-grafana-datasource",
                    f"{KUBE_PROMETHEUS}/templates/grafana/configmaps-datasources.yaml",
                )
            )
    # TLS on the operator's web port (values.yaml prometheusOperator.tls.enabled: true) mounts the
    # Secret <fullname>-admission (templates/prometheus-operator/deployment.yaml "tls-secret"),
    # created by the admission webhooks' certificate Job (job-patch/job-createSecret.yaml) or
    # cert-manager (certmanager.yaml); without either nothing creates it
    references: list[Ref] = []
    if _on(values, "prometheusOperator.tls.enabled", True):
        secret = Ref(
            "Secret",
            f"{fullname[:26].rstrip('-')}-admission",
            f"{KUBE_PROMETHEUS}/templates/prometheus-operator/deployment.yaml (tls-secret)",
        )
        webhooks = _on(values, "prometheusOperator.admissionWebhooks.enabled", True)
        made = _on(values, "prometheusOperator.admissionWebhooks.patch.enabled", True) or _on(
            values, "prometheusOperator.admissionWebhooks.certManager.enabled", False
        )
        (creates if webhooks and made else references).append(secret)
    return ChartFacts(
        crds=crds, uses=uses, claims=claims, references=references, images=images, creates=creates
    )


# --- hcloud-csi 2.22.1 (hetznercloud/csi-driver, tag v2.22.1) -------------------------------------


def hcloud_csi(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    # templates/core/storageclass.yaml: one StorageClass per storageClasses entry, is-default-class from
    # defaultStorageClass, volumeBindingMode WaitForFirstConsumer fixed in the template
    classes = [
        (str(c.get("name")), str(c.get("defaultStorageClass", False)).lower() == "true")
        for c in value(values, "storageClasses", [{"name": "hcloud-volumes", "defaultStorageClass": True}])
        if isinstance(c, Mapping)
    ]
    references, creates = [], []
    token = f"{HCLOUD_CSI}/templates/controller/deployment.yaml (HCLOUD_TOKEN)"
    if value(values, "controller.hcloudToken.value", ""):
        creates.append(
            Ref("Secret", "hcloud-csi-hcloud-token", f"{HCLOUD_CSI}/templates/controller/secret.yaml")
        )
    elif not value(values, "controller.hcloudToken.file", ""):
        references.append(
            Ref("Secret", str(value(values, "controller.hcloudToken.existingSecret.name", "hcloud")), token)
        )
    uses = []
    if _on(values, "metrics.enabled", False) and _on(values, "metrics.serviceMonitor.enabled", False):
        uses.append(
            Kind(
                PROMETHEUS_OPERATOR,
                "ServiceMonitor",
                f"{HCLOUD_CSI}/templates/controller/servicemonitor.yaml",
            )
        )
    # templates/_common_images.tpl: "{{ name }}:{{ tag }}", values.yaml defaults
    images = []
    sig = "registry.k8s.io/sig-storage"
    driver = "docker.io/hetznercloud/hcloud-csi-driver"
    for component, key, name, tag in (
        ("csi-attacher", "controller.image.csiAttacher", f"{sig}/csi-attacher", "v4.11.0"),
        ("csi-resizer", "controller.image.csiResizer", f"{sig}/csi-resizer", "v2.1.0"),
        ("csi-provisioner", "controller.image.csiProvisioner", f"{sig}/csi-provisioner", "v6.2.0"),
        ("controller-liveness-probe", "controller.image.livenessProbe", f"{sig}/livenessprobe", "v2.18.0"),
        ("controller", "controller.image.hcloudCSIDriver", driver, "v2.22.1"),
        ("csi-node-driver-registrar", "node.image.csiNodeDriverRegistrar", f"{sig}/csi-node-driver-registrar",
         "v2.16.0"),
        ("node-liveness-probe", "node.image.livenessProbe", f"{sig}/livenessprobe", "v2.18.0"),
        ("node", "node.image.hcloudCSIDriver", driver, "v2.22.1"),
    ):  # fmt: skip
        got_tag = str(value(values, f"{key}.tag", tag)).replace("v{{ .Chart.Version }}", "v2.22.1")
        ref = (
            f"{value(values, f'{key}.name', name)}:{got_tag}"
            if got_tag
            else str(value(values, f"{key}.name", name))
        )
        images.append(Image(component, ref, f"{HCLOUD_CSI}/templates/_common_images.tpl"))
    return ChartFacts(
        uses=uses, references=references, creates=creates, storage_classes=classes, images=images
    )


# --- hcloud-cloud-controller-manager 1.35.0 (hetznercloud/hcloud-cloud-controller-manager, v1.35.0) --


def hcloud_ccm(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    # templates/deployment.yaml: env from values.env (and networking.network with networking.enabled)
    env = dict(value(values, "env", {}) or {})
    default_env = {
        "HCLOUD_TOKEN": {"valueFrom": {"secretKeyRef": {"name": "hcloud", "key": "token"}}},
        "ROBOT_USER": {
            "valueFrom": {"secretKeyRef": {"name": "hcloud", "key": "robot-user", "optional": True}}
        },
        "ROBOT_PASSWORD": {
            "valueFrom": {"secretKeyRef": {"name": "hcloud", "key": "robot-password", "optional": True}}
        },
    }
    merged = {**default_env, **{k: v for k, v in env.items() if v is not None}}
    if _on(values, "networking.enabled", False):
        merged["HCLOUD_NETWORK"] = value(
            values,
            "networking.network",
            {"valueFrom": {"secretKeyRef": {"name": "hcloud", "key": "network"}}},
        )
    references = []
    for variable, spec in merged.items():
        ref = value(spec, "valueFrom.secretKeyRef", None) if isinstance(spec, Mapping) else None
        if isinstance(ref, Mapping) and not ref.get("optional"):
            references.append(
                Ref(
                    "Secret", str(ref.get("name")), f"{HCLOUD_CCM}/templates/deployment.yaml (env {variable})"
                )
            )
    uses = []
    if _on(values, "monitoring.enabled", True) and _on(values, "monitoring.podMonitor.enabled", False):
        uses.append(Kind(PROMETHEUS_OPERATOR, "PodMonitor", f"{HCLOUD_CCM}/templates/podmonitor.yaml"))
    # "{{ image.repository }}:{{ tpl image.tag }}", tag default "v{{ $.Chart.Version }}"
    repository = value(values, "image.repository", "docker.io/hetznercloud/hcloud-cloud-controller-manager")
    tag = str(value(values, "image.tag", "v1.35.0")).replace("v{{ $.Chart.Version }}", "v1.35.0")
    images = [
        Image(
            "hcloud-cloud-controller-manager",
            f"{repository}:{tag}",
            f"{HCLOUD_CCM}/templates/deployment.yaml",
        )
    ]
    creates = [
        Ref(
            "ServiceAccount", "hcloud-cloud-controller-manager", f"{HCLOUD_CCM}/templates/serviceaccount.yaml"
        )
    ]
    return ChartFacts(uses=uses, references=references, images=images, creates=creates)


# --- local-path-provisioner 0.0.37 (rancher/local-path-provisioner, tag v0.0.37; OCI chart on ghcr.io) --


def local_path_provisioner(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    classes = []
    if _on(values, "storageClass.create", True):  # templates/storageclass.yaml
        classes.append(
            (
                str(value(values, "storageClass.name", "local-path")),
                _on(values, "storageClass.defaultClass", False),
            )
        )
    registry = value(values, "privateRegistry.registryUrl", None)
    prefix = f"{registry}/" if registry else ""
    images = [
        Image(
            "local-path-provisioner",
            f"{prefix}{value(values, 'image.repository', 'docker.io/rancher/local-path-provisioner')}:"
            f"{value(values, 'image.tag', 'v0.0.37')}",
            f"{LOCAL_PATH}/templates/deployment.yaml",
        ),
        Image(  # the helper pod that creates and removes each volume's folder on its node
            "helper-pod",
            f"{prefix}{value(values, 'helperImage.repository', 'docker.io/library/busybox')}:"
            f"{value(values, 'helperImage.tag', 'latest')}",
            f"{LOCAL_PATH}/templates/deployment.yaml (--helper-image)",
        ),
    ]
    creates = [
        Ref(
            "ConfigMap",
            str(value(values, "configmap.name", "local-path-config")),
            f"{LOCAL_PATH}/templates/configmap.yaml",
        ),
        Ref("ServiceAccount", "local-path-provisioner", f"{LOCAL_PATH}/templates/serviceaccount.yaml"),
    ]
    return ChartFacts(storage_classes=classes, images=images, creates=creates)


ChartRule = Callable[[Mapping[str, Any] | None, str], ChartFacts]
# --- cloudnative-pg 0.27.1 (cloudnative-pg/charts, tag cloudnative-pg-v0.27.1; appVersion 1.28.1) ----

CNPG_GROUP = "postgresql.cnpg.io"
# templates/crds/crds.yaml (rendered under crds.create, values.yaml default true): every kind it defines
CNPG_KINDS = (
    "Backup", "ClusterImageCatalog", "Cluster", "Database", "FailoverQuorum", "ImageCatalog", "Pooler",
    "Publication", "ScheduledBackup", "Subscription",
)  # fmt: skip


def cloudnative_pg(values: Mapping[str, Any] | None, release: str) -> ChartFacts:
    crds = []
    if _on(values, "crds.create", True):
        crds = [Kind(CNPG_GROUP, k, f"{CNPG}/templates/crds/crds.yaml") for k in CNPG_KINDS]
    uses = []
    if _on(values, "monitoring.podMonitorEnabled", False):
        uses.append(Kind(PROMETHEUS_OPERATOR, "PodMonitor", f"{CNPG}/templates/podmonitor.yaml"))
    # templates/deployment.yaml: "{{ image.repository }}:{{ image.tag | default .Chart.AppVersion }}"
    repository = value(values, "image.repository", "ghcr.io/cloudnative-pg/cloudnative-pg")
    tag = value(values, "image.tag", "") or "1.28.1"
    images = [Image("operator", f"{repository}:{tag}", f"{CNPG}/templates/deployment.yaml")]
    # _helpers.tpl cloudnative-pg.fullname: the release name when it contains the chart's name
    fullname = release if "cloudnative-pg" in release else f"{release}-cloudnative-pg"
    account = value(values, "serviceAccount.name", "") or fullname
    creates = [
        Ref("ServiceAccount", str(account), f"{CNPG}/templates/rbac.yaml"),
        Ref("ConfigMap", str(value(values, "monitoringQueriesConfigMap.name", "cnpg-default-monitoring")),
            f"{CNPG}/templates/monitoring-configmap.yaml"),
        # the webhook's certificate (an optional volume of the Deployment): the operator generates it
        Ref("Secret", "cnpg-webhook-cert", f"{CNPG}/templates/deployment.yaml (webhook-certificates)"),
    ]  # fmt: skip
    if _on(values, "config.create", True) and not _on(values, "config.secret", False):
        creates.append(
            Ref("ConfigMap", str(value(values, "config.name", "cnpg-controller-manager-config")),
                f"{CNPG}/templates/config.yaml")
        )  # fmt: skip
    return ChartFacts(crds=crds, uses=uses, images=images, creates=creates)


CHARTS: dict[tuple[str, str], ChartRule] = {
    ("keda", "2.17.2"): keda,
    ("openbao", "0.19.1"): openbao,
    ("gpu-operator", "v25.3.4"): gpu_operator,
    ("kube-prometheus-stack", "88.5.3"): kube_prometheus_stack,
    ("hcloud-csi", "2.22.1"): hcloud_csi,
    ("hcloud-cloud-controller-manager", "1.35.0"): hcloud_ccm,
    ("local-path-provisioner", "0.0.37"): local_path_provisioner,
    ("cloudnative-pg", "0.27.1"): cloudnative_pg,
}


# --- RKE2 (v1.33.5+rke2r1, the pinned minor) --------------------------------------------------
# Built into every RKE2 cluster before the platform layer runs (the Kubernetes provider depends on
# the bootstrap). No storage provisioner is packaged for a cluster without a cloud provider:
# charts/chart_versions.yaml lists CNIs, CoreDNS, ingress-nginx/traefik, metrics-server, the
# snapshot controller and its CRDs, runtime classes, and vSphere/Harvester CSI (only with those
# cloud providers); none of them is a StorageClass here, so RKE2 has no default StorageClass.
RKE2_SOURCE = f"{RKE2}/charts/chart_versions.yaml"
RKE2_CRDS = [
    # the helm-controller embedded in RKE2's supervisor (docs.rke2.io/add-ons/helm)
    Kind("helm.cattle.io", "HelmChart", "https://docs.rke2.io/add-ons/helm"),
    Kind("helm.cattle.io", "HelmChartConfig", "https://docs.rke2.io/add-ons/helm"),
    Kind("k3s.cattle.io", "Addon", "https://docs.rke2.io/add-ons/helm"),
    Kind("k3s.cattle.io", "ETCDSnapshotFile", "https://docs.rke2.io/datastore/backup_restore"),
    # rke2-snapshot-controller-crd 4.0.003
    Kind("snapshot.storage.k8s.io", "VolumeSnapshot", RKE2_SOURCE),
    Kind("snapshot.storage.k8s.io", "VolumeSnapshotClass", RKE2_SOURCE),
    Kind("snapshot.storage.k8s.io", "VolumeSnapshotContent", RKE2_SOURCE),
]
# packaged components deployed by default (no `disable:` in roles/rke2/templates/config.yaml.j2)
RKE2_COMPONENTS = {
    "rke2-canal": "CNI (default cni: canal)",
    "rke2-coredns": "cluster DNS (kube-system/kube-dns)",
    "rke2-ingress-nginx": "ingress controller (the default ingress-controller in v1.33)",
    "rke2-metrics-server": "resource metrics for the HorizontalPodAutoscaler",
    "rke2-snapshot-controller": "VolumeSnapshot controller (+ -crd)",
    "rke2-runtimeclasses": "RuntimeClasses, among them nvidia",
}
RKE2_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# IngressClasses RKE2's packaged charts create: rke2-ingress-nginx 4.12.600 (the chart_versions.yaml
# entry of v1.33.5+rke2r1; rancher/rke2-charts assets/rke2-ingress-nginx/rke2-ingress-nginx-4.12.600.tgz)
# renders templates/controller-ingressclass.yaml with controller.ingressClassResource.name (values.yaml:
# nginx, enabled: true); infra/k8s_platform/ingress.py's HelmChartConfig leaves both as they are
RKE2_INGRESS_CLASSES = {
    "nginx": "rke2-ingress-nginx 4.12.600 templates/controller-ingressclass.yaml "
    "(values.yaml controller.ingressClassResource.name)",
}
# in every namespace: the "default" ServiceAccount (ServiceAccount controller) and the
# "kube-root-ca.crt" ConfigMap (root CA publisher), both kube-controller-manager
RKE2_IN_EVERY_NAMESPACE = frozenset({("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")})
RKE2_STORAGE_CLASSES: list[tuple[str, bool]] = []

# API groups served by the Kubernetes API server itself (no CRD needed)
BUILTIN_GROUPS = frozenset(
    {
        "", "core", "apps", "batch", "autoscaling", "policy", "networking.k8s.io",
        "rbac.authorization.k8s.io", "storage.k8s.io", "apiextensions.k8s.io",
        "admissionregistration.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
        "discovery.k8s.io", "certificates.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io",
        "apiregistration.k8s.io", "resource.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
    }
)  # fmt: skip
