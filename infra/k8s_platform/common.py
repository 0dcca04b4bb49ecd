"""Names, labels and the restricted security context every platform workload shares, and the
two shapes of a platform component (one constructor each, not one per class)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pulumi

from infra.config import StackConfig

if TYPE_CHECKING:  # openbao.py imports this module
    from infra.k8s_platform.openbao import OpenBaoConfiguration

#: what a component's children wait for
Deps = list[pulumi.Resource]


class Component(pulumi.ComponentResource):
    """A component of the platform layer: a ComponentResource of type ``sovereign:platform:KIND``
    whose ``build`` makes its children (with ``parent=self``, after *depends_on*)."""

    KIND: ClassVar[str]

    def __init__(
        self, name: str, cfg: StackConfig, depends_on: Deps, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"sovereign:platform:{self.KIND}", name, None, opts)
        self.build(name, cfg, depends_on)

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        raise NotImplementedError


class OpenBaoComponent(pulumi.ComponentResource):
    """A component whose certificates come from OpenBao's PKI: also given OpenBao's configuration."""

    KIND: ClassVar[str]

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        openbao: OpenBaoConfiguration,
        depends_on: Deps,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"sovereign:platform:{self.KIND}", name, None, opts)
        self.build(name, cfg, openbao, depends_on)

    def build(self, name: str, cfg: StackConfig, openbao: OpenBaoConfiguration, depends_on: Deps) -> None:
        raise NotImplementedError


GATEWAY_NS = "sovereign-gateway"
INFERENCE_NS = "sovereign-inference"
OPENBAO_NS = "openbao"
GPU_NS = "gpu-operator"
KEDA_NS = "keda"
KUBE_SYSTEM = "kube-system"  # RKE2's; the cloud controller and the storage provisioners (cluster_services.py)
# RKE2's ingress controller pods in kube-system (rke2-ingress-nginx 4.12.600, templates/_helpers.tpl
# "ingress-nginx.selectorLabels" + component controller; ingress.py): the gateway's only HTTP client
INGRESS_CONTROLLER_PODS = {
    "app.kubernetes.io/name": "rke2-ingress-nginx",
    "app.kubernetes.io/component": "controller",
}
GPU_NODE_LABEL = "nvidia.com/gpu.present"  # set by the GPU operator on nodes with an NVIDIA GPU
# the GPU servers' taint (infra/hosts/inventory.py rke2_node_taints nvidia.com/gpu=present:NoSchedule)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
MEMORY_NS = "sovereign-memory"  # the gateway's memory store: a CloudNativePG Cluster (memory_store.py)
CNPG_NS = "cnpg-system"  # the CloudNativePG operator
UPGRADE_NS = "system-upgrade"  # the system-upgrade-controller and its upgrade Jobs (upgrades.py)
K8S_VERSION = "v1.33"  # Pod Security Standards version pinned to the RKE2 minor in use
GATEWAY_PORT = 8080
VLLM_PORT = 8000
POSTGRES_PORT = 5432
OPENBAO_PORT = 8200
NONROOT_UID = 10001
GATEWAY_APP = "gateway"  # Deployment, Service and ServiceAccount name
GATEWAY_OPENBAO_ROLE = "sovereign-gateway"  # its OpenBao Kubernetes-auth role
VLLM_TLS_DIR = "/etc/vllm-tls"
VLLM_SHARED_NAME = f"vllm.{INFERENCE_NS}.svc"  # in every vLLM certificate: the name Prometheus verifies
GATEWAY_UPSTREAM_TLS_DIR = "/etc/sovereign/upstream-tls"


def labels(cfg: StackConfig, name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "sovereign-llm",
        "app.kubernetes.io/managed-by": "pulumi",
        "sovereign-llm.io/residency": "eu",
        "sovereign-llm.io/data-classification": cfg.region.data_classification,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def pod_security() -> dict[str, Any]:
    """Pod-level settings that satisfy Pod Security "restricted"."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "fsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- how long a workload may take to start: Pulumi's customTimeouts and Helm's wait derive from it ---
# Kubernetes' probe defaults (core/v1 Probe): periodSeconds 10, failureThreshold 3, initialDelaySeconds 0
_PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "failureThreshold": 3}
# pulling an image from the in-boundary registry mirror (imagePullPolicy Always): an allowance, not a
# probe; vLLM's image is ~10 GB, the others are a few hundred MB
IMAGE_PULL_S = 300
VLLM_IMAGE_PULL_S = 900
# what Pulumi adds on top of a budget: the controllers' status updates reaching the API
STATUS_MARGIN_S = 60


def probe_budget_s(probe: dict[str, Any]) -> int:
    """Seconds a probe lets a container take before it acts: initialDelaySeconds +
    failureThreshold * periodSeconds (a startup or liveness probe then restarts the container)."""
    p = {**_PROBE_DEFAULTS, **probe}
    return int(p["initialDelaySeconds"]) + int(p["failureThreshold"]) * int(p["periodSeconds"])


def container_start_s(container: dict[str, Any]) -> int:
    """The longest a container may take to become Ready before kubelet gives up on it: its startup
    probe's budget (or, without one, its liveness probe's; or its readiness probe's), plus one
    readiness period for the first successful readiness check."""
    first = container.get("startupProbe") or container.get("livenessProbe") or container.get("readinessProbe")
    budget = probe_budget_s(first) if first else 0
    readiness = container.get("readinessProbe")
    if readiness is not None and first is not readiness:
        budget += int({**_PROBE_DEFAULTS, **readiness}["periodSeconds"])
    return budget


def pod_start_s(containers: list[dict[str, Any]], *, pull_s: int = IMAGE_PULL_S, init_s: int = 0) -> int:
    """One pod from scheduled to Ready: image pull, init containers (*init_s*), then the slowest
    container's start budget (containers start together)."""
    return pull_s + init_s + max((container_start_s(c) for c in containers), default=0)


def custom_timeouts(create_s: int, update_s: int | None = None) -> pulumi.CustomTimeouts:
    """Pulumi's customTimeouts from budgets in seconds (plus STATUS_MARGIN_S): Pulumi's default of
    10 minutes is shorter than several of this platform's workloads take to start."""
    update = create_s if update_s is None else update_s
    return pulumi.CustomTimeouts(
        create=f"{create_s + STATUS_MARGIN_S}s", update=f"{update + STATUS_MARGIN_S}s"
    )
