"""Dashboards as code for the service owner: Grafana dashboards, one ConfigMap each in
``platform.monitoring_namespace``, loaded by the Grafana dashboards sidecar of kube-prometheus-stack
(monitoring.py: ``GRAFANA_DASHBOARD_LABEL``; every panel names ``GRAFANA_DATASOURCE_UID``).

- **SLA per use case** (template variable ``use_case``): request rate, error ratio against the SLO
  target, time to first token and inter-token latency percentiles against the targets
  (``platform.alerting``, ``AlertingConfig.targets``), the share of slow requests the latency
  burn-rate alerts count, and the error budget left over ``slo_days``. The ratios are the recording
  rules of alerts.py, read by name, never derived again.
- **GPU fleet**: DCGM per GPU (utilisation, memory, temperature, XID, ECC, thermal throttling) and
  vLLM per served model (queue depth, running requests, KV-cache usage, generated tokens).
- **The boundary**: the gateway's requests by status and use case, refusals by admission code,
  upstream errors by kind, refused egress and connections, requests in flight, audit write failures;
  key health (OpenBao sealed, leader, audit device, snapshot age).

Targets that differ per use case (SLO error ratio, TTFT, ITL) are constant series built here from the
stack configuration (``label_replace(vector(t), "use_case", ...)``), joined ``on (use_case)``, so a
panel draws the selected use case's own target. vLLM's latency series carry ``model_name``, not the use
case: a use case's model comes from its gateway policy (alerts.py ``model_targets``), the same mapping as
a constant series.

**No patient data**: panels show aggregates only. Every expression aggregates ``by`` labels from
``LABELS`` (alerts.py's allowlist plus the gateway's own bounded labels: HTTP status, admission code,
error kind, refusal reason, request stage, histogram bucket), and a legend templates only those;
``check_dashboard`` enforces both. Every metric a panel reads is the gateway's (gateway/app.py, server.py,
connections.py, egress.py), a recording rule of alerts.py, or one of ``THIRD_PARTY_METRICS`` with
its source.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from gateway.errors import SovereignError
from infra.config import StackConfig
from infra.k8s_platform import alerts
from infra.k8s_platform.common import OPENBAO_NS, Component, Deps, labels
from infra.k8s_platform.monitoring import GRAFANA_DASHBOARD_LABEL, GRAFANA_DATASOURCE_UID

# Grafana's dashboard JSON model ("classic"). kube-prometheus-stack 88.5.3 (charts/kube-prometheus-stack/
# Chart.yaml) deploys the grafana chart 12.11.1 (grafana-community/helm-charts charts/grafana/Chart.yaml),
# appVersion 13.2.0. schemaVersion 42 is LATEST_VERSION of grafana/grafana
# apps/dashboard/pkg/migration/schemaversion/migrations.go as read from the Grafana 12 line; later
# sources add a v43 migration (formatTime transformations, which these dashboards do not use). The
# 13.2.0 tag itself could not be read here: 42 is at or below its latest, and Grafana migrates a
# dashboard of a lower version when it loads it (never the other way), so 42 loads unchanged.
SCHEMA_VERSION = 42
DATASOURCE = {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID}
GRID_COLUMNS = 24
FOLDER_TAG = "sovereign-llm"
# label keys a panel may aggregate by and a legend may show: alerts.py's allowlist (names of use
# cases, models, pods, nodes, GPUs, jobs) and the gateway's bounded label values (HTTP status codes,
# admission codes, error kinds, refusal reasons, request stages, collector generations: fixed in
# gateway code), the histogram bucket
LABELS = alerts.LABELS | {
    "status",
    "code",
    "kind",
    "reason",
    "le",
    "category",
    "action",
    "stage",
    "stream",
    "generation",
}
# Grafana's own variables, substituted by Grafana itself
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range"})
# thresholds of component alerts in alerts.py (literals there; test_dashboards.py checks they agree)
GPU_TEMPERATURE_ALERT_C = 85
KV_CACHE_ALERT = 0.95
UNAVAILABLE_ALERT = 0.05

# metrics of third-party exporters a panel may read, with where each is defined
_DCGM = "NVIDIA/dcgm-exporter etc/default-counters.csv (GPU operator v25.3.4's DCGM exporter)"
_VLLM = "vllm-project/vllm v0.11.0 vllm/v1/metrics/loggers.py (PrometheusStatLogger)"
_BAO = "OpenBao telemetry, openbao.org/docs/internals/telemetry/metrics/"
THIRD_PARTY_METRICS: dict[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": _DCGM,
    "DCGM_FI_DEV_FB_USED": _DCGM,
    "DCGM_FI_DEV_FB_FREE": _DCGM,
    "DCGM_FI_DEV_GPU_TEMP": _DCGM,
    "DCGM_FI_DEV_XID_ERRORS": _DCGM,
    # these two are commented out in that default CSV: exported once the GPU operator's DCGM exporter
    # runs with a counters CSV that lists them (the alerts GpuEccDoubleBitErrors and GpuThermalThrottling
    # of alerts.py read them too)
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": _DCGM + ", commented out there",
    "DCGM_FI_DEV_THERMAL_VIOLATION": _DCGM + ", commented out there",
    "vllm:num_requests_waiting": _VLLM + " gauge_scheduler_waiting",
    "vllm:num_requests_running": _VLLM + " gauge_scheduler_running",
    "vllm:kv_cache_usage_perc": _VLLM + " gauge_kv_cache_usage",
    "vllm:generation_tokens_total": _VLLM + " counter_generation_tokens (vllm:generation_tokens)",
    "vllm:time_to_first_token_seconds_bucket": _VLLM + " histogram_time_to_first_token",
    "vllm:inter_token_latency_seconds_bucket": _VLLM + " histogram_inter_token_latency",
    "vault_core_unsealed": _BAO + "core-system",
    "vault_core_active": _BAO + "core-system",
    "vault_audit_log_request_failure": _BAO + "audit",
    "vault_audit_log_response_failure": _BAO + "audit",
    "kube_cronjob_status_last_successful_time": (
        "kubernetes/kube-state-metrics docs/metrics/workload/cronjob-metrics.md"
    ),
}


class DashboardError(SovereignError, ValueError):
    """A dashboard that is not valid for Grafana or could show more than aggregates."""


# --- panels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    height: int = 8
    threshold: float | None = None  # drawn as a red line (timeseries) or colour step (stat)
    extra: dict[str, Any] = field(default_factory=dict)


def _q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


LabelSet = tuple[tuple[str, str], ...]


def _constant(values: dict[LabelSet, float]) -> str:
    """Constant series, one per label set: ``label_replace(vector(v), ...)`` joined with ``or``."""
    parts = []
    for label_set, value in sorted(values.items()):
        expr = f"vector({value:.12g})"
        for key, text in label_set:
            expr = f'label_replace({expr}, "{key}", "{text}", "", "")'
        parts.append(expr)
    return "\n  or ".join(parts) if parts else "vector(0) < 0"


# the selected use case as a series ({use_case="<selected>"} 1), to keep only its rows of a constant
_SELECTED = 'label_replace(vector(1), "use_case", "$use_case", "", "")'


def _selected(expr: str) -> str:
    return f"(\n  {expr}\n) and on (use_case) {_SELECTED}"


def use_case_targets(cfg: StackConfig) -> dict[str, dict[str, float]]:
    """Per use case: its SLO targets (error ratio, TTFT and ITL bounds, latency budget)."""
    alerting = cfg.platform.alerting
    out = {}
    for use_case in alerts.use_cases():
        t = alerting.targets(use_case)
        out[use_case] = {
            "error_ratio": t.error_ratio,
            "ttft": t.ttft_seconds,
            "itl": t.itl_seconds,
            "latency_budget": round(1 - t.latency_objective, 6),
        }
    return out


def served_by(cfg: StackConfig) -> dict[str, str]:
    """Use case -> the served model (``model_name``) its policy names (alerts.py ``model_targets``)."""
    return {u: model for model, (_, served) in alerts.model_targets(cfg).items() for u in served}


def _target(cfg: StackConfig, key: str) -> str:
    values: dict[LabelSet, float] = {(("use_case", u),): t[key] for u, t in use_case_targets(cfg).items()}
    return _selected(_constant(values))


def _serving(cfg: StackConfig) -> str:
    """{use_case, model_name} 1 for the selected use case's model."""
    values: dict[LabelSet, float] = {
        (("use_case", u), ("model_name", m)): 1.0 for u, m in served_by(cfg).items()
    }
    return _selected(_constant(values))


def _rate(metric: str, selector: str = "", window: str = "$__rate_interval") -> str:
    return f"rate({metric}{{{selector}}}[{window}])" if selector else f"rate({metric}[{window}])"


def _latency_quantile(cfg: StackConfig, metric: str, q: float) -> str:
    return (
        f"histogram_quantile({q:g}, sum by (model_name, le) (\n"
        f"  {_rate(metric + '_bucket')}\n"
        f"  * on (model_name) group_left () ({_serving(cfg)})\n))"
    )


def sla_panels(cfg: StackConfig) -> list[Panel]:
    days = cfg.platform.alerting.slo_days
    uc = 'use_case="$use_case"'
    errors = "use_case:sovereign_gateway_errors:ratio_rate"
    requests = "sovereign_gateway_requests_total"
    # no recording rule spans the SLO period (alerts.WINDOWS ends at 3d): the budget panel counts the
    # recorded ratio's own counter over slo_days, with the same 5xx selector
    # (less the kill switch's 503s, as the recording rules: a suspension spends no budget)
    total = f"sum by (use_case) (increase({requests}{{{uc}}}[{days}d]))"
    suspended = (
        f'sum by (use_case) (increase(sovereign_gateway_unavailable_total{{{uc},code="use_case_suspended"}}'
        f"[{days}d]))"
    )
    failed = (
        f'(sum by (use_case) (increase({requests}{{{uc},status=~"5.."}}[{days}d])) or 0 * {total})\n'
        f"  - ({suspended} or 0 * {total})"
    )
    budget = f"1 - ((\n  {failed}\n) / {total})\n/ ({_target(cfg, 'error_ratio')})"
    serving = _serving(cfg)
    latency = [
        Panel(
            f"{title}: p50, p95, p99 of the use case's model vs target",
            f"vLLM's histogram {metric} of the model the use case's policy names, against the use "
            "case's target (platform.alerting).",
            (
                *(
                    _q(_latency_quantile(cfg, metric, q), f"p{round(q * 100)} {{{{model_name}}}}")
                    for q in (0.5, 0.95, 0.99)
                ),
                _q(_target(cfg, sli), "target"),
            ),
            unit="s",
        )
        for sli, title, metric in (
            ("ttft", "Time to first token", "vllm:time_to_first_token_seconds"),
            ("itl", "Inter-token latency", "vllm:inter_token_latency_seconds"),
        )
    ]
    slow = [
        _q(
            f"max by (model_name) (\n  model_name:vllm_{sli}_slow:ratio_rate1h\n"
            f"  * on (model_name) group_left () ({serving})\n)",
            f"{sli.upper()} {{{{model_name}}}}",
        )
        for sli in ("ttft", "itl")
    ]
    return [
        Panel(
            "Requests per second by status",
            "Chat requests of the use case at the gateway, by HTTP status (gateway/app.py).",
            (_q(f"sum by (use_case, status) ({_rate(requests, uc)})", "{{status}}"),),
            unit="reqps",
        ),
        Panel(
            "Error ratio (5xx) vs SLO",
            "Share of requests answered 5xx (recording rules of alerts.py) against the use case's "
            "error_ratio target.",
            (
                _q(f"max by (use_case) ({errors}5m{{{uc}}})", "5m"),
                _q(f"max by (use_case) ({errors}1h{{{uc}}})", "1h"),
                _q(_target(cfg, "error_ratio"), "SLO target"),
            ),
            unit="percentunit",
        ),
        Panel(
            f"Error budget remaining ({days} d)",
            f"1 - (5xx share over {days} days) / error_ratio target: 1 is untouched, 0 or below is spent.",
            (_q(budget, "budget"),),
            unit="percentunit",
            kind="stat",
            threshold=0,
            width=6,
        ),
        Panel(
            "Error ratio by window (burn-rate SLIs)",
            "The recorded 5xx ratio over each burn-rate window of alerts.py.",
            tuple(_q(f"max by (use_case) ({errors}{w}{{{uc}}})", w) for w in alerts.WINDOWS),
            unit="percentunit",
            width=18,
        ),
        *latency,
        Panel(
            "Slow requests (latency burn-rate SLIs) vs budget",
            "Share of first tokens and tokens slower than the model's target (recording rules of "
            "alerts.py, per served model) against the use case's latency budget (1 - latency_objective).",
            (*slow, _q(_target(cfg, "latency_budget"), "budget")),
            unit="percentunit",
            width=24,
        ),
    ]


def gpu_panels(cfg: StackConfig) -> list[Panel]:
    by_gpu = "max by (Hostname, gpu)"
    sum_gpu = "sum by (Hostname, gpu)"
    each = "{{Hostname}} GPU {{gpu}}"
    model = 'model_name=~"$model_name"'
    memory = (
        f"{sum_gpu} (DCGM_FI_DEV_FB_USED)\n"
        f"/ ({sum_gpu} (DCGM_FI_DEV_FB_USED) + {sum_gpu} (DCGM_FI_DEV_FB_FREE))"
    )
    return [
        Panel(
            "GPU utilisation",
            "DCGM_FI_DEV_GPU_UTIL per GPU (%).",
            (_q(f"{by_gpu} (DCGM_FI_DEV_GPU_UTIL)", each),),
            unit="percent",
            width=8,
        ),
        Panel(
            "GPU memory used",
            "Frame buffer used / (used + free) per GPU.",
            (_q(memory, each),),
            unit="percentunit",
            width=8,
        ),
        Panel(
            "GPU temperature",
            "DCGM_FI_DEV_GPU_TEMP per GPU; the GpuTemperatureHigh ticket's bound.",
            (_q(f"{by_gpu} (DCGM_FI_DEV_GPU_TEMP)", each),),
            unit="celsius",
            width=8,
            threshold=GPU_TEMPERATURE_ALERT_C,
        ),
        Panel(
            "XID errors (last)",
            "The driver's last XID error per GPU (non-zero: GpuXidError).",
            (_q(f"{by_gpu} (DCGM_FI_DEV_XID_ERRORS)", each),),
            width=8,
            threshold=1,
        ),
        Panel(
            "Uncorrectable ECC errors (15 m)",
            "Double-bit ECC errors per GPU (GpuEccDoubleBitErrors).",
            (_q(f"{sum_gpu} (increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[15m]))", each),),
            width=8,
            threshold=1,
        ),
        Panel(
            "Thermal throttling",
            "Growth of DCGM_FI_DEV_THERMAL_VIOLATION per GPU: above 0 the GPU is throttled by thermal limits "
            "(GpuThermalThrottling). The counter's unit (us or ns) depends on the exporter version.",
            (_q(f"{sum_gpu} ({_rate('DCGM_FI_DEV_THERMAL_VIOLATION')})", each),),
            width=8,
        ),
        Panel(
            "Queue depth per model",
            "vllm:num_requests_waiting; the VllmQueueDeep ticket's bound.",
            (_q(f"sum by (model_name) (vllm:num_requests_waiting{{{model}}})", "{{model_name}}"),),
            threshold=cfg.platform.alerting.queue_waiting_max,
        ),
        Panel(
            "Running requests per model",
            "vllm:num_requests_running (in execution batches).",
            (_q(f"sum by (model_name) (vllm:num_requests_running{{{model}}})", "{{model_name}}"),),
        ),
        Panel(
            "KV-cache usage per model",
            "vllm:kv_cache_usage_perc (1 is full); VllmKvCacheSaturated's bound.",
            (_q(f"max by (model_name) (vllm:kv_cache_usage_perc{{{model}}})", "{{model_name}}"),),
            unit="percentunit",
            threshold=KV_CACHE_ALERT,
        ),
        Panel(
            "Generated tokens per second per model",
            "rate of vllm:generation_tokens_total.",
            (_q(f"sum by (model_name) ({_rate('vllm:generation_tokens_total', model)})", "{{model_name}}"),),
        ),
    ]


def boundary_panels(cfg: StackConfig) -> list[Panel]:
    bao = f'namespace="{OPENBAO_NS}"'
    hours = cfg.platform.alerting.backup_max_age_hours
    requests = "sovereign_gateway_requests_total"
    # 503 answers but an operator's suspension (use_case_suspended is not an outage)
    unavailable = (
        'sum by (use_case) (rate(sovereign_gateway_unavailable_total{code!="use_case_suspended"}[5m]))\n'
        f"/ sum by (use_case) (rate({requests}[5m]))"
    )
    latency = f"sum by (use_case, le) ({_rate('sovereign_gateway_request_seconds_bucket')})"
    audit = "sum by (namespace, pod) (increase(sovereign_gateway_audit_failures_total[$__rate_interval]))"
    snapshot = (
        "time() - max by (namespace, cronjob) (\n"
        f'  kube_cronjob_status_last_successful_time{{{bao},cronjob="openbao-snapshot"}}\n)'
    )
    bao_audit = [
        _q(f"sum by (namespace) ({_rate(f'vault_audit_log_{part}_failure', bao)})", part)
        for part in ("request", "response")
    ]
    return [
        Panel(
            "Gateway requests by use case and status",
            f"{requests} (gateway/app.py).",
            (_q(f"sum by (use_case, status) ({_rate(requests)})", "{{use_case}} {{status}}"),),
            unit="reqps",
        ),
        Panel(
            "Fail-closed answers (503) per use case",
            "Share of 503 answers: key service unavailable, no model upstream, every pod full or audit "
            "unavailable; nothing was forwarded. GatewayUnavailableAnswers' bound.",
            (_q(unavailable, "{{use_case}}"),),
            unit="percentunit",
            threshold=UNAVAILABLE_ALERT,
        ),
        Panel(
            "503 answers by code",
            "sovereign_gateway_unavailable_total by code (gateway/app.py): use_case_suspended is an "
            "operator's kill switch (sovereign incident), the others fail closed.",
            (_q(f"sum by (code) ({_rate('sovereign_gateway_unavailable_total')})", "{{code}}"),),
            unit="reqps",
        ),
        Panel(
            "PHI values tokenised or removed, by category",
            "sovereign_gateway_phi_values_total (gateway/app.py): what the filter replaced before "
            "forwarding, counts only.",
            (
                _q(
                    f"sum by (category, action) ({_rate('sovereign_gateway_phi_values_total')})",
                    "{{category}} {{action}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Refusals by admission code",
            "sovereign_gateway_refused_total by code (gateway/app.py).",
            (_q(f"sum by (code) ({_rate('sovereign_gateway_refused_total')})", "{{code}}"),),
            unit="reqps",
            width=8,
        ),
        Panel(
            "Upstream errors by kind",
            "sovereign_gateway_upstream_errors_total by kind (gateway/upstream.py).",
            (_q(f"sum by (kind) ({_rate('sovereign_gateway_upstream_errors_total')})", "{{kind}}"),),
            unit="reqps",
            width=8,
        ),
        Panel(
            "Connections refused by reason",
            "sovereign_gateway_connections_refused_total (gateway/connections.py).",
            (_q(f"sum by (reason) ({_rate('sovereign_gateway_connections_refused_total')})", "{{reason}}"),),
            unit="reqps",
            width=8,
        ),
        Panel(
            "Egress refused (boundary)",
            "Outbound connections and lookups to destinations outside the allowlist (gateway/egress.py): "
            "any is a boundary event.",
            (_q("sum by (kind) (increase(sovereign_egress_refused_total[$__rate_interval]))", "{{kind}}"),),
            width=8,
            threshold=1,
        ),
        Panel(
            "Requests in flight",
            "sovereign_gateway_in_flight by kind (requests, streams), all pods.",
            (_q("sum by (kind) (sovereign_gateway_in_flight)", "{{kind}}"),),
            width=8,
        ),
        Panel(
            "Gateway latency p99 per use case",
            "sovereign_gateway_request_seconds (end to end at the gateway).",
            (_q(f"histogram_quantile(0.99, {latency})", "{{use_case}}"),),
            unit="s",
            width=8,
        ),
        Panel(
            "Gateway time by stage, p95",
            "sovereign_gateway_stage_seconds: prepare (authentication to the upstream call: body, keys, "
            "PHI filter, retrieval), write_ahead (the admit record made durable), upstream (to the "
            "response headers of a stream, the whole answer otherwise), answer (restored, final record "
            "durable). A rising write_ahead is the audit disk or a busy pod (docs/platform.md).",
            (
                _q(
                    "histogram_quantile(0.95, sum by (stage, stream, le) "
                    f"({_rate('sovereign_gateway_stage_seconds_bucket')}))",
                    "{{stage}} stream={{stream}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        Panel(
            "Gateway garbage-collection pauses, p99",
            "sovereign_gateway_gc_pause_seconds by generation: each collection stops the pod's event "
            "loop, every stream in it, for its length (gateway/server.py freezes the start-up heap).",
            (
                _q(
                    "histogram_quantile(0.99, sum by (generation, le) "
                    f"({_rate('sovereign_gateway_gc_pause_seconds_bucket')}))",
                    "generation {{generation}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        Panel(
            "Audit write failures",
            "sovereign_gateway_audit_failures_total per pod: requests refused 503 audit_unavailable "
            "(GatewayAuditWriteFailing).",
            (_q(audit, "{{pod}}"),),
            width=8,
            threshold=1,
        ),
        Panel(
            "OpenBao members unsealed (key service)",
            "vault_core_unsealed per member: 0 is sealed (OpenBaoSealed); sealed everywhere, the gateway "
            "fails closed once its cached keys expire.",
            (_q(f"min by (namespace, pod) (vault_core_unsealed{{{bao}}})", "{{pod}}"),),
            width=8,
        ),
        Panel(
            "OpenBao active leader",
            "Active members (vault_core_active): 1 expected (OpenBaoNoLeader).",
            (_q(f"sum by (namespace) (vault_core_active{{{bao}}})", "active"),),
            kind="stat",
            width=8,
            threshold=1,
            extra={"reverse": True},
        ),
        Panel(
            "OpenBao audit device failures",
            "Requests and responses OpenBao could not audit (it refuses them).",
            tuple(bao_audit),
            width=8,
        ),
        Panel(
            "Age of the last OpenBao snapshot",
            "Since the last successful Raft snapshot Job (the data keys' backup); "
            "OpenBaoSnapshotOverdue's bound.",
            (_q(snapshot, "age"),),
            unit="s",
            kind="stat",
            width=8,
            threshold=hours * 3600,
        ),
    ]


# --- the JSON model ------------------------------------------------------------------------------


def _thresholds(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if panel.threshold is not None:
        if panel.extra.get("reverse"):
            steps = [{"color": "red", "value": None}, {"color": "green", "value": panel.threshold}]
        else:
            steps.append({"color": "red", "value": panel.threshold})
    return {"mode": "absolute", "steps": steps}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel)}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "thresholdsStyle": {"mode": "line" if panel.threshold is not None else "off"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": dict(DATASOURCE),
                "expr": q.expr,
                "legendFormat": q.legend,
                "range": True,
                "editorMode": "code",
            }
            for i, q in enumerate(panel.queries)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def layout(panels: Iterable[Panel]) -> list[dict[str, Any]]:
    """Panels left to right, top to bottom in Grafana's 24-column grid; ids from 1."""
    out = []
    x = y = row_height = 0
    for i, panel in enumerate(panels, start=1):
        if x + panel.width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        out.append(_panel_json(panel, i, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return out


def _custom_variable(name: str, label: str, values: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"selected": True, "text": values[0], "value": values[0]} if values else {},
        "options": [{"selected": i == 0, "text": v, "value": v} for i, v in enumerate(values)],
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }


def _query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "refresh": 2,  # on time range change
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
    }


def _dashboard(
    uid: str, title: str, description: str, panels: list[Panel], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [FOLDER_TAG],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables},
        "panels": layout(panels),
    }


def dashboards(cfg: StackConfig) -> dict[str, dict[str, Any]]:
    """The dashboards by key (the ConfigMap's name suffix and file name), each checked."""
    out = {
        "sla": _dashboard(
            "sovereign-sla",
            "Sovereign LLM / SLA per use case",
            "Request rate, errors, latency and error budget of one use case against its SLO "
            "(platform.alerting); the ratios are alerts.py's recording rules.",
            sla_panels(cfg),
            [_custom_variable("use_case", "Use case", alerts.use_cases())],
        ),
        "gpu-fleet": _dashboard(
            "sovereign-gpu-fleet",
            "Sovereign LLM / GPU fleet",
            "DCGM per GPU and vLLM per served model.",
            gpu_panels(cfg),
            [_query_variable("model_name", "Model", "label_values(vllm:num_requests_running, model_name)")],
        ),
        "boundary": _dashboard(
            "sovereign-boundary",
            "Sovereign LLM / The boundary",
            "The gateway's requests, refusals and errors, refused egress and connections, audit and key "
            "(OpenBao) health. Aggregates only: no series carries request content.",
            boundary_panels(cfg),
            [],
        ),
    }
    for dashboard in out.values():
        check_dashboard(dashboard)
    return out


# --- checks --------------------------------------------------------------------------------------

_BY_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND_RE = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
_VARIABLE_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def variables_used(text: str) -> set[str]:
    return {a or b or c for a, b, c in _VARIABLE_RE.findall(text)} - BUILTIN_VARIABLES


def check_dashboard(dashboard: dict[str, Any]) -> None:
    """Refuse a dashboard Grafana would misdraw, or that could show a series' own labels beyond the
    allowlist: unique panel ids, panels inside the grid and not overlapping, a query with an
    expression and a unique refId in every panel, the data source everywhere, every variable defined,
    every expression aggregated ``by`` allowlisted labels, every legend templating those only."""
    title = dashboard.get("title", "?")
    if dashboard.get("schemaVersion") != SCHEMA_VERSION:
        raise DashboardError(f"{title}: schemaVersion must be {SCHEMA_VERSION}")
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    ids: set[int] = set()
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        pid = panel.get("id")
        where = f"{title}: panel {pid} {panel.get('title')!r}"
        if not isinstance(pid, int) or pid in ids:
            raise DashboardError(f"{where}: panel ids must be unique integers")
        ids.add(pid)
        g = panel["gridPos"]
        if g["x"] < 0 or g["y"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > GRID_COLUMNS:
            raise DashboardError(f"{where}: gridPos {g} is outside the {GRID_COLUMNS}-column grid")
        for cx in range(g["x"], g["x"] + g["w"]):
            for cy in range(g["y"], g["y"] + g["h"]):
                if (cx, cy) in cells:
                    raise DashboardError(f"{where}: overlaps panel {cells[cx, cy]}")
                cells[cx, cy] = pid
        if panel.get("datasource") != DATASOURCE:
            raise DashboardError(f"{where}: datasource must be {DATASOURCE}")
        targets = panel.get("targets") or []
        if not targets:
            raise DashboardError(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            raise DashboardError(f"{where}: refIds {refs} must be unique")
        texts = [panel.get("title", ""), panel.get("description", "")]
        for t in targets:
            if t.get("datasource") != DATASOURCE:
                raise DashboardError(f"{where} {t.get('refId')}: datasource must be {DATASOURCE}")
            expr = t.get("expr") or ""
            if not expr.strip():
                raise DashboardError(f"{where} {t.get('refId')}: no expression")
            check_expression(expr, where)
            for key in _LEGEND_RE.findall(t.get("legendFormat", "")):
                if key not in LABELS:
                    raise DashboardError(f"{where}: legend templates {key!r}, not an allowlisted label")
            texts += [expr, t.get("legendFormat", "")]
        missing = set().union(*(variables_used(x) for x in texts)) - defined
        if missing:
            raise DashboardError(f"{where}: variables {sorted(missing)} are not defined in templating")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query" and variable.get("datasource") != DATASOURCE:
            raise DashboardError(f"{title}: variable {variable['name']}: datasource must be {DATASOURCE}")


def check_expression(expr: str, where: str = "") -> None:
    """Every expression aggregates (``by``) and names only allowlisted labels in its groupings."""
    groupings = _BY_RE.findall(expr)
    if not any(kind == "by" for kind, _ in groupings) and metric_names(expr):
        raise DashboardError(f"{where}: {expr!r} must aggregate `by (...)` allowlisted labels")
    for kind, keys in groupings:
        names = {k.strip() for k in keys.split(",") if k.strip()}
        if kind in ("without", "ignoring") or names - LABELS:
            raise DashboardError(
                f"{where}: {kind} ({', '.join(sorted(names))}): only allowlisted labels {sorted(LABELS)} "
                "may reach a panel (aggregate `by`, never `without`)"
            )


# --- PromQL metric names (for the tests and for review) --------------------------------------------

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
     "offset", "atan2", "inf", "nan"}
)  # fmt: skip
_TOKEN_RE = re.compile(
    r'"(?:[^"\\]|\\.)*"|`[^`]*`|\{[^}]*\}|\[[^\]]*\]'  # strings, label matchers, ranges
    r"|(?P<duration>(?<![\w:])(?:\d+(?:ms|[smhdwy]))+(?![\w:]))"  # offset 5m
    r"|(?P<number>(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers that are neither functions,
    keywords nor grouping labels)."""
    stripped = _BY_RE.sub(" ", expr)
    names = set()
    for m in _TOKEN_RE.finditer(stripped):
        name = m.group("name")
        if name and not m.group("call") and name.lower() not in _PROMQL_KEYWORDS:
            names.add(name)
    return names


def variable_metric_names(variable: dict[str, Any]) -> set[str]:
    """The metric of a ``label_values(metric, label)`` query variable."""
    if variable["type"] != "query":
        return set()
    m = re.fullmatch(r"label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)", variable["definition"])
    if not m or m[2] not in LABELS:
        raise DashboardError(f"variable {variable['name']}: only label_values(<metric>, <allowlisted label>)")
    return metric_names(m[1])


# --- the ConfigMaps --------------------------------------------------------------------------------


def configmap_name(key: str) -> str:
    return f"sovereign-dashboard-{key}"


class Dashboards(Component):
    """One ConfigMap per dashboard in the monitoring namespace, for the Grafana dashboards sidecar."""

    KIND = "Dashboards"

    def build(self, name: str, cfg: StackConfig, depends_on: Deps) -> None:
        key, value = GRAFANA_DASHBOARD_LABEL
        self.configmaps: dict[str, k8s.core.v1.ConfigMap] = {}
        for dashboard_key, dashboard in dashboards(cfg).items():
            cm_name = configmap_name(dashboard_key)
            self.configmaps[dashboard_key] = k8s.core.v1.ConfigMap(
                f"{name}-{dashboard_key}",
                metadata={
                    "name": cm_name,
                    "namespace": cfg.platform.monitoring_namespace,
                    "labels": {**labels(cfg, cm_name, "monitoring"), key: value},
                },
                data={f"{dashboard_key}.json": json.dumps(dashboard, indent=2, sort_keys=True)},
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            )
        self.register_outputs({})
