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
    accounts = [
        Ref("ServiceAccount", n, f"{KEDA}/templates/manager/serviceaccount.yaml") for n in ("keda-operator",)
    ]
    return ChartFacts(crds=crds, uses=uses, images=images, creates=accounts)


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
    return ChartFacts(crds=crds, uses=uses, images=images)


ChartRule = Callable[[Mapping[str, Any] | None, str], ChartFacts]
CHARTS: dict[tuple[str, str], ChartRule] = {
    ("keda", "2.17.2"): keda,
    ("openbao", "0.19.1"): openbao,
    ("gpu-operator", "v25.3.4"): gpu_operator,
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
