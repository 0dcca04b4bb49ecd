"""Alert rules as code: one PrometheusRule (monitoring.coreos.com/v1) in ``platform.monitoring_namespace``.

The Prometheus of kube-prometheus-stack selects every rule in the cluster (monitoring.py,
``ruleSelectorNilUsesHelmValues: false``). What pages, why and what to do first:
docs/operations.md; every alert links its runbook under docs/runbooks/.

**SLA burn rates** (Google SRE workbook, ch. 5 "Alerting on SLOs", multiwindow multi-burn-rate
table): a page when 2 % of the period's error budget burns within 1 h (checked over 1 h and 5 m)
or 5 % within 6 h (6 h and 30 m), a ticket when 10 % burns within 1 d (1 d and 2 h) or within 3 d
(3 d and 6 h). With a 30-day period those are the workbook's factors 14.4, 6, 3 and 1.

- error ratio per use case: ``sovereign_gateway_requests_total{status=~"5.."}`` of all its requests
  (gateway/app.py), less the 503 ``use_case_suspended`` answers an operator's kill switch causes
  (``sovereign_gateway_unavailable_total{code}``): a deliberate suspension spends no error budget;
- time to first token and inter-token latency per served model: vLLM's histograms
  ``vllm:time_to_first_token_seconds`` and ``vllm:inter_token_latency_seconds`` (label
  ``model_name``, the ``--served-model-name``); the gateway has no per-use-case TTFT series, so a
  model's target is the strictest of the use cases whose policy it serves (gateway/policies).

**The gateway's own state** (gateway/scrape_metrics.py, read at scrape time): its audit disk against
the reserve that refuses requests (``sovereign_gateway_audit_disk_free_bytes``, ``..._reserve_bytes``),
sealed audit segments the Object Lock archive lacks and the shipper's last complete round
(``platform.alerting.audit_ship_max_age_minutes``), and the expiry of the certificates it uses or
sees (label ``certificate``: ``client``, ``upstream-ca``, ``upstream-server``, ``ingress``).

**No patient data on a page**: every label and annotation key comes from ``LABELS`` and
``ANNOTATIONS``; annotation text is fixed here and may only template allowlisted labels
(``{{ $labels.use_case }}``); every alert expression aggregates ``by`` allowlisted labels only,
so no other label of a series (a path, a request id) reaches Alertmanager. ``check_rule`` enforces
it for every rule; the promtool tests assert each alert's exact labels.

``python -m infra.k8s_platform.alerts --write DIR`` writes each example stack's rule groups as
plain Prometheus rule files for ``promtool check rules`` (``make lint``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from gateway.errors import SovereignError
from gateway.policy import load_policies
from infra.config import SloTargetsConfig, StackConfig
from infra.k8s_platform.common import OPENBAO_NS, Component, Deps, labels

RULE_NAME = "sovereign-alerts"
SUSPENDED = "use_case_suspended"  # gateway/incident.py SUSPENDED_CODE: the kill switch's 503
# an audit disk with less than this many times the reserve free opens a ticket: the default
# reserve (8 MiB) times 10 leaves room for a whole default segment (64 MiB) before refusals
AUDIT_DISK_TICKET_FACTOR = 10
CERT_TICKET_DAYS = 14
CERT_PAGE_DAYS = 3
RUNBOOKS = "docs/runbooks"
# label keys an alert may carry: names of use cases, models, pods, nodes, GPUs and jobs (set by this
# program or by Kubernetes), never a value a request supplies
LABELS = frozenset(
    {
        "severity", "slo", "use_case", "model_name", "namespace", "pod", "node", "gpu", "Hostname",
        "cronjob",
        # the gateway's fixed names: client, upstream-ca, upstream-server, ingress (scrape_metrics.py)
        "certificate",
    }
)  # fmt: skip
ANNOTATIONS = frozenset({"summary", "description", "runbook_url"})
SEVERITIES = ("page", "ticket")
_TEMPLATE_RE = re.compile(r"\{\{(.*?)\}\}")
_ALLOWED_TEMPLATE_RE = re.compile(r"^ \$labels\.(?P<label>[A-Za-z_]+) $")
_BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_RUNBOOK_RE = re.compile(r"^docs/runbooks/[a-z0-9-]+\.md$")


class AlertRuleError(SovereignError, ValueError):
    """A rule that could carry free text to a page, or lacks its severity or runbook."""


@dataclass(frozen=True)
class BurnWindow:
    """One row of the workbook's table: share of the budget spent within ``long``."""

    severity: str
    long: str
    short: str
    budget_share: float
    long_hours: float
    for_: str

    def factor(self, slo_days: int) -> float:
        return round(self.budget_share * slo_days * 24 / self.long_hours, 4)


BURN_WINDOWS = (
    BurnWindow("page", "1h", "5m", 0.02, 1, "2m"),
    BurnWindow("page", "6h", "30m", 0.05, 6, "15m"),
    BurnWindow("ticket", "1d", "2h", 0.10, 24, "1h"),
    BurnWindow("ticket", "3d", "6h", 0.10, 72, "3h"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def runbook(name: str) -> str:
    return f"{RUNBOOKS}/{name}.md"


def check_rule(rule: dict[str, Any]) -> None:
    """Refuse an alert whose labels, annotations or aggregation are not from the allowlist."""
    if "record" in rule:
        return
    name = rule.get("alert", "?")
    extra = set(rule.get("labels", {})) - LABELS
    if extra:
        raise AlertRuleError(
            f"alert {name}: labels {sorted(extra)} are not in the allowlist {sorted(LABELS)}"
        )
    if rule.get("labels", {}).get("severity") not in SEVERITIES:
        raise AlertRuleError(f"alert {name}: labels.severity must be one of {SEVERITIES}")
    annotations = rule.get("annotations", {})
    extra = set(annotations) - ANNOTATIONS
    if extra:
        raise AlertRuleError(f"alert {name}: annotations {sorted(extra)} are not in the allowlist")
    if not _RUNBOOK_RE.match(annotations.get("runbook_url", "")):
        raise AlertRuleError(f"alert {name}: annotations.runbook_url must name a page under {RUNBOOKS}/")
    for key, text in annotations.items():
        for template in _TEMPLATE_RE.findall(text):
            allowed = _ALLOWED_TEMPLATE_RE.match(template)
            if not allowed or allowed["label"] not in LABELS:
                raise AlertRuleError(
                    f"alert {name}: annotations.{key} templates {{{{{template}}}}}; only "
                    "{{ $labels.<allowlisted label> }} may be templated (no series text on a page)"
                )
    expr = rule["expr"]
    groupings = _BY_RE.findall(expr)
    if not groupings and "absent(" not in expr:
        raise AlertRuleError(f"alert {name}: the expression must aggregate `by (...)` allowlisted labels")
    for grouping in groupings:
        keys = {k.strip() for k in grouping.split(",") if k.strip()}
        if "without" in expr or keys - LABELS:
            raise AlertRuleError(
                f"alert {name}: aggregates by {sorted(keys)}; only allowlisted labels {sorted(LABELS)} may "
                "reach a page (aggregate `by`, never `without`)"
            )


def _alert(
    name: str, expr: str, severity: str, for_: str, summary: str, description: str, book: str,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    rule = {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(extra_labels or {})},
        "annotations": {"summary": summary, "description": description, "runbook_url": runbook(book)},
    }
    check_rule(rule)
    return rule


def _le(bound: float) -> str:
    """A matcher for a bucket bound: Prometheus 3 normalises ``le="1.0"`` to ``"1"``, Prometheus 2 and
    prometheus_client write ``"1.0"``; both match."""
    text = f"{bound:g}"
    return f"le=~`{re.escape(text)}(\\.0)?`" if "." not in text and "e" not in text else f'le="{text}"'


def model_targets(cfg: StackConfig) -> dict[str, tuple[SloTargetsConfig, list[str]]]:
    """Per served model: the strictest targets of the use cases whose policy names it, and those use cases."""
    policies = load_policies()
    served: dict[str, list[str]] = {}
    for model in cfg.platform.models:
        aliases = {model.name, *model.aliases}
        served[model.name] = sorted(p.name for p in policies.values() if p.model in aliases)
    out: dict[str, tuple[SloTargetsConfig, list[str]]] = {}
    for model_name, use_cases in served.items():
        if not use_cases:
            continue
        targets = [cfg.platform.alerting.targets(u) for u in use_cases]
        strictest = SloTargetsConfig(
            ttft_seconds=min(t.ttft_seconds for t in targets),
            itl_seconds=min(t.itl_seconds for t in targets),
            latency_objective=max(t.latency_objective for t in targets),
            error_ratio=min(t.error_ratio for t in targets),
        )
        out[model_name] = (strictest, use_cases)
    return out


def use_cases() -> list[str]:
    return sorted(load_policies())


def recording_rules(cfg: StackConfig) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for w in WINDOWS:
        every = f"sum by (use_case) (rate(sovereign_gateway_requests_total[{w}]))"
        # 5xx less the kill switch's 503s (0 where a use case has none: `or` the zero vector)
        suspended = (
            f'sum by (use_case) (rate(sovereign_gateway_unavailable_total{{code="{SUSPENDED}"}}[{w}]))'
        )
        rules.append(
            {
                "record": f"use_case:sovereign_gateway_errors:ratio_rate{w}",
                "expr": "(\n"
                f'  sum by (use_case) (rate(sovereign_gateway_requests_total{{status=~"5.."}}[{w}]))\n'
                f"  - ({suspended} or {every} * 0)\n"
                f")\n/ {every}",
            }
        )
    for model_name, (targets, _) in model_targets(cfg).items():
        for sli, metric, bound in (
            ("ttft", "vllm:time_to_first_token_seconds", targets.ttft_seconds),
            ("itl", "vllm:inter_token_latency_seconds", targets.itl_seconds),
        ):
            sel = f'model_name="{model_name}"'
            for w in WINDOWS:
                rules.append(
                    {
                        "record": f"model_name:vllm_{sli}_slow:ratio_rate{w}",
                        "expr": "1 - (\n"
                        f"  sum by (model_name) (rate({metric}_bucket{{{sel},{_le(bound)}}}[{w}]))\n"
                        f"  / sum by (model_name) (rate({metric}_count{{{sel}}}[{w}]))\n)",
                        "labels": {"model_name": model_name},
                    }
                )
    return rules


def _burn_expr(
    record: str, by: str, subject: str, budget: float, windows: Iterable[BurnWindow], days: int
) -> str:
    parts = []
    for bw in windows:
        threshold = f"({bw.factor(days):g} * {budget:g})"
        parts.append(
            f"(\n  max by ({by}) ({record}{bw.long}{{{subject}}}) > {threshold}\n"
            f"  and\n  max by ({by}) ({record}{bw.short}{{{subject}}}) > {threshold}\n)"
        )
    return "\nor\n".join(parts)


def slo_alerts(cfg: StackConfig) -> list[dict[str, Any]]:
    alerting = cfg.platform.alerting
    days = alerting.slo_days
    alerts = []
    pace = {"page": "exhausts the budget within days", "ticket": "misses the SLO over the period"}
    for severity, speed in (("page", "Fast"), ("ticket", "Slow")):
        windows = [bw for bw in BURN_WINDOWS if bw.severity == severity]
        for_ = windows[0].for_
        for use_case in use_cases():
            t = alerting.targets(use_case)
            alerts.append(
                _alert(
                    f"ErrorBudgetBurn{speed}",
                    _burn_expr(
                        "use_case:sovereign_gateway_errors:ratio_rate",
                        "use_case",
                        f'use_case="{use_case}"',
                        t.error_ratio,
                        windows,
                        days,
                    ),
                    severity,
                    for_,
                    "{{ $labels.use_case }}: failed requests spend the error budget too fast",
                    f"5xx answers of use case {use_case} exceed {t.error_ratio:g} of requests (SLO over "
                    f"{days} days) at a burn rate that {pace[severity]}.",
                    "sla-burn-rate",
                    {"slo": "error_ratio", "use_case": use_case},
                )
            )
        for model_name, (t, served) in model_targets(cfg).items():
            budget = round(1 - t.latency_objective, 6)
            for sli, title, bound in (
                ("ttft", "time to first token", t.ttft_seconds),
                ("itl", "inter-token latency", t.itl_seconds),
            ):
                alerts.append(
                    _alert(
                        f"{'Ttft' if sli == 'ttft' else 'InterTokenLatency'}BudgetBurn{speed}",
                        _burn_expr(
                            f"model_name:vllm_{sli}_slow:ratio_rate",
                            "model_name",
                            f'model_name="{model_name}"',
                            budget,
                            windows,
                            days,
                        ),
                        severity,
                        for_,
                        "{{ $labels.model_name }}: "
                        f"{title} above {bound:g} s spends the latency budget too fast",
                        f"More than {budget:g} of requests to model {model_name} "
                        f"(use cases {', '.join(served)}) exceed {bound:g} s {title}, at a burn rate that "
                        f"{pace[severity]}.",
                        "sla-burn-rate",
                        {"slo": sli, "model_name": model_name},
                    )
                )
    return alerts


def component_alerts(cfg: StackConfig) -> list[dict[str, Any]]:
    alerting = cfg.platform.alerting
    bao = f'namespace="{OPENBAO_NS}"'
    return [
        # OpenBao telemetry (openbao.org/docs/internals/telemetry/metrics/core-system, .../audit)
        _alert(
            "OpenBaoSealed",
            f"max by (namespace, pod) (vault_core_unsealed{{{bao}}}) == 0",
            "page",
            "5m",
            "OpenBao member {{ $labels.pod }} is sealed",
            "A sealed member serves no keys; with the others sealed too the gateway fails closed (503).",
            "openbao-sealed",
        ),
        _alert(
            "OpenBaoNoLeader",
            f"(sum by (namespace) (vault_core_active{{{bao}}}) < 1)\nor\nabsent(vault_core_active{{{bao}}})",
            "page",
            "5m",
            "OpenBao has no active node",
            "No OpenBao member is active (Raft without a leader, or every member sealed or unscraped): "
            "no data keys, the gateway answers 503 key_unavailable once its cached keys expire.",
            "openbao-sealed",
        ),
        _alert(
            "OpenBaoAuditDeviceFailing",
            f"(sum by (namespace) (rate(vault_audit_log_request_failure{{{bao}}}[5m])) > 0)\nor\n"
            f"(sum by (namespace) (rate(vault_audit_log_response_failure{{{bao}}}[5m])) > 0)",
            "page",
            "0m",
            "OpenBao cannot write its audit log",
            "Every audit device failed for some requests: OpenBao refuses what it cannot audit.",
            "openbao-audit",
        ),
        # the gateway: every 503 by its code (gateway/app.py UNAVAILABLE_CODES); an operator's
        # suspension (use_case_suspended) is deliberate, not an outage, and never pages
        _alert(
            "GatewayUnavailableAnswers",
            f'sum by (use_case) (rate(sovereign_gateway_unavailable_total{{code!="{SUSPENDED}"}}[5m]))\n'
            "/ sum by (use_case) (rate(sovereign_gateway_requests_total[5m])) > 0.05",
            "page",
            "5m",
            "{{ $labels.use_case }}: more than 5 % of requests answered 503",
            "The gateway fails closed: key service unavailable (key_unavailable), no model upstream "
            "(model_unavailable), every pod full (gateway_busy), audit trail not writable "
            "(audit_unavailable) or pods shutting down. Nothing was forwarded. A use case suspended "
            "by the kill switch does not count.",
            "gateway-unavailable",
        ),
        _alert(
            "GatewayAuditWriteFailing",
            "sum by (namespace, pod) (increase(sovereign_gateway_audit_failures_total[5m])) > 0",
            "page",
            "0m",
            "Gateway pod {{ $labels.pod }} cannot write audit records",
            "Requests are refused with 503 audit_unavailable (or their record is missing): check the "
            "pod's audit volume and its free space against audit.min_free_bytes.",
            "gateway-unavailable",
        ),
        *audit_alerts(cfg),
        *certificate_alerts(),
        # vLLM (vllm/v1/metrics/loggers.py: vllm:num_requests_waiting, vllm:kv_cache_usage_perc)
        _alert(
            "VllmQueueDeep",
            f"sum by (model_name) (vllm:num_requests_waiting) > {alerting.queue_waiting_max}",
            "ticket",
            "10m",
            "{{ $labels.model_name }}: requests keep waiting for a GPU",
            f"More than {alerting.queue_waiting_max} requests wait for 10 minutes: autoscaling is at its "
            "maximum or cannot place a pod.",
            "vllm-saturation",
        ),
        _alert(
            "VllmKvCacheSaturated",
            "max by (model_name) (vllm:kv_cache_usage_perc) > 0.95",
            "ticket",
            "15m",
            "{{ $labels.model_name }}: KV cache above 95 % for 15 minutes",
            "Requests are preempted or queued for cache space; latency SLOs follow.",
            "vllm-saturation",
        ),
        # DCGM exporter (NVIDIA/dcgm-exporter etc/default-counters.csv)
        _alert(
            "GpuXidError",
            "max by (Hostname, gpu) (DCGM_FI_DEV_XID_ERRORS) > 0",
            "ticket",
            "0m",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported an XID error",
            "The driver reported an XID error (last value non-zero): the model on it may be down.",
            "gpu-health",
        ),
        _alert(
            "GpuEccDoubleBitErrors",
            "sum by (Hostname, gpu) (increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[15m])) > 0",
            "ticket",
            "0m",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has uncorrectable ECC errors",
            "Double-bit (uncorrectable) ECC errors: drain the GPU server and plan its replacement.",
            "gpu-health",
        ),
        _alert(
            "GpuTemperatureHigh",
            "max by (Hostname, gpu) (DCGM_FI_DEV_GPU_TEMP) > 85",
            "ticket",
            "10m",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} above 85 °C",
            "Sustained high temperature: the GPU throttles and latency rises.",
            "gpu-health",
        ),
        _alert(
            "GpuThermalThrottling",
            "sum by (Hostname, gpu) (rate(DCGM_FI_DEV_THERMAL_VIOLATION[10m])) > 0",
            "ticket",
            "10m",
            "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is throttled for temperature",
            "The GPU spends time throttled by thermal limits.",
            "gpu-health",
        ),
        # kube-state-metrics
        _alert(
            "NodeNotReady",
            'max by (node) (kube_node_status_condition{condition="Ready",status="true"}) == 0',
            "page",
            "5m",
            "Node {{ $labels.node }} is not ready",
            "A node has not been Ready for 5 minutes: its pods are being evicted; a GPU node takes its "
            "models with it.",
            "node-not-ready",
        ),
        _alert(
            "OpenBaoSnapshotOverdue",
            "time() - max by (namespace, cronjob) (\n"
            f'  kube_cronjob_status_last_successful_time{{{bao},cronjob="openbao-snapshot"}}\n'
            f") > {alerting.backup_max_age_hours * 3600}",
            "ticket",
            "10m",
            f"The last successful OpenBao snapshot is older than {alerting.backup_max_age_hours} hours",
            "The Raft snapshot CronJob has not succeeded in time: the only copy of the data keys has no "
            "fresh backup.",
            "backups",
        ),
        _alert(
            "OpenBaoSnapshotFailing",
            f'sum by (namespace) (kube_job_status_failed{{{bao},job_name=~"openbao-snapshot-.+"}}) > 0',
            "ticket",
            "0m",
            "An OpenBao snapshot Job failed",
            "A Raft snapshot Job of the CronJob openbao-snapshot failed.",
            "backups",
        ),
    ]


def audit_alerts(cfg: StackConfig) -> list[dict[str, Any]]:
    """The audit trail's disk and its shipping to the archive (gateway/scrape_metrics.py)."""
    max_age_s = cfg.platform.alerting.audit_ship_max_age_minutes * 60
    minutes = cfg.platform.alerting.audit_ship_max_age_minutes
    free = "min by (namespace, pod) (sovereign_gateway_audit_disk_free_bytes)"
    reserve = "max by (namespace, pod) (sovereign_gateway_audit_disk_reserve_bytes)"
    return [
        _alert(
            "GatewayAuditDiskLow",
            f"{free}\n< {AUDIT_DISK_TICKET_FACTOR} * {reserve}",
            "ticket",
            "10m",
            "Gateway pod {{ $labels.pod }}: audit disk close to its reserve",
            f"Less than {AUDIT_DISK_TICKET_FACTOR} times audit.min_free_bytes is free on the audit trail's "
            "disk; below the reserve the pod refuses every request (503 audit_unavailable).",
            "audit-storage",
        ),
        _alert(
            "GatewayAuditDiskReserveCrossed",
            f"{free}\n< {reserve}",
            "page",
            "1m",
            "Gateway pod {{ $labels.pod }}: audit disk below its reserve, requests refused",
            "Free space on the audit trail's disk is below audit.min_free_bytes: the pod answers every "
            "request 503 audit_unavailable until space is freed.",
            "audit-storage",
        ),
        _alert(
            "AuditSegmentsNotShipped",
            "max by (namespace, pod) (sovereign_gateway_audit_oldest_unshipped_segment_age_seconds)\n"
            f"> {max_age_s}",
            "ticket",
            "5m",
            "Gateway pod {{ $labels.pod }}: sealed audit segments not archived in time",
            f"A sealed audit segment has waited more than {minutes} minutes for the Object Lock archive "
            "(platform.alerting.audit_ship_max_age_minutes): the pod's only copy is on its volume.",
            "audit-storage",
        ),
        _alert(
            "AuditShipperStalled",
            "time() - max by (namespace, pod) (sovereign_gateway_audit_last_ship_timestamp_seconds)\n"
            f"> {max_age_s}",
            "ticket",
            "5m",
            "Gateway pod {{ $labels.pod }}: the audit-ship sidecar completes no round",
            f"No complete `sovereign audit ship` round for {minutes} minutes: the archive is "
            "unreachable, refuses the upload or the chain has a gap (the sidecar's log names it).",
            "audit-storage",
        ),
    ]


def certificate_alerts() -> list[dict[str, Any]]:
    """The gateway's mTLS certificates, the upstreams' and the front door's (scrape_metrics.py)."""
    left = (
        "min by (namespace, certificate) (sovereign_gateway_certificate_expiry_timestamp_seconds)\n- time()"
    )
    return [
        _alert(
            "CertificateExpiresSoon",
            f"{left} < {CERT_TICKET_DAYS * 86400} >= {CERT_PAGE_DAYS * 86400}",
            "ticket",
            "10m",
            "The {{ $labels.certificate }} certificate expires within " + f"{CERT_TICKET_DAYS} days",
            f"The certificate expires in less than {CERT_TICKET_DAYS} days and has not been renewed.",
            "certificate-expiry",
        ),
        _alert(
            "CertificateExpiryImminent",
            f"{left} < {CERT_PAGE_DAYS * 86400}",
            "page",
            "5m",
            "The {{ $labels.certificate }} certificate expires within " + f"{CERT_PAGE_DAYS} days",
            f"Less than {CERT_PAGE_DAYS} days left: once it expires the handshake fails and the gateway "
            "answers 502 (upstream) or clients cannot connect (ingress).",
            "certificate-expiry",
        ),
    ]


def rule_groups(cfg: StackConfig) -> list[dict[str, Any]]:
    # etcd's snapshots: metrics the monitoring release's kube-state-metrics makes from RKE2's
    # ETCDSnapshotFile objects (monitoring.py, which imports this module: imported here)
    from infra.k8s_platform.monitoring import etcd_snapshot_alerts

    return [
        {"name": "sovereign-slo-recording", "interval": "30s", "rules": recording_rules(cfg)},
        {"name": "sovereign-slo-burn", "rules": slo_alerts(cfg)},
        {"name": "sovereign-components", "rules": component_alerts(cfg) + etcd_snapshot_alerts(cfg)},
    ]


def alertmanager_config(cfg: StackConfig) -> dict[str, Any]:
    """Alertmanager's configuration (kube-prometheus-stack values ``alertmanager.config``): each
    receiver a webhook, routed by severity; grouped by alert name and the allowlisted labels, so a
    notification carries nothing else. Alertmanager runs in the monitoring stack (monitoring.py;
    docs/operations.md)."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    routes = []
    for receiver in cfg.platform.alerting.receivers:
        receivers.append(
            {"name": receiver.name, "webhook_configs": [{"url": receiver.url, "send_resolved": True}]}
        )
        matchers = [f'severity=~"{"|".join(receiver.severities)}"']
        routes.append({"receiver": receiver.name, "matchers": matchers, "continue": True})
    return {
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "severity", "use_case", "model_name"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": receivers,
    }


class AlertRules(Component):
    KIND = "AlertRules"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        self.rule = k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={
                "name": RULE_NAME,
                "namespace": cfg.platform.monitoring_namespace,
                "labels": labels(cfg, RULE_NAME, "monitoring"),
            },
            spec={"groups": rule_groups(cfg)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        self.register_outputs({})


def main(argv: list[str] | None = None) -> int:
    from infra.config import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, required=True, help="folder for <stack>.rules.yaml")
    parser.add_argument("--stacks", type=Path, default=Path("stacks"))
    args = parser.parse_args(argv)
    args.write.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.stacks.glob("Pulumi.*.yaml")):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        cfg = load(args.stacks, stack)
        out = args.write / f"{stack}.rules.yaml"
        out.write_text(yaml.safe_dump({"groups": rule_groups(cfg)}, sort_keys=False), encoding="utf-8")
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
