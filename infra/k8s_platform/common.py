"""Names, labels and the restricted security context every platform workload shares."""

from __future__ import annotations

from typing import Any

from infra.config import StackConfig

GATEWAY_NS = "sovereign-gateway"
INFERENCE_NS = "sovereign-inference"
OPENBAO_NS = "openbao"
GPU_NS = "gpu-operator"
KEDA_NS = "keda"
UPGRADE_NS = "system-upgrade"  # the system-upgrade-controller and its upgrade Jobs (upgrades.py)
K8S_VERSION = "v1.33"  # Pod Security Standards version pinned to the RKE2 minor in use
GATEWAY_PORT = 8080
VLLM_PORT = 8000
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
