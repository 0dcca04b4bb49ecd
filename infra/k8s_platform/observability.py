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
from infra.k8s_platform.common import (
    GATEWAY_NS,
    INFERENCE_NS,
    OPENBAO_NS,
    VLLM_SHARED_NAME,
    Deps,
    OpenBaoComponent,
    labels,
)
from infra.k8s_platform.openbao import OpenBaoConfiguration, helm_values, mtls_secret

# the chart's headless Service (templates/server-headless-service.yaml, label openbao-internal):
# every member, sealed ones included (publishNotReadyAddresses), once each; selecting by name
# alone would match the openbao, -active and -standby Services too and scrape members twice
OPENBAO_SCRAPED = {"app.kubernetes.io/name": "openbao", "openbao-internal": "true"}


def openbao_port_name(tls_disabled: bool = False) -> str:
    """The name chart 0.19.1 gives port 8200 on its Services: the scheme ("openbao.scheme")."""
    return "http" if tls_disabled else "https"


def openbao_tls_disabled(cfg: StackConfig) -> bool:
    values: dict[str, Any] = helm_values(cfg)
    return bool(values["global"]["tlsDisable"])


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


class Observability(OpenBaoComponent):
    KIND = "Observability"

    def build(self, name: str, cfg: StackConfig, openbao: OpenBaoConfiguration, depends_on: Deps) -> None:
        metrics = {"port": "http", "path": "/metrics"}
        # vLLM requires client certificates: Prometheus scrapes with its own, from OpenBao's PKI
        self.scrape_tls, _ = mtls_secret(
            self, f"{name}-vllm-scrape-tls", cfg, openbao, role="metrics-client",
            common_name=f"prometheus.{cfg.platform.monitoring_namespace}.svc", namespace=INFERENCE_NS,
            secret_name="vllm-metrics-client",
        )  # fmt: skip
        vllm_metrics = {
            **metrics,
            "scheme": "https",
            "tlsConfig": {
                "ca": {"secret": {"name": "vllm-metrics-client", "key": "ca.crt"}},
                "cert": {"secret": {"name": "vllm-metrics-client", "key": "tls.crt"}},
                "keySecret": {"name": "vllm-metrics-client", "key": "tls.key"},
                "serverName": VLLM_SHARED_NAME,
            },
        }
        openbao_tls = {
            "ca": {"secret": {"name": "openbao-tls", "key": "ca.crt"}},
            "serverName": f"openbao.{OPENBAO_NS}.svc",
        }
        openbao_metrics = {
            # chart 0.19.1 names the Services' 8200 port after its scheme ("openbao.scheme" in
            # templates/_helpers.tpl: "https" unless global.tlsDisable), and TLS is on
            "port": openbao_port_name(openbao_tls_disabled(cfg)),
            "path": "/v1/sys/metrics",
            "params": {"format": ["prometheus"]},
            "scheme": "https",
            "tlsConfig": openbao_tls,
        }
        targets = (
            ("gateway", GATEWAY_NS, {"app.kubernetes.io/name": "gateway"}, metrics),
            ("vllm", INFERENCE_NS, {"app.kubernetes.io/component": "inference"}, vllm_metrics),
            ("openbao", OPENBAO_NS, OPENBAO_SCRAPED, openbao_metrics),
        )
        self.monitors = [
            _monitor(self, name, cfg, target, ns, match, endpoint, depends_on)
            for target, ns, match, endpoint in targets
        ]
        self.register_outputs({})
