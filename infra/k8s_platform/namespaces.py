"""Namespaces with Pod Security Admission labels.

Every namespace enforces "restricted" except two: ``gpu-operator`` (the NVIDIA container
toolkit, device plugin and DCGM exporter need host access, privileged pods and host paths, to
expose the GPUs) and ``system-upgrade`` (the system-upgrade-controller's upgrade Jobs run
privileged in the host's namespaces to replace RKE2's binary and restart it:
rancher/system-upgrade-controller pkg/upgrade/job/job.go). Nothing else runs in them
(docs/platform.md). With ``platform.memory_store.enabled``, ``cnpg-system`` (the CloudNativePG
operator) and ``sovereign-memory`` (the store's PostgreSQL) enforce "restricted" too.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.k8s_platform.common import (
    CNPG_NS,
    GATEWAY_NS,
    GPU_NS,
    INFERENCE_NS,
    K8S_VERSION,
    KEDA_NS,
    MEMORY_NS,
    OPENBAO_NS,
    UPGRADE_NS,
    labels,
)

LEVELS = {
    GATEWAY_NS: "restricted",
    INFERENCE_NS: "restricted",
    OPENBAO_NS: "restricted",
    KEDA_NS: "restricted",
    GPU_NS: "privileged",
    UPGRADE_NS: "privileged",
}


class Namespaces(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:platform:Namespaces", name, None, opts)
        self.by_name: dict[str, k8s.core.v1.Namespace] = {}
        levels = {**LEVELS, cfg.platform.monitoring_namespace: "restricted"}  # + Prometheus
        if cfg.platform.memory_store.enabled:  # the CloudNativePG operator and the memory store
            levels |= {CNPG_NS: "restricted", MEMORY_NS: "restricted"}
        for ns, level in levels.items():
            pss = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "audit", "warn")} | {
                f"pod-security.kubernetes.io/{mode}-version": K8S_VERSION
                for mode in ("enforce", "audit", "warn")
            }
            self.by_name[ns] = k8s.core.v1.Namespace(
                f"{name}-{ns}",
                metadata={"name": ns, "labels": {**labels(cfg, ns, "namespace"), **pss}},
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"namespaces": list(self.by_name)})
