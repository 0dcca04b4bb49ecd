"""The plan's alert rules (PrometheusRule) against the real ``promtool`` (Debian's ``prometheus``
package; ``make install`` installs it): ``promtool check rules`` on what the plan renders, and
``promtool test rules`` with, for every alert, a series that fires it and one that does not."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import plan as planner
from infra.config import StackConfigError, parse
from infra.k8s_platform import alerts
from infra.policy import completeness
from infra.policy.charts import chart_name
from tests.infra.support import plan_of, sections

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`; `make install` installs it)",
)


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


@pytest.fixture(scope="module")
def groups(prod: planner.Plan) -> list[dict[str, Any]]:
    (rule,) = [o for o in prod.kubernetes_objects() if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    return rule["spec"]["groups"]


def test_the_rules_wait_for_the_crd_and_the_completeness_check_knows_it(prod: planner.Plan) -> None:
    assert [f for f in prod.findings if f.kind == "crd"] == []
    (release,) = [
        r
        for r in prod.of_type(planner.HELM_RELEASE)
        if chart_name(r.inputs["chart"]) == "kube-prometheus-stack"
    ]
    resources = [
        replace(r, dependencies=tuple(d for d in r.dependencies if d != release.urn))
        if r.type.endswith(":PrometheusRule")
        else r
        for r in planner.completeness_view(prod.resources)
    ]
    found = [
        f for f in completeness.check(resources, registry_mirror="https://m.example.de") if f.kind == "crd"
    ]
    assert len(found) == 1 and "PrometheusRule" in found[0].resource, found


def _alert_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _promtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False)


def _write_rules(folder: Path, groups: list[dict[str, Any]]) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


# --- the rules as rendered ---------------------------------------------------------------------


@needs_promtool
def test_the_plans_rules_pass_promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    done = _promtool("check", "rules", _write_rules(tmp_path, groups), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_a_broken_expression_fails_promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(groups))
    broken[2]["rules"][0]["expr"] = "max by (pod) (vault_core_unsealed == 0"  # unbalanced
    done = _promtool("check", "rules", _write_rules(tmp_path, broken), cwd=tmp_path)
    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr


def test_every_alert_has_severity_runbook_and_only_allowlisted_keys(groups: list[dict[str, Any]]) -> None:
    rules = _alert_rules(groups)
    assert len(rules) >= 20
    for rule in rules:
        alerts.check_rule(rule)
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert (ROOT / rule["annotations"]["runbook_url"]).is_file(), rule["annotations"]["runbook_url"]
        assert f"`{rule['alert']}`" in (ROOT / "docs/operations.md").read_text(), "not in docs/operations.md"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["labels"].update(detail="x"), "not in the allowlist"),
        (lambda r: r["annotations"].update(message="x"), "not in the allowlist"),
        (lambda r: r["annotations"].update(summary="{{ $labels.path }}"), "only {{ $labels"),
        (lambda r: r["annotations"].update(summary="{{ $value }}"), "only {{ $labels"),
        (lambda r: r.update(expr="max without (le) (x) > 0"), "never `without`"),
        (lambda r: r.update(expr="max by (request_id) (x) > 0"), "allowlisted labels"),
        (lambda r: r.update(expr="x > 0"), "must aggregate"),
        (lambda r: r["annotations"].update(runbook_url="https://example.org"), "runbook_url"),
        (lambda r: r["labels"].update(severity="info"), "severity"),
    ],
)
def test_check_rule_refuses_free_text_on_a_page(
    groups: list[dict[str, Any]], change: Any, message: str
) -> None:
    rule = yaml.safe_load(yaml.safe_dump(_alert_rules(groups)[0]))
    change(rule)
    with pytest.raises(alerts.AlertRuleError, match=re.escape(message)):
        alerts.check_rule(rule)


def test_slo_defaults_come_from_the_gpu_interactive_profile() -> None:
    profile = yaml.safe_load((ROOT / "loadtests/profiles/gpu-interactive.yaml").read_text())
    cfg = parse("eu-central-prod", sections("eu-central-prod"), "test")
    slo = cfg.platform.alerting.default_slo
    p99 = {t["metric"]: t["limit"] for t in profile["thresholds"] if t["percentile"] == 99}
    assert slo.ttft_seconds * 1000 == p99["ttft_ms"]
    assert slo.itl_seconds * 1000 <= p99["tpot_ms"]  # the bucket bound at or below it
    assert slo.error_ratio == profile["max_error_ratio"]
    assert slo.latency_objective == 0.99


def test_burn_rate_factors_are_the_workbooks_for_30_days() -> None:
    assert [w.factor(30) for w in alerts.BURN_WINDOWS] == [14.4, 6.0, 3.0, 1.0]


# --- config: receivers inside the boundary, thresholds on bucket bounds ------------------------


def _with_alerting(alerting: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(sections("eu-central-prod")))
    data["platform"]["alerting"] = alerting
    return data


def test_a_receiver_outside_the_eu_is_refused_naming_the_field() -> None:
    data = _with_alerting(
        {"receivers": [{"name": "pager", "url": "https://events.pagerduty.com/v2/enqueue"}]}
    )
    with pytest.raises(StackConfigError) as err:
        parse("eu-central-prod", data, "test")
    assert "platform.alerting.receivers.0.url" in str(err.value)
    assert "EU allowlist" in str(err.value)


def test_a_receiver_named_like_the_built_in_one_is_refused() -> None:
    data = _with_alerting({"receivers": [{"name": "null", "url": "http://oncall-bridge.ops.svc:8080/hook"}]})
    with pytest.raises(StackConfigError) as err:
        parse("eu-central-prod", data, "test")
    assert "platform.alerting.receivers.0.name" in str(err.value) and "built-in" in str(err.value)


def test_an_in_boundary_receiver_is_accepted() -> None:
    data = _with_alerting(
        {"receivers": [{"name": "oncall", "url": "http://oncall-bridge.ops.svc:8080/hook"}]}
    )
    cfg = parse("eu-central-prod", data, "test")
    assert cfg.platform.alerting.receivers[0].name == "oncall"


def test_alertmanager_routes_by_severity_to_the_configured_receivers_only() -> None:
    data = _with_alerting(
        {"receivers": [{"name": "oncall", "url": "http://10.0.1.20:9095/hook", "severities": ["page"]}]}
    )
    config = alerts.alertmanager_config(parse("eu-central-prod", data, "test"))
    assert [r["name"] for r in config["receivers"]] == ["null", "oncall"]
    assert config["receivers"][1]["webhook_configs"] == [
        {"url": "http://10.0.1.20:9095/hook", "send_resolved": True}
    ]
    assert config["route"]["routes"] == [
        {"receiver": "oncall", "matchers": ['severity=~"page"'], "continue": True}
    ]
    assert set(config["route"]["group_by"]) - {"alertname"} <= alerts.LABELS


def test_a_latency_threshold_between_buckets_is_refused() -> None:
    data = _with_alerting({"default_slo": {"ttft_seconds": 2.0}})
    with pytest.raises(StackConfigError, match="no bucket bound of vllm:time_to_first_token_seconds"):
        parse("eu-central-prod", data, "test")


# --- promtool test rules: each alert fires on one series and stays quiet on another ------------

# (alert, series that fire it, series that do not, eval time, the alert's labels besides severity)
Case = tuple[str, list[tuple[str, str]], list[tuple[str, str]], str, dict[str, str]]
BAO = 'namespace="openbao",pod="openbao-0",instance="10.42.0.5:8200",job="openbao-internal"'
GPU = 'gpu="0",Hostname="gex44-1",UUID="GPU-1",modelName="NVIDIA RTX 4000 SFF Ada"'
GW = 'namespace="sovereign-gateway",pod="gateway-0"'
MIB = 1 << 20
DAY = 86400
RESERVE = [(f"sovereign_gateway_audit_disk_reserve_bytes{{{GW}}}", f"{8 * MIB}x30")]
CERT = "sovereign_gateway_certificate_expiry_timestamp_seconds"


def _half_503(use_case: str, code: str, steps: int) -> list[tuple[str, str]]:
    """Half of a use case's requests answered 503 with *code* (the gateway counts both series)."""
    sel = f'{GW},use_case="{use_case}"'
    return [
        (f'sovereign_gateway_requests_total{{{sel},status="503"}}', f"0+10x{steps}"),
        (f'sovereign_gateway_requests_total{{{sel},status="200"}}', f"0+10x{steps}"),
        (f'sovereign_gateway_unavailable_total{{{sel},code="{code}"}}', f"0+10x{steps}"),
    ]


def _component_cases() -> list[Case]:
    return [
        (
            "OpenBaoSealed",
            [(f"vault_core_unsealed{{{BAO}}}", "0x20")],
            [(f"vault_core_unsealed{{{BAO}}}", "1x20")],
            "10m",
            {"namespace": "openbao", "pod": "openbao-0"},
        ),
        (
            "OpenBaoNoLeader",
            [(f"vault_core_active{{{BAO}}}", "0x20")],
            [(f"vault_core_active{{{BAO}}}", "1x20")],
            "10m",
            {"namespace": "openbao"},
        ),
        (
            "OpenBaoAuditDeviceFailing",
            [(f"vault_audit_log_request_failure{{{BAO}}}", "0+1x20")],
            [(f"vault_audit_log_request_failure{{{BAO}}}", "0x20")],
            "10m",
            {"namespace": "openbao"},
        ),
        (
            "GatewayUnavailableAnswers",
            _half_503("patient-support", "key_unavailable", 20),
            [
                (f'sovereign_gateway_requests_total{{{GW},use_case="patient-support",status="503"}}', "0x20"),
                (
                    f'sovereign_gateway_requests_total{{{GW},use_case="patient-support",status="200"}}',
                    "0+10x20",
                ),
            ],
            "15m",
            {"use_case": "patient-support"},
        ),
        (
            # the same share of 503s, all from the kill switch: deliberate, no page
            "GatewayUnavailableAnswers",
            _half_503("patient-support", "audit_unavailable", 20),
            _half_503("patient-support", "use_case_suspended", 20),
            "15m",
            {"use_case": "patient-support"},
        ),
        (
            "GatewayAuditDiskLow",
            [(f"sovereign_gateway_audit_disk_free_bytes{{{GW}}}", f"{50 * MIB}x30"), *RESERVE],
            [(f"sovereign_gateway_audit_disk_free_bytes{{{GW}}}", f"{1024 * MIB}x30"), *RESERVE],
            "20m",
            {"namespace": "sovereign-gateway", "pod": "gateway-0"},
        ),
        (
            "GatewayAuditDiskReserveCrossed",
            [(f"sovereign_gateway_audit_disk_free_bytes{{{GW}}}", f"{MIB}x10"), *RESERVE],
            # close to the reserve (the ticket above) but not below it: no page
            [(f"sovereign_gateway_audit_disk_free_bytes{{{GW}}}", f"{50 * MIB}x10"), *RESERVE],
            "5m",
            {"namespace": "sovereign-gateway", "pod": "gateway-0"},
        ),
        (
            # 30 minutes allowed (the default): a segment waiting since t=0 is overdue at 45m
            "AuditSegmentsNotShipped",
            [(f"sovereign_gateway_audit_oldest_unshipped_segment_age_seconds{{{GW}}}", "0+60x60")],
            # segments shipped within a minute of their sealing
            [(f"sovereign_gateway_audit_oldest_unshipped_segment_age_seconds{{{GW}}}", "0 30 60 0 30 60x55")],
            "45m",
            {"namespace": "sovereign-gateway", "pod": "gateway-0"},
        ),
        (
            # the last complete round stays at t=0, or follows the clock (every round completes)
            "AuditShipperStalled",
            [(f"sovereign_gateway_audit_last_ship_timestamp_seconds{{{GW}}}", "0x60")],
            [(f"sovereign_gateway_audit_last_ship_timestamp_seconds{{{GW}}}", "0+60x60")],
            "45m",
            {"namespace": "sovereign-gateway", "pod": "gateway-0"},
        ),
        (
            "CertificateExpiresSoon",
            [(f'{CERT}{{{GW},certificate="client"}}', f"{10 * DAY}x30")],
            [(f'{CERT}{{{GW},certificate="client"}}', f"{30 * DAY}x30")],
            "20m",
            {"namespace": "sovereign-gateway", "certificate": "client"},
        ),
        (
            # within 3 days it pages instead (below): the ticket closes
            "CertificateExpiresSoon",
            [(f'{CERT}{{{GW},certificate="ingress"}}', f"{4 * DAY}x30")],
            [(f'{CERT}{{{GW},certificate="ingress"}}', f"{2 * DAY}x30")],
            "20m",
            {"namespace": "sovereign-gateway", "certificate": "ingress"},
        ),
        (
            "CertificateExpiryImminent",
            [(f'{CERT}{{{GW},certificate="upstream-server"}}', f"{2 * DAY}x30")],
            # within 14 days (the ticket) but not within 3: no page
            [(f'{CERT}{{{GW},certificate="upstream-server"}}', f"{10 * DAY}x30")],
            "20m",
            {"namespace": "sovereign-gateway", "certificate": "upstream-server"},
        ),
        (
            "GatewayAuditWriteFailing",
            [(f"sovereign_gateway_audit_failures_total{{{GW}}}", "0+1x20")],
            [(f"sovereign_gateway_audit_failures_total{{{GW}}}", "0x20")],
            "10m",
            {"namespace": "sovereign-gateway", "pod": "gateway-0"},
        ),
        (
            "VllmQueueDeep",
            [('vllm:num_requests_waiting{model_name="m1",engine="0"}', "50x30")],
            [('vllm:num_requests_waiting{model_name="m1",engine="0"}', "1x30")],
            "20m",
            {"model_name": "m1"},
        ),
        (
            "VllmKvCacheSaturated",
            [('vllm:kv_cache_usage_perc{model_name="m1",engine="0"}', "0.99x30")],
            [('vllm:kv_cache_usage_perc{model_name="m1",engine="0"}', "0.5x30")],
            "20m",
            {"model_name": "m1"},
        ),
        (
            "GpuXidError",
            [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "79x10")],
            [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0x10")],
            "5m",
            {"gpu": "0", "Hostname": "gex44-1"},
        ),
        (
            "GpuEccDoubleBitErrors",
            [(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "0+1x20")],
            [(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "0x20")],
            "10m",
            {"gpu": "0", "Hostname": "gex44-1"},
        ),
        (
            "GpuTemperatureHigh",
            [(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "90x20")],
            [(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "60x20")],
            "15m",
            {"gpu": "0", "Hostname": "gex44-1"},
        ),
        (
            "GpuThermalThrottling",
            [(f"DCGM_FI_DEV_THERMAL_VIOLATION{{{GPU}}}", "0+1000x20")],
            [(f"DCGM_FI_DEV_THERMAL_VIOLATION{{{GPU}}}", "0x20")],
            "15m",
            {"gpu": "0", "Hostname": "gex44-1"},
        ),
        (
            "NodeNotReady",
            [('kube_node_status_condition{node="n1",condition="Ready",status="true"}', "0x10")],
            [('kube_node_status_condition{node="n1",condition="Ready",status="true"}', "1x10")],
            "8m",
            {"node": "n1"},
        ),
        (
            "OpenBaoSnapshotFailing",
            [
                (
                    'kube_job_status_failed{namespace="openbao",job_name="openbao-snapshot-290001",reason="BackoffLimitExceeded"}',
                    "1x10",
                )
            ],
            [('kube_job_status_failed{namespace="openbao",job_name="openbao-snapshot-290001"}', "0x10")],
            "5m",
            {"namespace": "openbao"},
        ),
    ]


def _slo_cases(cfg_groups: list[dict[str, Any]]) -> list[Case]:
    cases: list[Case] = []
    for rule in _alert_rules(cfg_groups):
        name, labels = rule["alert"], rule["labels"]
        evaluate = "40m" if labels["severity"] == "page" else "100m"
        if labels["slo"] == "error_ratio":
            use_case = labels["use_case"]
            ok = f'sovereign_gateway_requests_total{{{GW},use_case="{use_case}",status="200"}}'
            bad = f'sovereign_gateway_requests_total{{{GW},use_case="{use_case}",status="500"}}'
            cases.append(
                (
                    name,
                    [(ok, "0+90x120"), (bad, "0+10x120")],
                    [(ok, "0+90x120"), (bad, "0x120")],
                    evaluate,
                    {"slo": "error_ratio", "use_case": use_case},
                )
            )
            continue
        model, sli = labels["model_name"], labels["slo"]
        metric = "vllm:time_to_first_token_seconds" if sli == "ttft" else "vllm:inter_token_latency_seconds"
        (le,) = re.findall(
            r'le="([0-9.]+)"',
            next(
                r["expr"]
                for g in cfg_groups
                for r in g["rules"]
                if r.get("record", "").startswith(f"model_name:vllm_{sli}_slow") and f'"{model}"' in r["expr"]
            ),
        )
        bucket = f'{metric}_bucket{{model_name="{model}",engine="0",le="{le}"}}'
        count = f'{metric}_count{{model_name="{model}",engine="0"}}'
        cases.append(
            (
                name,
                [(bucket, "0+50x120"), (count, "0+100x120")],
                [(bucket, "0+100x120"), (count, "0+100x120")],
                evaluate,
                {"slo": sli, "model_name": model},
            )
        )
    # a use case suspended by the kill switch answers 503 use_case_suspended: no budget spent;
    # the same 503s for want of keys burn it
    page = next(r for r in _alert_rules(cfg_groups) if r["labels"].get("slo") == "error_ratio")
    use_case = page["labels"]["use_case"]
    sel = f'{GW},use_case="{use_case}"'
    ok = (f'sovereign_gateway_requests_total{{{sel},status="200"}}', "0+90x120")
    unavailable = (f'sovereign_gateway_requests_total{{{sel},status="503"}}', "0+10x120")
    cases.append(
        (
            page["alert"],
            [
                ok,
                unavailable,
                (f'sovereign_gateway_unavailable_total{{{sel},code="key_unavailable"}}', "0+10x120"),
            ],
            [
                ok,
                unavailable,
                (f'sovereign_gateway_unavailable_total{{{sel},code="use_case_suspended"}}', "0+10x120"),
            ],
            "40m" if page["labels"]["severity"] == "page" else "100m",
            {"slo": "error_ratio", "use_case": use_case},
        )
    )
    return cases


def _expand(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)


def _unit_tests(groups: list[dict[str, Any]], cases: list[Case]) -> dict[str, Any]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in _alert_rules(groups):
        by_name.setdefault(rule["alert"], []).append(rule)
    tests = []
    for name, fire, quiet, evaluate, extra in cases:
        (rule,) = [r for r in by_name[name] if all(r["labels"].get(k, v) == v for k, v in extra.items())]
        exp_labels = {**extra, "severity": rule["labels"]["severity"]}
        assert set(exp_labels) <= alerts.LABELS
        annotations = {k: _expand(v, exp_labels) for k, v in rule["annotations"].items()}
        for series, expected in (
            (fire, [{"exp_labels": exp_labels, "exp_annotations": annotations}]),
            (quiet, []),
        ):
            tests.append(
                {
                    "name": f"{name} {extra} {'fires' if expected else 'stays quiet'}",
                    "interval": "1m",
                    "input_series": [{"series": s, "values": v} for s, v in series],
                    "alert_rule_test": [{"eval_time": evaluate, "alertname": name, "exp_alerts": expected}],
                }
            )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


def _overdue_tests() -> list[dict[str, Any]]:
    series = 'kube_cronjob_status_last_successful_time{namespace="openbao",cronjob="openbao-snapshot"}'
    labels = {"namespace": "openbao", "cronjob": "openbao-snapshot", "severity": "ticket"}
    return [
        {
            "name": f"OpenBaoSnapshotOverdue {'fires' if fire else 'stays quiet'}",
            "interval": "1m",
            # the last success stays at t=0 (overdue after 26 h), or follows the clock (every run succeeds)
            "input_series": [{"series": series, "values": "0x2000" if fire else "0+60x2000"}],
            "alert_rule_test": [
                {
                    "eval_time": "30h",
                    "alertname": "OpenBaoSnapshotOverdue",
                    "exp_alerts": [{"exp_labels": labels}] if fire else [],
                }
            ],
        }
        for fire in (True, False)
    ]


@needs_promtool
def test_every_alert_fires_on_its_series_and_stays_quiet_otherwise(
    groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    cases = _component_cases() + _slo_cases([g for g in groups if g["name"] != "sovereign-components"])
    document = _unit_tests(groups, cases)
    overdue = _overdue_tests()
    rule = next(r for r in _alert_rules(groups) if r["alert"] == "OpenBaoSnapshotOverdue")
    for test in overdue:
        for expected in test["alert_rule_test"][0]["exp_alerts"]:
            expected["exp_annotations"] = rule["annotations"]
    document["tests"] += overdue
    # etcd's snapshot alerts (monitoring.py): their cases live beside the kube-state-metrics config
    from tests.platform.test_monitoring_stack import _etcd_tests

    document["tests"] += _etcd_tests(parse("eu-central-prod", sections("eu-central-prod"), "test"))["tests"]
    tested = {t["alert_rule_test"][0]["alertname"] for t in document["tests"]}
    assert tested == {r["alert"] for r in _alert_rules(groups)}, "an alert without its promtool test"
    _write_rules(tmp_path, groups)
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@needs_promtool
def test_promtool_test_catches_an_alert_that_does_not_fire(
    groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    name, _, quiet, evaluate, extra = _component_cases()[0]
    document = _unit_tests(groups, [(name, quiet, quiet, evaluate, extra)])  # "fires" on the quiet series
    _write_rules(tmp_path, groups)
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert name in done.stdout + done.stderr
