"""Prometheus scraping of the gateway, vLLM and OpenBao (prometheus-operator ServiceMonitors).

The Prometheus itself (and its operator, which owns the ServiceMonitor CRD) is the cluster's
monitoring stack in ``platform.monitoring_namespace``; the SLA-relevant series are listed in
docs/platform.md.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.platform.common import GATEWAY_NS, INFERENCE_NS, OPENBAO_NS, labels


def _monitor(
    parent: pulumi.Resource,
    prefix: str,
    cfg: StackConfig,
    name: str,
    namespace: str,
    match: dict[str, str],
    endpoint: dict[str, Any],
    deps: list[pulumi.Resource],
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        f"{prefix}-{name}",
        api_version="monitoring.coreos.com/v1",
        kind="ServiceMonitor",
        metadata={"name": name, "namespace": namespace, "labels": labels(cfg, name, "monitoring")},
        spec={"selector": {"matchLabels": match}, "endpoints": [{"interval": "15s", **endpoint}]},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=deps),
    )


class Observability(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:Observability", name, None, opts)
        metrics = {"port": "http", "path": "/metrics"}
        openbao_tls = {
            "ca": {"secret": {"name": "openbao-tls", "key": "ca.crt"}},
            "serverName": f"openbao.{OPENBAO_NS}.svc",
        }
        openbao_metrics = {
            "port": "http",
            "path": "/v1/sys/metrics",
            "params": {"format": ["prometheus"]},
            "scheme": "https",
            "tlsConfig": openbao_tls,
        }
        targets = (
            ("gateway", GATEWAY_NS, {"app.kubernetes.io/name": "gateway"}, metrics),
            ("vllm", INFERENCE_NS, {"app.kubernetes.io/component": "inference"}, metrics),
            ("openbao", OPENBAO_NS, {"app.kubernetes.io/name": "openbao"}, openbao_metrics),
        )
        self.monitors = [
            _monitor(self, name, cfg, target, ns, match, endpoint, depends_on)
            for target, ns, match, endpoint in targets
        ]
        self.register_outputs({})
