"""The service owner's Grafana dashboards (infra/k8s_platform/dashboards.py) as the plan renders them:
valid for Grafana's dashboard JSON model, every PromQL expression parsed by the real ``promtool``,
every metric one that an exporter of the platform exports, the SLA panels evaluated by
``promtool test rules`` on synthetic series, and one labelled ConfigMap per dashboard."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

import gateway.app
import gateway.connections
import gateway.egress
import gateway.server
from infra import plan as planner
from infra.config import parse
from infra.k8s_platform import alerts, dashboards
from infra.k8s_platform.common import labels
from infra.k8s_platform.monitoring import GRAFANA_DASHBOARD_LABEL, GRAFANA_DATASOURCE_UID
from infra.policy import completeness
from infra.policy.charts import chart_name
from tests.infra.support import plan_of, sections

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; `make install` installs it)",
)
KEYS = ("sla", "gpu-fleet", "boundary")
# what Grafana puts in for a template variable before the query reaches Prometheus (a valid value)
MODEL = "llama31-8b-awq"


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


@pytest.fixture(scope="module")
def configmaps(prod: planner.Plan) -> dict[str, dict[str, Any]]:
    key, value = GRAFANA_DASHBOARD_LABEL
    return {
        o["metadata"]["name"]: o
        for o in prod.kubernetes_objects()
        if o["kind"] == "ConfigMap" and (o["metadata"].get("labels") or {}).get(key) == value
    }


@pytest.fixture(scope="module")
def rendered(configmaps: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The dashboards as Grafana's sidecar reads them: the JSON file of each plan ConfigMap."""
    out = {}
    for name, cm in configmaps.items():
        ((file, text),) = cm["data"].items()
        assert file.endswith(".json")
        out[name.removeprefix("sovereign-dashboard-")] = json.loads(text)
    return out


def _cfg() -> Any:
    return parse("eu-central-prod", sections("eu-central-prod"), "test")


def _substitute(expr: str, use_case: str) -> str:
    """A query as Grafana sends it: its variables replaced by valid values."""
    for name, value in (
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
        ("$use_case", use_case),
        ("$model_name", MODEL),
    ):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def _queries(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in dashboard["panels"] for t in p["targets"]]


# --- Grafana's dashboard JSON model --------------------------------------------------------------


def grafana_problems(dashboard: dict[str, Any]) -> list[str]:
    """What Grafana's JSON model (schemaVersion 42) requires of these dashboards, checked here
    independently of dashboards.check_dashboard."""
    problems = []
    if dashboard.get("schemaVersion") != dashboards.SCHEMA_VERSION or not dashboard.get("uid"):
        problems.append("schemaVersion/uid")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    ids = [p.get("id") for p in dashboard["panels"]]
    if len(set(ids)) != len(ids):
        problems.append(f"panel ids not unique: {ids}")
    boxes = []
    for p in dashboard["panels"]:
        g = p["gridPos"]
        if not (g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["w"] >= 1 and g["h"] >= 1 and g["y"] >= 0):
            problems.append(f"panel {p['id']}: gridPos {g} outside the 24 columns")
        for other_id, o in boxes:
            if (
                g["x"] < o["x"] + o["w"]
                and o["x"] < g["x"] + g["w"]
                and g["y"] < o["y"] + o["h"]
                and o["y"] < g["y"] + g["h"]
            ):
                problems.append(f"panel {p['id']} overlaps panel {other_id}")
        boxes.append((p["id"], g))
        if p.get("datasource") != {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID}:
            problems.append(f"panel {p['id']}: datasource {p.get('datasource')}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {p['id']}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.append(f"panel {p['id']}: refIds {refs}")
        for t in targets:
            if not (t.get("expr") or "").strip():
                problems.append(f"panel {p['id']} {t.get('refId')}: no expr")
            if t.get("datasource") != {"type": "prometheus", "uid": GRAFANA_DATASOURCE_UID}:
                problems.append(f"panel {p['id']} {t.get('refId')}: datasource")
            used = re.findall(r"\$\{?(\w+)", (t.get("expr") or "") + t.get("legendFormat", ""))
            for name in set(used) - variables - {"__rate_interval", "__interval", "__range"}:
                problems.append(f"panel {p['id']}: variable ${name} is not defined")
    return problems


@pytest.mark.parametrize("key", KEYS)
def test_each_dashboard_is_valid_for_grafanas_json_model(rendered: dict[str, Any], key: str) -> None:
    dashboard = rendered[key]
    assert grafana_problems(dashboard) == []
    assert dashboard["panels"], key
    dashboards.check_dashboard(dashboard)  # the module's own guard agrees


def test_the_dashboards_have_distinct_uids_and_the_sla_variable_lists_every_use_case(
    rendered: dict[str, Any],
) -> None:
    assert sorted(rendered) == sorted(KEYS)
    assert len({d["uid"] for d in rendered.values()}) == len(KEYS)
    (variable,) = rendered["sla"]["templating"]["list"]
    assert variable["name"] == "use_case"
    assert [o["value"] for o in variable["options"]] == alerts.use_cases()


def _broken(dashboard: dict[str, Any], how: str) -> dict[str, Any]:
    d = copy.deepcopy(dashboard)
    first, second = d["panels"][0], d["panels"][1]
    if how == "duplicate id":
        second["id"] = first["id"]
    elif how == "overlap":
        second["gridPos"] = dict(first["gridPos"])
    elif how == "outside the grid":
        first["gridPos"]["x"] = 20
    elif how == "no expr":
        first["targets"][0]["expr"] = " "
    elif how == "duplicate refId":
        first["targets"].append(dict(first["targets"][0]))
    elif how == "other datasource":
        first["datasource"] = {"type": "prometheus", "uid": "elsewhere"}
    elif how == "undefined variable":
        first["targets"][0]["expr"] += ' * on () group_left () vector(1) unless on () up{job="$tenant"}'
    elif how == "no targets":
        first["targets"] = []
    return d


@pytest.mark.parametrize(
    "how",
    ["duplicate id", "overlap", "outside the grid", "no expr", "duplicate refId", "other datasource",
     "undefined variable", "no targets"],
)  # fmt: skip
def test_the_json_checks_catch_a_broken_dashboard(rendered: dict[str, Any], how: str) -> None:
    broken = _broken(rendered["sla"], how)
    assert grafana_problems(broken), how
    with pytest.raises(dashboards.DashboardError):
        dashboards.check_dashboard(broken)


# --- no patient data: aggregates by allowlisted labels only --------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "sovereign_gateway_requests_total",  # raw series: every label of the series reaches the legend
        "sum without (use_case) (rate(sovereign_gateway_requests_total[5m]))",
        "sum by (path) (rate(sovereign_gateway_requests_total[5m]))",
        "sum by (use_case) (rate(x[5m])) * on (request_id) group_left () y",
    ],
)
def test_a_panel_that_could_show_more_than_aggregates_is_refused(expr: str) -> None:
    with pytest.raises(dashboards.DashboardError):
        dashboards.check_expression(expr)


def test_a_legend_templating_a_label_outside_the_allowlist_is_refused(rendered: dict[str, Any]) -> None:
    broken = copy.deepcopy(rendered["boundary"])
    broken["panels"][0]["targets"][0]["legendFormat"] = "{{instance}} {{path}}"
    with pytest.raises(dashboards.DashboardError, match=r"path|instance"):
        dashboards.check_dashboard(broken)


# --- promtool check rules: every expression parses -------------------------------------------------


def _promtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)


def _as_rules(rendered: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for key, dashboard in sorted(rendered.items()):
        for panel, target in _queries(dashboard):
            rules.append(
                {
                    "record": f"dashboard:{key.replace('-', '_')}:panel{panel['id']}_{target['refId']}",
                    "expr": _substitute(target["expr"], alerts.use_cases()[0]),
                }
            )
    return rules


@needs_promtool
def test_every_expression_parses_with_promtool(rendered: dict[str, Any], tmp_path: Path) -> None:
    rules = _as_rules(rendered)
    assert len(rules) >= 40
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    done = _promtool("check", "rules", path, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"{len(rules)} rules found" in done.stdout


@needs_promtool
def test_promtool_refuses_a_broken_expression(rendered: dict[str, Any], tmp_path: Path) -> None:
    rules = _as_rules(rendered)
    rules[3]["expr"] = rules[3]["expr"].replace("sum by (", "sum by ((", 1)
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    assert _promtool("check", "rules", path, cwd=tmp_path).returncode != 0


# --- every metric is exported ---------------------------------------------------------------------


def gateway_metric_names() -> set[str]:
    """The series names the gateway's prometheus_client registry exports (gateway/app.py,
    connections.py, egress.py, server.py are imported above, so their metrics are registered)."""
    assert gateway.app.REQUESTS and gateway.connections.CONNECTIONS_REFUSED and gateway.egress.EGRESS_REFUSED
    assert gateway.server.GC_PAUSE
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum", ""),
    }
    names = set()
    for family in prometheus_client.REGISTRY.collect():
        if family.name.startswith("sovereign_"):
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def exported(cfg: Any) -> set[str]:
    recorded = {r["record"] for r in alerts.recording_rules(cfg)}
    return gateway_metric_names() | recorded | set(dashboards.THIRD_PARTY_METRICS)


def used_metrics(dashboard: dict[str, Any]) -> set[str]:
    names = set()
    for _, target in _queries(dashboard):
        names |= dashboards.metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        names |= dashboards.variable_metric_names(variable)
    return names


def test_the_gateway_registry_is_read() -> None:
    names = gateway_metric_names()
    assert {
        "sovereign_gateway_requests_total",
        "sovereign_gateway_request_seconds_bucket",
        "sovereign_gateway_in_flight",
        "sovereign_gateway_connections_refused_total",
        "sovereign_egress_refused_total",
        "sovereign_gateway_audit_failures_total",
        "sovereign_gateway_stage_seconds_bucket",
        "sovereign_gateway_gc_pause_seconds_bucket",
    } <= names


@pytest.mark.parametrize("key", KEYS)
def test_every_metric_a_panel_reads_is_exported(rendered: dict[str, Any], key: str) -> None:
    used = used_metrics(rendered[key])
    assert used
    assert used - exported(_cfg()) == set()


def test_every_third_party_metric_is_cited_and_used(rendered: dict[str, Any]) -> None:
    used = set().union(*(used_metrics(d) for d in rendered.values()))
    for name, source in dashboards.THIRD_PARTY_METRICS.items():
        assert re.search(r"[\w-]+/[\w.-]+|openbao\.org", source), (name, source)
        assert name in used, f"{name} is allowlisted but no panel reads it"


@pytest.mark.parametrize(
    "typo",
    [
        ("sovereign_gateway_requests_total", "sovereign_gateway_request_total"),
        ("vllm:num_requests_waiting", "vllm:num_request_waiting"),
        ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_TEMPERATURE"),
        ("use_case:sovereign_gateway_errors:ratio_rate5m", "use_case:sovereign_gateway_error:ratio_rate5m"),
    ],
)
def test_a_misspelt_metric_is_not_exported(rendered: dict[str, Any], typo: tuple[str, str]) -> None:
    right, wrong = typo
    broken = json.loads(json.dumps(rendered).replace(right, wrong))
    unknown = set().union(*(used_metrics(d) for d in broken.values())) - exported(_cfg())
    assert wrong in unknown


def test_metric_names_skips_functions_labels_numbers_and_strings() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model_name, le) (rate(a:b_bucket{x="y",z=~"w"}[5m])))'
        ' / 1e6 + on (use_case) group_left () label_replace(vector(1), "use_case", "c", "", "")'
        " and ignoring (pod) time() - c_total offset 5m"
    )
    assert dashboards.metric_names(expr) == {"a:b_bucket", "c_total"}


def test_the_thresholds_drawn_are_the_alerts_thresholds() -> None:
    rules = {r["alert"]: r for r in alerts.component_alerts(_cfg())}
    assert rules["GpuTemperatureHigh"]["expr"].endswith(f"> {dashboards.GPU_TEMPERATURE_ALERT_C}")
    assert rules["VllmKvCacheSaturated"]["expr"].endswith(f"> {dashboards.KV_CACHE_ALERT}")
    assert rules["GatewayUnavailableAnswers"]["expr"].endswith(f"> {dashboards.UNAVAILABLE_ALERT}")


# --- promtool test rules: the SLA panels on synthetic series ---------------------------------------


def _sla_expr(rendered: dict[str, Any], title: str, legend: str, use_case: str) -> str:
    (panel,) = [p for p in rendered["sla"]["panels"] if p["title"].startswith(title)]
    (target,) = [t for t in panel["targets"] if t["legendFormat"] == legend]
    return _substitute(target["expr"], use_case)


AS = "appointment-scheduling"
# each: (panel title prefix, legend, use case selected, expected labels, expected value), evaluated
# after two hours of series sampled every minute
SLA_CASES = [
    # 1 request in 100 failed (status 500)
    ("Error ratio (5xx) vs SLO", "5m", AS, {"use_case": AS}, 0.01),
    ("Error ratio (5xx) vs SLO", "1h", AS, {"use_case": AS}, 0.01),
    ("Error ratio by window", "30m", AS, {"use_case": AS}, 0.01),
    ("Error ratio (5xx) vs SLO", "SLO target", AS,
     {"use_case": AS}, 0.001),
    # the stack's own target of a use case listed in platform.alerting.use_cases (ALERTING below)
    ("Error ratio (5xx) vs SLO", "SLO target", "catalog-search", {"use_case": "catalog-search"}, 0.005),
    ("Requests per second by status", "{{status}}", AS,
     {"use_case": AS, "status": "500"}, 1 / 60),
    ("Requests per second by status", "{{status}}", AS,
     {"use_case": AS, "status": "200"}, 99 / 60),
    # every first token between 0.25 s and 0.5 s: p50 interpolated at 0.375 s; target 0.5 s
    ("Time to first token", "p50 {{model_name}}", AS, {"model_name": MODEL}, 0.375),
    ("Time to first token", "target", AS, {"use_case": AS}, 0.5),
    ("Time to first token", "target", "catalog-search", {"use_case": "catalog-search"}, 1.0),
    ("Inter-token latency", "target", "catalog-search", {"use_case": "catalog-search"}, 0.1),
    # 1 token in 50 slower than the model's ITL bound (0.025 s)
    ("Slow requests", "ITL {{model_name}}", AS, {"model_name": MODEL}, 0.02),
    ("Slow requests", "budget", "catalog-search", {"use_case": "catalog-search"}, 0.01),
]  # fmt: skip
# the error budget over the 30-day period, after 31 days of series sampled every hour
BUDGET_CASES = [
    # 1 in 100 failed, target 0.001: ten times the budget spent
    ("Error budget remaining", "budget", AS, {"use_case": AS}, -9),
    # no request of catalog-search failed, 1 in 3 was suspended: the budget is whole
    ("Error budget remaining", "budget", "catalog-search", {"use_case": "catalog-search"}, 1),
    # 1 in 400 failed, target 0.005: half the budget left
    ("Error budget remaining", "budget", "order-support", {"use_case": "order-support"}, 0.5),
]  # fmt: skip
ALERTING = {
    "use_cases": {
        "catalog-search": {"ttft_seconds": 1.0, "itl_seconds": 0.1, "error_ratio": 0.005},
        "order-support": {"error_ratio": 0.005},
    }
}


def _series(steps: int) -> list[dict[str, str]]:
    req = "sovereign_gateway_requests_total"
    ttft = "vllm:time_to_first_token_seconds"
    itl = "vllm:inter_token_latency_seconds"
    model = f'model_name="{MODEL}"'
    series = [
        (f'{req}{{use_case="appointment-scheduling",status="200"}}', 99),
        (f'{req}{{use_case="appointment-scheduling",status="500"}}', 1),
        (f'{req}{{use_case="catalog-search",status="200"}}', 10),
        # catalog-search suspended in part (the kill switch's 503s): they spend no error budget
        (f'{req}{{use_case="catalog-search",status="503"}}', 5),
        ('sovereign_gateway_unavailable_total{use_case="catalog-search",code="use_case_suspended"}', 5),
        (f'{req}{{use_case="order-support",status="200"}}', 399),
        (f'{req}{{use_case="order-support",status="503"}}', 1),
        # TTFT: 10 a step, all in (0.25, 0.5]
        (f'{ttft}_bucket{{{model},le="0.1"}}', 0),
        (f'{ttft}_bucket{{{model},le="0.25"}}', 0),
        (f'{ttft}_bucket{{{model},le="0.5"}}', 10),
        (f'{ttft}_bucket{{{model},le="1"}}', 10),
        (f'{ttft}_bucket{{{model},le="+Inf"}}', 10),
        (f"{ttft}_count{{{model}}}", 10),
        # ITL: 50 tokens a step, 49 at or below 0.025 s
        (f'{itl}_bucket{{{model},le="0.025"}}', 49),
        (f'{itl}_bucket{{{model},le="+Inf"}}', 50),
        (f"{itl}_count{{{model}}}", 50),
    ]
    return [{"series": s, "values": f"0+{step}x{steps}"} for s, step in series]


def _sla_test_files(tmp_path: Path, cases: list[Any], *, budget: bool = False) -> Path:
    """rules.yaml: alerts.py's recording rules and, per case, a rule that is 1 where the panel's
    series is within 1e-9 of the expected value (0 where not, absent where the panel has no such
    series); tests.yaml: the synthetic series and the expected 1 with the expected labels."""
    data = sections("eu-central-prod")
    data["platform"]["alerting"] = ALERTING
    cfg = parse("eu-central-prod", data, "test")
    rendered = {"sla": dashboards.dashboards(cfg)["sla"]}
    interval = "1h" if budget else "1m"
    checks, expected = [], []
    for i, (title, legend, use_case, exp_labels, value) in enumerate(cases):
        expr = _sla_expr(rendered, title, legend, use_case)
        if "status" in exp_labels:  # a panel with a series per status: the one of this case
            status = exp_labels["status"]
            expr = f'({expr}) and on (status) label_replace(vector(1), "status", "{status}", "", "")'
        checks.append({"record": f"sla_check_{i}", "expr": f"abs(({expr}) - ({value!r})) < bool 1e-9"})
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(exp_labels.items()))
        expected.append((f"sla_check_{i}", f"sla_check_{i}{{{label_text}}}"))
    groups = [{"name": "sla-panels", "interval": interval, "rules": checks}]
    if not budget:  # the 30-day budget reads no recorded series (none spans the period)
        groups.insert(
            0, {"name": "sovereign-slo-recording", "interval": "1m", "rules": alerts.recording_rules(cfg)}
        )
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8"
    )
    eval_time = "30d1h" if budget else "2h"
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": interval,
        "tests": [
            {
                "interval": interval,
                "input_series": _series(31 * 24 if budget else 150),
                "promql_expr_test": [
                    {"expr": name, "eval_time": eval_time, "exp_samples": [{"labels": text, "value": 1}]}
                    for name, text in expected
                ],
            }
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    return path


@needs_promtool
def test_the_sla_panels_show_the_expected_values_on_synthetic_series(tmp_path: Path) -> None:
    path = _sla_test_files(tmp_path, SLA_CASES)
    done = _promtool("test", "rules", path, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@needs_promtool
def test_the_error_budget_panel_over_the_slo_period(tmp_path: Path) -> None:
    path = _sla_test_files(tmp_path, BUDGET_CASES, budget=True)
    done = _promtool("test", "rules", path, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@needs_promtool
@pytest.mark.parametrize(("cases", "index"), [("sla", 0), ("sla", 7), ("sla", 8), ("budget", 2)])
def test_promtool_test_catches_a_wrong_sla_value(tmp_path: Path, cases: str, index: int) -> None:
    title, legend, use_case, exp_labels, value = (SLA_CASES if cases == "sla" else BUDGET_CASES)[index]
    wrong = [(title, legend, use_case, exp_labels, value * 1.01 + 0.001)]
    path = _sla_test_files(tmp_path, wrong, budget=cases == "budget")
    done = _promtool("test", "rules", path, cwd=tmp_path)
    assert done.returncode != 0
    assert "sla_check_0" in done.stdout + done.stderr


# --- the plan: one labelled ConfigMap per dashboard in the monitoring namespace ---------------------


def test_the_plan_has_one_labelled_configmap_per_dashboard(
    prod: planner.Plan, configmaps: dict[str, dict[str, Any]]
) -> None:
    cfg = _cfg()
    assert sorted(configmaps) == sorted(dashboards.configmap_name(k) for k in KEYS)
    key, value = GRAFANA_DASHBOARD_LABEL
    for name, cm in configmaps.items():
        assert cm["metadata"]["namespace"] == cfg.platform.monitoring_namespace == "monitoring"
        assert cm["metadata"]["labels"] == {**labels(cfg, name, "monitoring"), key: value}
        assert cm["data"] == {
            f"{name.removeprefix('sovereign-dashboard-')}.json": json.dumps(
                dashboards.dashboards(cfg)[name.removeprefix("sovereign-dashboard-")],
                indent=2,
                sort_keys=True,
            )
        }
    # only the dashboards carry the sidecar's label: it loads nothing else
    carriers = [o for o in prod.kubernetes_objects() if (o["metadata"].get("labels") or {}).get(key) == value]
    assert len(carriers) == len(KEYS)


def test_the_dashboards_wait_for_the_monitoring_release(prod: planner.Plan) -> None:
    (release,) = [
        r
        for r in prod.of_type(planner.HELM_RELEASE)
        if chart_name(r.inputs["chart"]) == "kube-prometheus-stack"
    ]
    maps = [
        r
        for r in prod.of_type("kubernetes:core/v1:ConfigMap")
        if r.inputs["metadata"]["name"].startswith("sovereign-dashboard-")
    ]
    assert len(maps) == len(KEYS)
    for r in maps:
        assert release.urn in r.dependencies, r.name


# --- the completeness check's `dashboard` rule (infra/policy/completeness.py) -----------------------

KPS_GRAFANA = {
    "grafana": {
        "enabled": True,
        "defaultDashboardsEnabled": False,
        "sidecar": {
            "dashboards": {
                "enabled": True,
                "label": "grafana_dashboard",
                "labelValue": "1",
                "searchNamespace": "monitoring",
            },
            "datasources": {"enabled": True, "uid": GRAFANA_DATASOURCE_UID},
        },
    }
}


CHART = "oci://m.example.de/charts/kube-prometheus-stack@sha256:" + "a" * 64


def _resources(
    rendered: dict[str, Any],
    values: dict[str, Any] | None = None,
    *,
    keys: tuple[str, ...] = KEYS,
    namespace: str = "monitoring",
    edit: Any = None,
) -> list[completeness.Resource]:
    """A kube-prometheus-stack release with *values* and the dashboards' ConfigMaps."""
    inputs = {
        "name": "kube-prometheus-stack",
        "chart": CHART,
        "namespace": "monitoring",
        "values": KPS_GRAFANA if values is None else values,
    }
    out = [completeness.Resource("urn:release", planner.HELM_RELEASE, "kps", True, inputs)]
    key, value = GRAFANA_DASHBOARD_LABEL
    for k in keys:
        dashboard = edit(copy.deepcopy(rendered[k])) if edit else rendered[k]
        metadata = {"name": dashboards.configmap_name(k), "namespace": namespace, "labels": {key: value}}
        cm = {"metadata": metadata, "data": {f"{k}.json": json.dumps(dashboard)}}
        out.append(
            completeness.Resource(
                f"urn:cm-{k}", "kubernetes:core/v1:ConfigMap", k, True, cm, dependencies=("urn:release",)
            )
        )
    return out


def _dashboard_findings(resources: list[completeness.Resource]) -> list[completeness.Finding]:
    found = completeness.check(resources, registry_mirror="https://m.example.de")
    return [f for f in found if f.kind == "dashboard"]


def test_the_plans_dashboards_are_loaded_by_its_grafana(prod: planner.Plan) -> None:
    assert [f for f in prod.findings if f.kind == "dashboard"] == []


def test_dashboards_loaded_by_the_grafana_sidecar_have_no_finding(rendered: dict[str, Any]) -> None:
    assert _dashboard_findings(_resources(rendered)) == []


def test_a_grafana_without_its_dashboards_is_reported(rendered: dict[str, Any]) -> None:
    (found,) = _dashboard_findings(_resources(rendered, keys=()))
    assert "kube-prometheus-stack" in found.resource and "declares none" in found.missing
    # with the chart's own dashboards (kube-prometheus-stack's default) it has some
    chart_own = copy.deepcopy(KPS_GRAFANA)
    chart_own["grafana"]["defaultDashboardsEnabled"] = True
    assert _dashboard_findings(_resources(rendered, chart_own, keys=())) == []


def test_a_dashboard_no_grafana_loads_is_reported(rendered: dict[str, Any]) -> None:
    elsewhere = _dashboard_findings(_resources(rendered, namespace="sovereign-gateway"))
    unloaded = [f for f in elsewhere if "none loads it" in f.missing]
    assert len(unloaded) == len(KEYS)
    assert [f for f in elsewhere if f not in unloaded and "declares none" in f.missing]
    no_grafana = _dashboard_findings(_resources(rendered, {"grafana": {"enabled": False}}))
    assert len(no_grafana) == len(KEYS)
    assert all("none loads it" in f.missing for f in no_grafana)


def test_a_dashboard_naming_another_data_source_is_reported(rendered: dict[str, Any]) -> None:
    def other(d: dict[str, Any]) -> dict[str, Any]:
        d["panels"][0]["targets"][0]["datasource"] = {"type": "prometheus", "uid": "thanos"}
        return d

    found = _dashboard_findings(_resources(rendered, edit=other))
    assert len(found) == len(KEYS)
    assert all("'thanos'" in f.missing for f in found)
