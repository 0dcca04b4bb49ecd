"""Default-deny NetworkPolicies and the few flows the data path needs.

- inference (vLLM): ingress only from the gateway (and Prometheus on the metrics port);
  no egress at all, not even DNS. The weights are fetched by a separate Job whose pods may
  reach object storage; the vLLM pods only read the verified copy.
- gateway: ingress from the ingress controller and Prometheus; egress only to inference,
  OpenBao and DNS — plus, where the stack has an audit archive, HTTPS to public addresses for
  the pod's audit-ship sidecar (the gateway process itself refuses any connection outside its
  egress allowlist: gateway/egress.py).
- openbao: ingress from the gateway, Prometheus and its Raft peers; egress to its peers,
  DNS and the Kubernetes API (TokenReview for Kubernetes auth).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.k8s_platform.common import (
    GATEWAY_NS,
    GATEWAY_PORT,
    INFERENCE_NS,
    OPENBAO_NS,
    OPENBAO_PORT,
    VLLM_PORT,
    labels,
)

DNS_EGRESS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
# object storage (public EU endpoints) over HTTPS, nothing in the cluster or the private network
PUBLIC_HTTPS = {
    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}],
    "ports": [{"protocol": "TCP", "port": 443}],
}


def _ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _from(namespace: str, app: str | None = None) -> dict[str, Any]:
    peer = _ns(namespace)
    if app:
        peer["podSelector"] = {"matchLabels": {"app.kubernetes.io/name": app}}
    return peer


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:platform:NetworkPolicies", name, None, opts)
        self._cfg, self._name, self._deps = cfg, name, depends_on
        monitoring = cfg.platform.monitoring_namespace
        self.policies: list[k8s.networking.v1.NetworkPolicy] = []
        for ns in (GATEWAY_NS, INFERENCE_NS, OPENBAO_NS):
            self._policy(ns, "default-deny", {}, ["Ingress", "Egress"])
        # inference: from the gateway only (and the metrics scrape); no egress rule at all
        self._policy(
            INFERENCE_NS,
            "vllm-from-gateway",
            {"matchLabels": {"app.kubernetes.io/component": "inference"}},
            ["Ingress"],
            ingress=[
                {"from": [_from(GATEWAY_NS, "gateway")], "ports": [{"protocol": "TCP", "port": VLLM_PORT}]},
                {"from": [_from(monitoring)], "ports": [{"protocol": "TCP", "port": VLLM_PORT}]},
            ],
        )
        # the weights Job: object storage over HTTPS (public EU endpoints) and DNS, nothing in-cluster
        self._policy(
            INFERENCE_NS,
            "weights-fetch-egress",
            {"matchLabels": {"app.kubernetes.io/component": "weights-fetch"}},
            ["Egress"],
            egress=[DNS_EGRESS, PUBLIC_HTTPS],
        )
        self._policy(
            GATEWAY_NS,
            "gateway-flows",
            {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
            ["Ingress", "Egress"],
            ingress=[
                {
                    "from": [_from("kube-system"), _from(monitoring)],
                    "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                }
            ],
            egress=[
                {"to": [_from(INFERENCE_NS)], "ports": [{"protocol": "TCP", "port": VLLM_PORT}]},
                {"to": [_from(OPENBAO_NS, "openbao")], "ports": [{"protocol": "TCP", "port": OPENBAO_PORT}]},
                DNS_EGRESS,
            ],
        )
        if cfg.storage.audit_archive is not None:
            # the audit-ship sidecar: sealed audit segments to the Object Lock bucket over HTTPS
            self._policy(
                GATEWAY_NS,
                "gateway-audit-ship",
                {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
                ["Egress"],
                egress=[PUBLIC_HTTPS],
            )
        raft = [{"protocol": "TCP", "port": OPENBAO_PORT}, {"protocol": "TCP", "port": 8201}]
        self._policy(
            OPENBAO_NS,
            "openbao-flows",
            {"matchLabels": {"app.kubernetes.io/name": "openbao"}},
            ["Ingress", "Egress"],
            ingress=[
                {
                    "from": [_from(GATEWAY_NS, "gateway")],
                    "ports": [{"protocol": "TCP", "port": OPENBAO_PORT}],
                },
                {"from": [_from(monitoring)], "ports": [{"protocol": "TCP", "port": OPENBAO_PORT}]},
                {"from": [_from(OPENBAO_NS, "openbao")], "ports": raft},
            ],
            egress=[
                {"to": [_from(OPENBAO_NS, "openbao")], "ports": raft},
                {
                    "to": [{"ipBlock": {"cidr": str(cfg.network.nodes_subnet)}}],
                    "ports": [{"protocol": "TCP", "port": 6443}],
                },
                DNS_EGRESS,
            ],
        )
        self.register_outputs({"count": len(self.policies)})

    def _policy(
        self,
        namespace: str,
        name: str,
        pod_selector: dict[str, Any],
        types: list[str],
        ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None,
    ) -> None:
        spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": types}
        if ingress is not None:
            spec["ingress"] = ingress
        if egress is not None:
            spec["egress"] = egress
        self.policies.append(
            k8s.networking.v1.NetworkPolicy(
                f"{self._name}-{namespace}-{name}",
                metadata={
                    "name": name,
                    "namespace": namespace,
                    "labels": labels(self._cfg, name, "network-policy"),
                },
                spec=spec,
                opts=pulumi.ResourceOptions(parent=self, depends_on=self._deps),
            )
        )
