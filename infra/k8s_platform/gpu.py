"""GPU support (NVIDIA GPU operator) and queue-based autoscaling (KEDA), both as pinned Helm releases.

The operator runs with ``driver.enabled=false`` and ``toolkit.enabled=false``: the Ansible
role ``nvidia_gpu`` owns the kernel driver (pinned branch, persistence mode) and the pinned
container toolkit on the dedicated GPU servers, and RKE2's agent, finding
``nvidia-container-runtime`` on the host, adds the ``nvidia`` runtime to the containerd
configuration it generates (one owner for that file). The ``nvidia`` RuntimeClass (RKE2's
runtime-classes chart) is not the default runtime: only pods that ask for it (the vLLM pods)
get GPU access. The operator's validator is told where RKE2's containerd lives. The DCGM
exporter publishes per-GPU metrics: the list the alerts and dashboards need (DCGM_METRICS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import chart_sources, images
from infra.config import StackConfig
from infra.k8s_platform.common import (
    GPU_NS,
    IMAGE_PULL_S,
    KEDA_NS,
    Component,
    Deps,
    container_start_s,
    custom_timeouts,
)

GPU_OPERATOR_REPO = "https://helm.ngc.nvidia.com/nvidia"
KEDA_REPO = "https://kedacore.github.io/charts"
RKE2_CONTAINERD = {
    "CONTAINERD_CONFIG": "/var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl",
    "CONTAINERD_SOCKET": "/run/k3s/containerd/containerd.sock",
    "CONTAINERD_RUNTIME_CLASS": "nvidia",
    "CONTAINERD_SET_AS_DEFAULT": "false",
}


# The DCGM exporter's metrics: its image's default list (/etc/dcgm-exporter/dcp-metrics-included.csv,
# which the operator points DCGM_EXPORTER_COLLECTORS at: github.com/NVIDIA/gpu-operator@v25.3.4
# assets/state-dcgm-exporter/0900_daemonset.yaml) has DCGM_FI_DEV_THERMAL_VIOLATION and
# DCGM_FI_DEV_ECC_DBE_VOL_TOTAL commented out (github.com/NVIDIA/dcgm-exporter@4.3.1-4.4.0
# etc/dcp-metrics-included.csv lines 31 and 44), so the alerts and dashboards on them would never
# see a series. The operator mounts a list of our own instead (values dcgmExporter.config: the chart
# makes the ConfigMap, templates/dcgm_exporter_config.yaml, key dcgm-metrics.csv; the operator
# mounts it and sets DCGM_EXPORTER_COLLECTORS to it, controllers/object_controls.go). Format: DCGM
# field, Prometheus type, help (the same file's header); names as in that file.
DCGM_METRICS_CONFIGMAP = "sovereign-dcgm-metrics"
DCGM_METRICS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_SM_CLOCK": ("gauge", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEM_CLOCK": ("gauge", "Memory clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEMORY_TEMP": ("gauge", "Memory temperature (in C)."),
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W)."),
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %)."),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("gauge", "Memory utilization (in %)."),
    "DCGM_FI_DEV_XID_ERRORS": ("gauge", "Value of the last XID error encountered."),
    "DCGM_FI_DEV_THERMAL_VIOLATION": ("counter", "Throttling duration due to thermal constraints (in us)."),
    "DCGM_FI_DEV_POWER_VIOLATION": ("counter", "Throttling duration due to power constraints (in us)."),
    "DCGM_FI_DEV_FB_FREE": ("gauge", "Framebuffer memory free (in MiB)."),
    "DCGM_FI_DEV_FB_USED": ("gauge", "Framebuffer memory used (in MiB)."),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ("counter", "Total number of single-bit volatile ECC errors."),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("counter", "Total number of double-bit volatile ECC errors."),
}


def dcgm_metrics_csv() -> str:
    return "".join(f"{field}, {kind}, {text}\n" for field, (kind, text) in DCGM_METRICS.items())


def gpu_operator_values() -> dict[str, object]:
    return {
        "operator": {"defaultRuntime": "containerd"},
        "driver": {"enabled": False},  # Ansible (roles/nvidia_gpu) owns the driver ...
        "toolkit": {  # ... and the container toolkit; RKE2 configures its containerd for it
            "enabled": False,
            "env": [{"name": k, "value": v} for k, v in RKE2_CONTAINERD.items()],
        },
        "devicePlugin": {"enabled": True},
        "dcgmExporter": {
            "enabled": True,
            "serviceMonitor": {"enabled": True},
            "config": {"name": DCGM_METRICS_CONFIGMAP, "create": True, "data": dcgm_metrics_csv()},
        },
        "nfd": {"enabled": True},
        "migManager": {"enabled": False},
    }


@dataclass(frozen=True)
class ChartWait:
    """What Helm's wait (``atomic`` implies it) waits for in a chart at one version: the probes of
    each workload it checks, read from the chart's templates and values at that version. The
    release's timeout is the slowest of them plus an image pull; a chart upgrade re-reads them
    (tests/platform/test_timeouts.py fails while the version here and the pinned one differ)."""

    chart: str
    version: str
    source: str
    probes: dict[str, dict[str, Any]]  # workload -> its container's probes (Kubernetes field names)

    def budget_s(self) -> int:
        return IMAGE_PULL_S + max(container_start_s(c) for c in self.probes.values())


# github.com/NVIDIA/gpu-operator at v25.3.4, deployments/gpu-operator/
GPU_OPERATOR_WAIT = ChartWait(
    "gpu-operator",
    "v25.3.4",
    "github.com/NVIDIA/gpu-operator@v25.3.4 deployments/gpu-operator/templates/operator.yaml and "
    "charts/node-feature-discovery/values.yaml (master, worker; nfd-gc has no probe)",
    {
        # templates/operator.yaml: fixed in the template
        "gpu-operator": {
            "livenessProbe": {"initialDelaySeconds": 15, "periodSeconds": 20},
            "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 10},
        },
        # node-feature-discovery v0.17.3 values.yaml: master.startupProbe failureThreshold 30 (period
        # default 10): five minutes, alone as long as Helm's default timeout
        "nfd-master": {"startupProbe": {"failureThreshold": 30}, "readinessProbe": {"failureThreshold": 10}},
        "nfd-worker": {
            "livenessProbe": {"initialDelaySeconds": 10},
            "readinessProbe": {"initialDelaySeconds": 5, "failureThreshold": 10},
        },
    },
)
# github.com/kedacore/charts at v2.17.2, keda/values.yaml
KEDA_WAIT = ChartWait(
    "keda",
    "2.17.2",
    "github.com/kedacore/charts@v2.17.2 keda/values.yaml (operator, metricsServer, webhooks)",
    {
        "keda-operator": {
            "livenessProbe": {"initialDelaySeconds": 25, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"initialDelaySeconds": 20, "periodSeconds": 3, "failureThreshold": 3},
        },
        "keda-operator-metrics-apiserver": {
            "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 3, "failureThreshold": 3},
        },
        "keda-admission-webhooks": {
            "livenessProbe": {"initialDelaySeconds": 25, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"initialDelaySeconds": 20, "periodSeconds": 3, "failureThreshold": 3},
        },
    },
)


def pinned_chart(
    parent: pulumi.Resource,
    resource_name: str,
    cfg: StackConfig,
    *,
    chart: str,
    version: str,
    repo: str,
    namespace: str,
    values: dict[str, Any],
    depends_on: list[pulumi.Resource],
    wait_s: int,
) -> k8s.helm.v3.Release:
    """A Helm release at a pinned chart version, installed atomically (rolled back on failure),
    from the stack's EU registry mirror by digest (infra/chart_sources.py); *repo* is the vendor's
    repository, where the chart is mirrored from.

    ``atomic`` makes Helm wait until the release's workloads are ready, for ``timeout`` seconds
    (pulumi-kubernetes' default: 300): *wait_s*, the chart's own start budget (ChartWait)."""
    reference, repository = chart_sources.PinnedChart(chart, version, repo, chart).reference(cfg)
    return k8s.helm.v3.Release(
        resource_name,
        name=chart,
        chart=reference,
        version=version,
        namespace=namespace,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repository) if repository else None,
        values=values,
        atomic=True,
        timeout=wait_s,
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=depends_on, custom_timeouts=custom_timeouts(wait_s)
        ),
    )


class GpuSupport(Component):
    KIND = "GpuSupport"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        version = cfg.platform.gpu_operator_version
        self.release = pinned_chart(
            self, f"{name}-gpu-operator", cfg, chart="gpu-operator", version=version,
            repo=GPU_OPERATOR_REPO, namespace=GPU_NS,
            values=images.chart_values(cfg, "gpu-operator", cfg.platform.gpu_operator_version,
                                       gpu_operator_values()),
            depends_on=depends_on, wait_s=GPU_OPERATOR_WAIT.budget_s(),
        )  # fmt: skip
        self.register_outputs({})


class Autoscaling(Component):
    KIND = "Autoscaling"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        values = {"prometheus": {"operator": {"enabled": True, "serviceMonitor": {"enabled": True}}}}
        self.release = pinned_chart(
            self, f"{name}-keda", cfg, chart="keda", version=cfg.platform.keda_version, repo=KEDA_REPO,
            namespace=KEDA_NS, values=images.chart_values(cfg, "keda", cfg.platform.keda_version, values),
            depends_on=depends_on, wait_s=KEDA_WAIT.budget_s(),
        )  # fmt: skip
        self.register_outputs({})
