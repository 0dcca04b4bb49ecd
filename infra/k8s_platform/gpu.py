"""GPU support (NVIDIA GPU operator) and queue-based autoscaling (KEDA), both as pinned Helm releases.

The operator runs with ``driver.enabled=false`` and ``toolkit.enabled=false``: the Ansible
role ``nvidia_gpu`` owns the kernel driver (pinned branch, persistence mode) and the pinned
container toolkit on the dedicated GPU servers, and RKE2's agent, finding
``nvidia-container-runtime`` on the host, adds the ``nvidia`` runtime to the containerd
configuration it generates (one owner for that file). The ``nvidia`` RuntimeClass (RKE2's
runtime-classes chart) is not the default runtime: only pods that ask for it (the vLLM pods)
get GPU access. The operator's validator is told where RKE2's containerd lives. The DCGM
exporter publishes per-GPU metrics.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.k8s_platform.common import GPU_NS, KEDA_NS

GPU_OPERATOR_REPO = "https://helm.ngc.nvidia.com/nvidia"
KEDA_REPO = "https://kedacore.github.io/charts"
RKE2_CONTAINERD = {
    "CONTAINERD_CONFIG": "/var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl",
    "CONTAINERD_SOCKET": "/run/k3s/containerd/containerd.sock",
    "CONTAINERD_RUNTIME_CLASS": "nvidia",
    "CONTAINERD_SET_AS_DEFAULT": "false",
}


def gpu_operator_values() -> dict[str, object]:
    return {
        "operator": {"defaultRuntime": "containerd"},
        "driver": {"enabled": False},  # Ansible (roles/nvidia_gpu) owns the driver ...
        "toolkit": {  # ... and the container toolkit; RKE2 configures its containerd for it
            "enabled": False,
            "env": [{"name": k, "value": v} for k, v in RKE2_CONTAINERD.items()],
        },
        "devicePlugin": {"enabled": True},
        "dcgmExporter": {"enabled": True, "serviceMonitor": {"enabled": True}},
        "nfd": {"enabled": True},
        "migManager": {"enabled": False},
    }


def pinned_chart(
    parent: pulumi.Resource,
    resource_name: str,
    *,
    chart: str,
    version: str,
    repo: str,
    namespace: str,
    values: dict[str, Any],
    depends_on: list[pulumi.Resource],
) -> k8s.helm.v3.Release:
    """A Helm release at a pinned chart version, installed atomically (rolled back on failure)."""
    return k8s.helm.v3.Release(
        resource_name,
        name=chart,
        chart=chart,
        version=version,
        namespace=namespace,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo),
        values=values,
        atomic=True,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )


class GpuSupport(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:GpuSupport", name, None, opts)
        self.release = pinned_chart(
            self, f"{name}-gpu-operator", chart="gpu-operator", version=cfg.platform.gpu_operator_version,
            repo=GPU_OPERATOR_REPO, namespace=GPU_NS, values=gpu_operator_values(), depends_on=depends_on,
        )  # fmt: skip
        self.register_outputs({})


class Autoscaling(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:Autoscaling", name, None, opts)
        values = {"prometheus": {"operator": {"enabled": True, "serviceMonitor": {"enabled": True}}}}
        self.release = pinned_chart(
            self, f"{name}-keda", chart="keda", version=cfg.platform.keda_version, repo=KEDA_REPO,
            namespace=KEDA_NS, values=values, depends_on=depends_on,
        )  # fmt: skip
        self.register_outputs({})
