"""Default-deny NetworkPolicies and the few flows the data path needs.

- inference (vLLM): ingress only from the gateway (and Prometheus on the metrics port);
  no egress at all, not even DNS. The weights are fetched by a separate Job whose pods may
  reach object storage; the vLLM pods only read the verified copy.
- gateway: ingress from the ingress controller and Prometheus; egress only to inference,
  OpenBao and DNS — plus, where the stack has an audit archive, HTTPS for the pod's audit-ship
  sidecar to the addresses of the declared destination(s) serving endpoints.object_storage, and
  nowhere else (the gateway process itself refuses any connection outside its egress allowlist:
  gateway/egress.py).
- openbao: ingress from the gateway, Prometheus and its Raft peers; egress to its peers,
  DNS and the Kubernetes API (TokenReview for Kubernetes auth). Where the stack has an Object Lock
  bucket, the Raft snapshot CronJob's pods reach OpenBao's API, DNS and HTTPS to the declared
  destinations serving the bucket's endpoint and the copy's (storage.openbao_snapshot_copy), and
  OpenBao admits them on its API port.
- keda (chart 2.17.2): every pod reaches the Kubernetes API (the chart's own Cilium policies,
  templates/*/ciliumnetworkpolicy.yaml, allow ``kube-apiserver`` egress to all three) and DNS;
  the API server reaches the metrics apiserver (APIService v1beta1.external.metrics.k8s.io ->
  Service port 443 -> container 6443, templates/metrics-server/apiservice.yaml, service.yaml) and
  the admission webhooks (ValidatingWebhookConfiguration -> Service 443 -> container 9443,
  templates/webhooks/validatingconfiguration.yaml, service.yaml); the metrics apiserver reaches
  the operator's gRPC port 9666 (``--metrics-service-address=keda-operator.keda.svc…:9666``,
  templates/metrics-server/deployment.yaml); the operator queries Prometheus for the ScaledObjects'
  trigger (inference.py, port 9090) and is scraped on 8080 (prometheus.operator.port, its
  ServiceMonitor).
- gpu-operator (v25.3.4): every pod (operator, node-feature-discovery master/worker/gc, GPU feature
  discovery, device plugin, validators, DCGM exporter) is a client of the Kubernetes API and
  nothing else; Prometheus scrapes the DCGM exporter on 9400 (assets/state-dcgm-exporter
  0900_daemonset.yaml, 0700_service_monitor.yaml). node-feature-discovery 0.17 talks to the
  master through NodeFeature objects, not gRPC. No DNS: client-go reaches the API by the
  ``kubernetes`` Service's address from KUBERNETES_SERVICE_HOST.
- monitoring (kube-prometheus-stack 88.5.3): Prometheus scrapes each ServiceMonitor's namespace
  on its port only (gateway 8080, vLLM 8000, OpenBao 8200, KEDA's operator 8080, the DCGM
  exporter 9400, itself 9090/8080, the operator 8080, Alertmanager 9093/8080, kube-state-metrics
  8080, Grafana 3000), sends alerts to Alertmanager on 9093, reads the targets from the Kubernetes
  API (kubernetes_sd) and is queried by KEDA's operator and Grafana on 9090; the operator is a
  client of the Kubernetes API; both resolve names (DNS). Alertmanager reaches its webhook
  receivers (``receiver_egress``: an address or a cluster namespace where the URL names one, else
  the declared destination's addresses) and DNS, nothing else; kube-state-metrics the Kubernetes
  API only; Grafana Prometheus on 9090, the Kubernetes API (its dashboards and datasources sidecars) and DNS.
- memory store (platform.memory_store; memory_store.py): the CloudNativePG instances in
  ``sovereign-memory`` admit the gateway on 5432, the operator on its status port 8000 and each
  other on 5432; they reach each other, the Kubernetes API, DNS and the declared destination of the
  backup bucket's endpoint over HTTPS. The operator in ``cnpg-system`` reaches the API and the
  instances' status port, and admits the API server's webhook calls on 9443. The gateway's egress
  gains the store's 5432.
- system-upgrade: the controller is a client of the Kubernetes API only (v0.16.3, no metrics
  endpoint); its upgrade Jobs run with hostNetwork (pkg/upgrade/job/job.go), which no
  NetworkPolicy governs.

Public addresses (issue #23): no rule reaches 0.0.0.0/0. A NetworkPolicy matches addresses, not
names, so every public endpoint a pod reaches is declared in the stack's ``egress.destinations``
with its addresses, and each rule names those addresses only (infra/egress.py ``pod_flows``, the
one table the rules, the bastion's NAT and the evidence's data-flow map are built from).

The Kubernetes API: pods dial the ``kubernetes`` Service (RKE2's service-cidr default
10.43.0.0/16, its first address, port 443), which Canal's Calico policy evaluates after the DNAT to
the servers' addresses on 6443; both are allowed. The API server's own connections (webhooks,
aggregated APIs) come from the servers' addresses, or from a server's flannel VXLAN address in the
pod network (10.42.0.0/16, RKE2's cluster-cidr default) when the pod runs on another node.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import egress
from infra.config import StackConfig
from infra.k8s_platform.common import (
    CNPG_NS,
    GATEWAY_NS,
    GATEWAY_PORT,
    GPU_NS,
    INFERENCE_NS,
    INGRESS_CONTROLLER_PODS,
    KEDA_NS,
    KUBE_SYSTEM,
    MEMORY_NS,
    OPENBAO_NS,
    OPENBAO_PORT,
    POSTGRES_PORT,
    UPGRADE_NS,
    VLLM_PORT,
    Component,
    Deps,
    labels,
)
from infra.k8s_platform.memory_store import (
    CLUSTER,
    CLUSTER_LABEL,
    INSTANCE_STATUS_PORT,
    OPERATOR_APP,
    OPERATOR_WEBHOOK_PORT,
)
from infra.k8s_platform.monitoring import (
    ALERTMANAGER_POD,
    ALERTMANAGER_PORT,
    ALERTMANAGER_RELOADER_PORT,
    GRAFANA_POD,
    GRAFANA_PORT,
    KSM_POD,
    KSM_PORT,
    OPERATOR_POD,
    OPERATOR_PORT,
    PROMETHEUS_POD,
    PROMETHEUS_PORT,  # prometheus-operated (inference.py's ScaledObject trigger)
    RELOADER_PORT,
    receiver_endpoints,
)
from infra.policy.rules import EGRESS_ANNOTATION
from infra.residency import CLUSTER_LOCAL_SUFFIXES, match_endpoint

DNS_EGRESS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


# RKE2 defaults (docs.rke2.io/reference/server_config: cluster-cidr, service-cidr); the roles set neither
RKE2_CLUSTER_CIDR = "10.42.0.0/16"
KUBERNETES_SERVICE_IP = "10.43.0.1"  # the first address of service-cidr 10.43.0.0/16
KEDA_METRICS_APISERVER_PORT = 6443  # keda values.yaml service.portHttpsTarget
KEDA_WEBHOOK_PORT = 9443  # keda templates/webhooks/deployment.yaml webhooks.port | default 9443
KEDA_OPERATOR_GRPC_PORT = 9666  # keda templates/manager/service.yaml metricsservice
KEDA_OPERATOR_METRICS_PORT = 8080  # keda values.yaml prometheus.operator.port
DCGM_EXPORTER_PORT = 9400  # gpu-operator assets/state-dcgm-exporter/0900_daemonset.yaml


def api_server_egress(cfg: StackConfig) -> list[dict[str, Any]]:
    """To the Kubernetes API: the ``kubernetes`` Service and the servers' addresses on 6443."""
    servers = [
        {"ipBlock": {"cidr": f"{cfg.network.control_plane_ip(i)}/32"}} for i in range(cfg.control_plane.count)
    ]
    return [
        {
            "to": [{"ipBlock": {"cidr": f"{KUBERNETES_SERVICE_IP}/32"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        },
        {"to": servers, "ports": [{"protocol": "TCP", "port": 6443}]},
    ]


def from_api_server(cfg: StackConfig) -> list[dict[str, Any]]:
    """Peers of the API server's own connections: the servers, and the pod network (a server's
    flannel VXLAN address when the target pod runs on another node)."""
    servers = [
        {"ipBlock": {"cidr": f"{cfg.network.control_plane_ip(i)}/32"}} for i in range(cfg.control_plane.count)
    ]
    return [*servers, {"ipBlock": {"cidr": RKE2_CLUSTER_CIDR}}]


def receiver_egress(cfg: StackConfig) -> list[dict[str, Any]]:
    """Alertmanager to its webhook receivers (``platform.alerting.receivers``, EU endpoints by config
    validation). A NetworkPolicy matches addresses, not host names, so per receiver URL:

    - an IP address (a private one; config.py admits no other literal): that address, on the URL's
      port (or the scheme's, 443/80);
    - a cluster-local name ``<service>.<namespace>.svc[.cluster.local]``: every pod of that namespace,
      on any port (the policy sees the pod's port after the Service's DNAT, which the URL does not
      name);
    - any other host name (on the EU allowlist or a reviewed ``residency.extra_hosts`` entry): the
      addresses of the ``egress.destinations`` entry serving it, on the URL's port only
      (infra/egress.py); config validation refuses a receiver host no destination serves.
    """
    rules: list[dict[str, Any]] = []
    for _name, host, port in receiver_endpoints(cfg):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        labels = host.split(".")
        rule: dict[str, Any] | None
        if ip is not None:
            rule = {"to": [{"ipBlock": {"cidr": f"{ip}/{ip.max_prefixlen}"}}], "ports": _tcp(port)}
        elif host.endswith(CLUSTER_LOCAL_SUFFIXES) and labels.index("svc") >= 2:
            rule = {"to": [_ns(labels[labels.index("svc") - 1])]}
        else:
            cidrs = sorted({c for d in cfg.egress.serving(host) for c in d.cidrs})
            rule = {"to": [{"ipBlock": {"cidr": c}} for c in cidrs], "ports": _tcp(port)} if cidrs else None
        if rule is not None and rule not in rules:
            rules.append(rule)
    return rules


def _destinations_of(cfg: StackConfig, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The declared destinations covering the public ipBlocks of *rules*, each with its residency
    (the allowlist entry or the reviewed residency.extra_hosts entry that admits its host)."""
    blocks = [
        ipaddress.ip_network(peer["ipBlock"]["cidr"])
        for rule in rules
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    private = [ipaddress.ip_network(n) for n in egress.PRIVATE_RANGES]
    public = [b for b in blocks if not any(b.version == p.version and b.subnet_of(p) for p in private)]  # type: ignore[arg-type]
    extra = cfg.residency.entries()
    out = []
    for dest in cfg.egress.destinations:
        nets = [ipaddress.ip_network(c) for c in dest.cidrs]
        if not any(b.version == n.version and b.subnet_of(n) for b in public for n in nets):  # type: ignore[arg-type]
            continue
        entry = match_endpoint(dest.host, extra)
        out.append(
            {
                "name": dest.name,
                "host": dest.host,
                "cidrs": list(dest.cidrs),
                "jurisdiction": entry.jurisdiction if entry else "",
                "operator": entry.operator if entry else "",
            }
        )
    return out


def memory_store_pods() -> dict[str, Any]:
    """The memory store's pods (every pod of the CloudNativePG Cluster carries cnpg.io/cluster)."""
    return {**_ns(MEMORY_NS), "podSelector": {"matchLabels": {CLUSTER_LABEL: CLUSTER}}}


def _app(name: str) -> dict[str, Any]:
    return {"matchLabels": {"app": name}}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def _ns(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _from(namespace: str, app: str | None = None) -> dict[str, Any]:
    peer = _ns(namespace)
    if app:
        peer["podSelector"] = {"matchLabels": {"app.kubernetes.io/name": app}}
    return peer


class NetworkPolicies(Component):
    KIND = "NetworkPolicies"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        self._cfg, self._name, self._deps = cfg, name, depends_on
        monitoring = cfg.platform.monitoring_namespace
        self.policies: list[k8s.networking.v1.NetworkPolicy] = []
        store = cfg.platform.memory_store.enabled
        for ns in (GATEWAY_NS, INFERENCE_NS, OPENBAO_NS, KEDA_NS, GPU_NS, UPGRADE_NS, monitoring,
                   *((CNPG_NS, MEMORY_NS) if store else ())):  # fmt: skip
            self._policy(ns, "default-deny", {}, ["Ingress", "Egress"])
        self._operators(cfg)
        self._monitoring(cfg)
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
        # the weights Job: DNS and the declared object storage over HTTPS, nothing in-cluster
        self._policy(
            INFERENCE_NS,
            "weights-fetch-egress",
            {"matchLabels": {"app.kubernetes.io/component": "weights-fetch"}},
            ["Egress"],
            egress=[DNS_EGRESS, *egress.policy_rules(cfg, INFERENCE_NS, "weights-fetch-egress")],
        )
        self._policy(
            GATEWAY_NS,
            "gateway-flows",
            {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
            ["Ingress", "Egress"],
            ingress=[
                {
                    # the ingress controller's pods only (RKE2's rke2-ingress-nginx, ingress.py), not
                    # every pod of kube-system
                    "from": [
                        {**_ns(KUBE_SYSTEM), "podSelector": {"matchLabels": dict(INGRESS_CONTROLLER_PODS)}},
                        _from(monitoring),
                    ],
                    "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                }
            ],
            egress=[
                {"to": [_from(INFERENCE_NS)], "ports": [{"protocol": "TCP", "port": VLLM_PORT}]},
                {"to": [_from(OPENBAO_NS, "openbao")], "ports": [{"protocol": "TCP", "port": OPENBAO_PORT}]},
                # the memory store's PostgreSQL (its primary's Service memory-rw), where the stack has it
                *([{"to": [memory_store_pods()], "ports": _tcp(POSTGRES_PORT)}] if store else []),
                DNS_EGRESS,
            ],
        )
        if cfg.storage.audit_archive is not None:
            # the audit-ship sidecar: sealed audit segments to the Object Lock bucket over HTTPS, to
            # the addresses of the declared destination serving endpoints.object_storage only
            self._policy(
                GATEWAY_NS,
                "gateway-audit-ship",
                {"matchLabels": {"app.kubernetes.io/name": "gateway"}},
                ["Egress"],
                egress=egress.policy_rules(cfg, GATEWAY_NS, "gateway-audit-ship"),
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
        if cfg.storage.audit_archive is not None:
            # the Raft snapshot CronJob (openbao.py SnapshotSchedule): OpenBao's API, DNS and the
            # Object Lock bucket over HTTPS; OpenBao admits it on its API port
            snapshot = {"matchLabels": {"app.kubernetes.io/name": "openbao-snapshot"}}
            self._policy(
                OPENBAO_NS,
                "openbao-snapshot-egress",
                snapshot,
                ["Egress"],
                egress=[
                    {"to": [_from(OPENBAO_NS, "openbao")], "ports": _tcp(OPENBAO_PORT)},
                    DNS_EGRESS,
                    *egress.policy_rules(cfg, OPENBAO_NS, "openbao-snapshot-egress"),
                ],
            )
            self._policy(
                OPENBAO_NS,
                "openbao-from-snapshot",
                {"matchLabels": {"app.kubernetes.io/name": "openbao"}},
                ["Ingress"],
                ingress=[{"from": [_from(OPENBAO_NS, "openbao-snapshot")], "ports": _tcp(OPENBAO_PORT)}],
            )
        if store:
            self._memory_store(cfg)
        self.register_outputs({"count": len(self.policies)})

    def _memory_store(self, cfg: StackConfig) -> None:
        """CloudNativePG (memory_store.py): the operator is a client of the Kubernetes API and of each
        instance's status endpoint (8000), and serves the API server's admission webhooks (9443); the
        instances admit the gateway on 5432, the operator on 8000 and each other on 5432 (streaming
        replication, the join Jobs' pg_basebackup), and reach each other, the API (the instance
        manager watches its Cluster), DNS (the Services' names) and the backup bucket's declared
        addresses over HTTPS. Nothing else: no other pod of the cluster reaches PostgreSQL."""
        api = api_server_egress(cfg)
        store = memory_store_pods()
        operator = {**_ns(CNPG_NS), "podSelector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_APP}}}
        self._policy(
            CNPG_NS,
            "cnpg-operator",
            {"matchLabels": {"app.kubernetes.io/name": OPERATOR_APP}},
            ["Ingress", "Egress"],
            ingress=[{"from": from_api_server(cfg), "ports": _tcp(OPERATOR_WEBHOOK_PORT)}],
            egress=[*api, {"to": [store], "ports": _tcp(INSTANCE_STATUS_PORT)}],
        )
        peers = {"podSelector": {"matchLabels": {CLUSTER_LABEL: CLUSTER}}}
        self._policy(
            MEMORY_NS,
            egress.MEMORY_STORE_POLICY,
            {"matchLabels": {CLUSTER_LABEL: CLUSTER}},
            ["Ingress", "Egress"],
            ingress=[
                {"from": [_from(GATEWAY_NS, "gateway")], "ports": _tcp(POSTGRES_PORT)},
                {"from": [operator], "ports": _tcp(INSTANCE_STATUS_PORT)},
                {"from": [peers], "ports": _tcp(POSTGRES_PORT)},
            ],
            egress=[
                {"to": [peers], "ports": _tcp(POSTGRES_PORT)},
                *api,
                DNS_EGRESS,
                *egress.policy_rules(cfg, MEMORY_NS, egress.MEMORY_STORE_POLICY),
            ],
        )

    def _operators(self, cfg: StackConfig) -> None:
        """KEDA, the GPU operator and the system-upgrade-controller: exactly their flows."""
        monitoring = cfg.platform.monitoring_namespace
        api = api_server_egress(cfg)

        self._policy(KEDA_NS, "keda-api-dns", {}, ["Egress"], egress=[*api, DNS_EGRESS])
        self._policy(
            KEDA_NS,
            "keda-operator",
            _app("keda-operator"),
            ["Ingress", "Egress"],
            ingress=[
                {"from": [{"podSelector": _app("keda-operator-metrics-apiserver")}],
                 "ports": _tcp(KEDA_OPERATOR_GRPC_PORT)},
                {"from": [_from(monitoring)], "ports": _tcp(KEDA_OPERATOR_METRICS_PORT)},
            ],
            egress=[{"to": [_from(monitoring)], "ports": _tcp(PROMETHEUS_PORT)}],
        )  # fmt: skip
        self._policy(
            KEDA_NS,
            "keda-metrics-apiserver",
            _app("keda-operator-metrics-apiserver"),
            ["Ingress", "Egress"],
            ingress=[{"from": from_api_server(cfg), "ports": _tcp(KEDA_METRICS_APISERVER_PORT)}],
            egress=[{"to": [{"podSelector": _app("keda-operator")}], "ports": _tcp(KEDA_OPERATOR_GRPC_PORT)}],
        )
        self._policy(
            KEDA_NS,
            "keda-admission-webhooks",
            _app("keda-admission-webhooks"),
            ["Ingress"],
            ingress=[{"from": from_api_server(cfg), "ports": _tcp(KEDA_WEBHOOK_PORT)}],
        )
        self._policy(GPU_NS, "gpu-operator-api", {}, ["Egress"], egress=api)
        self._policy(
            GPU_NS,
            "dcgm-exporter-scrape",
            _app("nvidia-dcgm-exporter"),
            ["Ingress"],
            ingress=[{"from": [_from(monitoring)], "ports": _tcp(DCGM_EXPORTER_PORT)}],
        )
        self._policy(
            UPGRADE_NS,
            "system-upgrade-controller-api",
            {"matchLabels": {"upgrade.cattle.io/controller": "system-upgrade-controller"}},
            ["Egress"],
            egress=api,
        )

    def _monitoring(self, cfg: StackConfig) -> None:
        """kube-prometheus-stack (monitoring.py): Prometheus scrapes every ServiceMonitor's port and
        sends alerts to Alertmanager; Alertmanager reaches its receivers; kube-state-metrics and the
        operator are clients of the Kubernetes API only; Grafana queries Prometheus, and its sidecars
        watch ConfigMaps through the API."""
        ns = cfg.platform.monitoring_namespace
        api = api_server_egress(cfg)
        prometheus = {"podSelector": {"matchLabels": PROMETHEUS_POD}}
        operator = {"podSelector": {"matchLabels": OPERATOR_POD}}
        alertmanager = {"podSelector": {"matchLabels": ALERTMANAGER_POD}}
        ksm = {"podSelector": {"matchLabels": KSM_POD}}
        grafana = {"podSelector": {"matchLabels": GRAFANA_POD}}
        alertmanager_ports = _tcp(ALERTMANAGER_PORT) + _tcp(ALERTMANAGER_RELOADER_PORT)
        # one rule per ServiceMonitor target: observability.py (gateway, vLLM, OpenBao), KEDA's
        # operator (gpu.py, prometheus.operator.serviceMonitor), the GPU operator's DCGM exporter
        # (dcgmExporter.serviceMonitor), and the chart's own (Prometheus and its config reloader:
        # templates/prometheus/servicemonitor.yaml; the operator: prometheus-operator/servicemonitor.yaml;
        # Alertmanager and its reloader: alertmanager/servicemonitor.yaml; kube-state-metrics' "http"
        # endpoint: its templates/servicemonitor.yaml; Grafana's http-web -> 3000: its
        # templates/servicemonitor.yaml). Alertmanager's web port is also where alerts go
        # (templates/prometheus/prometheus.yaml alerting.alertmanagers).
        scrape = [
            {"to": [_from(GATEWAY_NS, "gateway")], "ports": _tcp(GATEWAY_PORT)},
            {"to": [_from(INFERENCE_NS)], "ports": _tcp(VLLM_PORT)},
            {"to": [_from(OPENBAO_NS, "openbao")], "ports": _tcp(OPENBAO_PORT)},
            {"to": [{**_ns(KEDA_NS), "podSelector": _app("keda-operator")}],
             "ports": _tcp(KEDA_OPERATOR_METRICS_PORT)},
            {"to": [{**_ns(GPU_NS), "podSelector": _app("nvidia-dcgm-exporter")}],
             "ports": _tcp(DCGM_EXPORTER_PORT)},
            {"to": [prometheus], "ports": _tcp(PROMETHEUS_PORT) + _tcp(RELOADER_PORT)},
            {"to": [operator], "ports": _tcp(OPERATOR_PORT)},
            {"to": [alertmanager], "ports": alertmanager_ports},
            {"to": [ksm], "ports": _tcp(KSM_PORT)},
            {"to": [grafana], "ports": _tcp(GRAFANA_PORT)},
        ]  # fmt: skip
        self._policy(
            ns,
            "prometheus",
            {"matchLabels": PROMETHEUS_POD},
            ["Ingress", "Egress"],
            ingress=[
                # KEDA's ScaledObject trigger (inference.py), the self-scrape, Grafana's data source
                # (http://<release>-prometheus.<namespace>:9090/,
                # templates/grafana/configmaps-datasources.yaml)
                {"from": [{**_ns(KEDA_NS), "podSelector": _app("keda-operator")}],
                 "ports": _tcp(PROMETHEUS_PORT)},
                {"from": [prometheus], "ports": _tcp(PROMETHEUS_PORT) + _tcp(RELOADER_PORT)},
                {"from": [grafana], "ports": _tcp(PROMETHEUS_PORT)},
            ],
            # kubernetes_sd_configs: the targets' Endpoints from the API server
            egress=[*scrape, *api, DNS_EGRESS],
        )  # fmt: skip
        self._policy(
            ns,
            "prometheus-operator",
            {"matchLabels": OPERATOR_POD},
            ["Ingress", "Egress"],
            ingress=[{"from": [prometheus], "ports": _tcp(OPERATOR_PORT)}],
            egress=[*api, DNS_EGRESS],
        )
        # Alertmanager: alerts and the scrape from Prometheus; out to the receivers (receiver_egress)
        # and DNS for their names. One replica: no cluster mesh (9094) between peers. It calls no API.
        self._policy(
            ns,
            "alertmanager",
            {"matchLabels": ALERTMANAGER_POD},
            ["Ingress", "Egress"],
            ingress=[{"from": [prometheus], "ports": alertmanager_ports}],
            egress=[*receiver_egress(cfg), DNS_EGRESS],
        )
        # kube-state-metrics: scraped by Prometheus; lists and watches the API (in-cluster config: the
        # kubernetes Service's address from KUBERNETES_SERVICE_HOST, no DNS)
        self._policy(
            ns,
            "kube-state-metrics",
            {"matchLabels": KSM_POD},
            ["Ingress", "Egress"],
            ingress=[{"from": [prometheus], "ports": _tcp(KSM_PORT)}],
            egress=api,
        )
        # Grafana: scraped by Prometheus; queries Prometheus by its Service name (DNS); its sidecars
        # watch this namespace's ConfigMaps through the API and reload Grafana on localhost. Nothing
        # else: no grafana.com, no plugin catalogue, no gravatar (and grafana.ini turns them off).
        # The service owner reaches the UI with `kubectl port-forward`, which enters the pod's own
        # network namespace, not through a Service.
        self._policy(
            ns,
            "grafana",
            {"matchLabels": GRAFANA_POD},
            ["Ingress", "Egress"],
            ingress=[{"from": [prometheus], "ports": _tcp(GRAFANA_PORT)}],
            egress=[{"to": [prometheus], "ports": _tcp(PROMETHEUS_PORT)}, *api, DNS_EGRESS],
        )

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
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": labels(self._cfg, name, "network-policy"),
        }
        if carried := _destinations_of(self._cfg, egress or []):
            # the declared destinations its public ipBlocks are for, with their residency: what the
            # policy rule egress-declared-only holds each public address against (infra/policy/rules.py)
            metadata["annotations"] = {EGRESS_ANNOTATION: json.dumps(carried, sort_keys=True)}
        self.policies.append(
            k8s.networking.v1.NetworkPolicy(
                f"{self._name}-{namespace}-{name}",
                metadata=metadata,
                spec=spec,
                opts=pulumi.ResourceOptions(parent=self, depends_on=self._deps),
            )
        )
