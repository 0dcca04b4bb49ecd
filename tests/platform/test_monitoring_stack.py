"""The monitoring release's Alertmanager, kube-state-metrics and Grafana (monitoring.py), their
network policies (network_policies.py) and the etcd snapshot alerts under the real ``promtool``.

The values are the ones the program hands to Helm for eu-central-prod under Pulumi's mocks; what the
chart makes of them is rendered from the real templates by tests/platform/test_chart_render.py where
SOVEREIGN_CHART_DIR holds the pinned charts (skipped otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import images
from infra import plan as planner
from infra.config import StackConfig, parse
from infra.k8s_platform import alerts, cluster_services, monitoring
from infra.k8s_platform.network_policies import DNS_EGRESS, api_server_egress, receiver_egress
from infra.policy import charts
from infra.policy.charts import chart_name
from tests.infra.support import plan_of, sections, with_digests
from tests.platform.test_alert_rules import _expand, _promtool, _write_rules, needs_promtool

NS = "monitoring"
# the pods' labels as the chart and the operator set them (kube-prometheus-stack 88.5.3):
# Alertmanager's StatefulSet (prometheus-operator pkg/alertmanager/statefulset.go, operator.go),
# kube-state-metrics 8.4.0 templates/_helpers.tpl selectorLabels, grafana 12.11.1 grafana.selectorLabels
ALERTMANAGER_POD = {
    "app.kubernetes.io/name": "alertmanager",
    "alertmanager": "kube-prometheus-stack-alertmanager",
    "app.kubernetes.io/instance": "kube-prometheus-stack-alertmanager",
    "app.kubernetes.io/managed-by": "prometheus-operator",
}
KSM_POD = {
    "app.kubernetes.io/name": "kube-state-metrics",
    "app.kubernetes.io/instance": "kube-prometheus-stack",
}
GRAFANA_POD = {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": "kube-prometheus-stack"}
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"}
OPERATOR_POD = {"app": "kube-prometheus-stack-operator", "release": "kube-prometheus-stack"}
API_PEERS = {"10.43.0.1/32"} | {f"10.20.1.{11 + i}/32" for i in range(3)}  # eu-central-prod: 3 servers


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


@pytest.fixture(scope="module")
def cfg() -> StackConfig:
    return parse("eu-central-prod", sections("eu-central-prod"), "test")


@pytest.fixture(scope="module")
def kps(prod: planner.Plan) -> dict[str, Any]:
    (release,) = [
        r for r in prod.of_type(planner.HELM_RELEASE) if chart_name(r.inputs["chart"]) == monitoring.RELEASE
    ]
    assert release.inputs["version"] == "88.5.3"
    return dict(release.inputs["values"])


def _with_alerting(alerting: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(sections("eu-central-prod")))
    data["platform"]["alerting"] = alerting
    return data


def _keys(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, value) of a values tree."""
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in [(f"{path}{k}", v), *_keys(v, f"{path}{k}.")]]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in _keys(v, f"{path}{i}.")]
    return []


def _restricted(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """What Pod Security ``restricted`` would refuse in a pod-level and a container-level
    securityContext (kubernetes.io/docs/concepts/security/pod-security-standards, Restricted)."""
    problems = []
    if not (pod.get("runAsNonRoot") or container.get("runAsNonRoot")):
        problems.append("runAsNonRoot")
    if "RuntimeDefault" not in {
        (pod.get("seccompProfile") or {}).get("type"),
        (container.get("seccompProfile") or {}).get("type"),
    }:
        problems.append("seccompProfile")
    if container.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if (container.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("capabilities.drop")
    if container.get("privileged"):
        problems.append("privileged")
    if pod.get("runAsUser") == 0 or container.get("runAsUser") == 0:
        problems.append("runAsUser 0")
    return problems


def test_the_restricted_check_refuses_what_the_standard_refuses() -> None:
    pod = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    ok = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert _restricted(pod, ok) == []
    # grafana 12.11.1 values.yaml initChownData.securityContext: root with CHOWN, DAC_OVERRIDE
    init_chown = {"runAsNonRoot": False, "runAsUser": 0, "capabilities": {"add": ["CHOWN"], "drop": ["ALL"]}}
    assert set(_restricted({}, init_chown)) >= {"runAsNonRoot", "allowPrivilegeEscalation", "runAsUser 0"}


# --- 1. Alertmanager -------------------------------------------------------------------------------


def test_alertmanager_runs_the_stacks_configuration_and_nothing_of_the_charts_default(
    kps: dict[str, Any], cfg: StackConfig
) -> None:
    am = kps["alertmanager"]
    assert am["enabled"] is True
    config = am["config"]
    # every key of the chart's default config is set (values.yaml alertmanager.config): Helm merges
    # maps, so an unset key would keep the chart's Watchdog route, inhibitions or template glob
    assert set(config) == {"global", "route", "receivers", "inhibit_rules", "templates"}
    expected = alerts.alertmanager_config(cfg)
    assert config["route"] == expected["route"] and config["receivers"] == expected["receivers"]
    assert config["templates"] == [] and am["templateFiles"] == {}
    assert config["inhibit_rules"] == monitoring.INHIBIT_RULES
    # the inhibitions compare allowlisted labels only
    assert {label for r in config["inhibit_rules"] for label in r["equal"]} <= alerts.LABELS
    # Prometheus is wired to it by the chart (templates/prometheus/prometheus.yaml alerting.alertmanagers
    # when alertmanager.enabled), unless alerting is disabled or replaced: neither is
    spec = kps["prometheus"]["prometheusSpec"]
    assert "disableAlerting" not in spec and "alertingEndpoints" not in spec
    assert "agentMode" not in kps["prometheus"]


def test_alertmanager_routes_to_the_configured_receivers() -> None:
    data = _with_alerting(
        {"receivers": [{"name": "oncall", "url": "http://10.0.1.20:9095/hook", "severities": ["page"]}]}
    )
    config = monitoring.values(parse("eu-central-prod", data, "test"))["alertmanager"]["config"]
    assert [r["name"] for r in config["receivers"]] == ["null", "oncall"]
    assert config["route"]["routes"] == [
        {"receiver": "oncall", "matchers": ['severity=~"page"'], "continue": True}
    ]


def test_alertmanager_is_restricted_keeps_its_data_and_selects_no_alertmanagerconfig(
    kps: dict[str, Any],
) -> None:
    spec = kps["alertmanager"]["alertmanagerSpec"]
    # pod level here; each container's (no privilege escalation, drop ALL, read-only root) comes from
    # the operator (prometheus-operator v0.93.0 pkg/alertmanager/statefulset.go, config_reloader.go)
    operator_container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert _restricted(spec["securityContext"], operator_container) == []
    assert spec["replicas"] == 1  # no mesh port between peers (network policy)
    claim = spec["storage"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == cluster_services.DEFAULT_CLASS
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"] == "10Gi"
    # the chart renders alertmanagerConfigSelector: {} (every AlertmanagerConfig) unless set
    assert spec["alertmanagerConfigSelector"]["matchLabels"]


def test_the_completeness_check_knows_the_alertmanager_claim(kps: dict[str, Any]) -> None:
    facts = charts.kube_prometheus_stack(kps, monitoring.RELEASE)
    claims = {c.name: c.storage_class for c in facts.claims}
    assert claims == {"prometheus-db": "hcloud-volumes", "alertmanager-db": "hcloud-volumes"}


# --- 2. kube-state-metrics and the etcd snapshots -----------------------------------------------------


def test_kube_state_metrics_is_on_restricted_and_exports_the_etcd_snapshots(kps: dict[str, Any]) -> None:
    assert kps["kubeStateMetrics"] == {"enabled": True}
    ksm = kps["kube-state-metrics"]
    assert _restricted(ksm["securityContext"], ksm["containerSecurityContext"]) == []
    assert ksm["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    assert ksm["kubeRBACProxy"] == {"enabled": False}  # no second image, no extra port
    crs = ksm["customResourceState"]
    assert crs["enabled"] is True
    (resource,) = crs["config"]["spec"]["resources"]
    assert resource["groupVersionKind"] == {
        "group": "k3s.cattle.io",
        "version": "v1",
        "kind": "ETCDSnapshotFile",
    }
    assert resource["resourcePlural"] == "etcdsnapshotfiles"
    # k3s-io/api k3s.cattle.io/v1 types.go: spec.nodeName, status.creationTime/readyToUse/error.time
    assert resource["labelsFromPath"] == {
        "etcdsnapshotfile": ["metadata", "name"],
        "node": ["spec", "nodeName"],
    }
    paths = {m["name"]: m["each"]["gauge"]["path"] for m in resource["metrics"]}
    assert paths == {
        "creation_time_seconds": ["status", "creationTime"],
        "ready_to_use": ["status", "readyToUse"],
        "error_time_seconds": ["status", "error", "time"],
    }
    # exactly list/watch on the snapshots (the chart adds the CRD list/watch itself)
    assert ksm["rbac"]["extraRules"] == [
        {"apiGroups": ["k3s.cattle.io"], "resources": ["etcdsnapshotfiles"], "verbs": ["list", "watch"]}
    ]


def test_the_etcd_rules_read_the_metrics_kube_state_metrics_exports(cfg: StackConfig) -> None:
    """KSM names a metric <metricNamePrefix>_<name> (kube-state-metrics v2.20.0 customresourcestate
    docs, "Naming"): every series the etcd rules read is one of them."""
    (resource,) = monitoring.etcd_snapshot_metrics()["spec"]["resources"]
    exported = {f"{resource['metricNamePrefix']}_{m['name']}" for m in resource["metrics"]}
    used = {
        name
        for rule in monitoring.etcd_snapshot_alerts(cfg)
        for name in (
            monitoring.ETCD_SNAPSHOT_CREATED,
            monitoring.ETCD_SNAPSHOT_READY,
            monitoring.ETCD_SNAPSHOT_ERROR,
        )
        if name in rule["expr"]
    }
    assert used == exported


def test_the_etcd_alerts_have_the_shape_of_alerts_py(cfg: StackConfig) -> None:
    rules = monitoring.etcd_snapshot_alerts(cfg)
    assert [r["alert"] for r in rules] == ["EtcdSnapshotOverdue", "EtcdSnapshotFailing"]
    for rule in rules:
        alerts.check_rule(rule)
        assert rule["labels"] == {"severity": "ticket"}
        assert rule["annotations"]["runbook_url"] == "docs/runbooks/backups.md"
        assert set(rule["annotations"]) == alerts.ANNOTATIONS
    assert f"> {cfg.platform.alerting.backup_max_age_hours * 3600}" in rules[0]["expr"]


# --- promtool test rules --------------------------------------------------------------------------

SNAP = 'customresource_group="k3s.cattle.io",customresource_kind="ETCDSnapshotFile",customresource_version="v1",job="kube-state-metrics",namespace="monitoring"'  # noqa: E501


def _snap(metric: str, name: str, node: str) -> str:
    return f'{metric}{{{SNAP},etcdsnapshotfile="{name}",node="{node}"}}'


def _etcd_cases(hours: int) -> list[tuple[str, str, list[tuple[str, str]], str, list[dict[str, str]]]]:
    """(test name, alert, input series, eval time, the alerts' labels; [] when it must stay quiet)."""
    created, ready, error = (
        monitoring.ETCD_SNAPSHOT_CREATED,
        monitoring.ETCD_SNAPSHOT_READY,
        monitoring.ETCD_SNAPSHOT_ERROR,
    )
    late = f"{hours + 4}h"
    minutes = (hours + 5) * 60
    fresh = [  # one snapshot per node every minute, created "now", ready
        (_snap(created, "etcd-snapshot-n1", "n1"), f"0+60x{minutes}"),
        (_snap(ready, "etcd-snapshot-n1", "n1"), f"1x{minutes}"),
    ]
    stale = [  # taken at t=0 and nothing since
        (_snap(created, "etcd-snapshot-n1", "n1"), f"0x{minutes}"),
        (_snap(ready, "etcd-snapshot-n1", "n1"), f"1x{minutes}"),
    ]
    fresh_not_ready = [
        (_snap(created, "etcd-snapshot-n1", "n1"), f"0+60x{minutes}"),
        (_snap(ready, "etcd-snapshot-n1", "n1"), f"0x{minutes}"),
    ]
    failed_n2 = [
        *fresh,
        (_snap(ready, "etcd-snapshot-n2", "n2"), "0x60"),
        (_snap(error, "etcd-snapshot-n2", "n2"), "600x60"),
    ]
    old_failures_n2 = [  # n2 failed at t=0 (an error, and a record never ready); n1 fine since
        *fresh,
        (_snap(created, "etcd-snapshot-n2", "n2"), f"0x{minutes}"),
        (_snap(ready, "etcd-snapshot-n2", "n2"), f"0x{minutes}"),
        (_snap(error, "etcd-snapshot-n2", "n2"), f"0x{minutes}"),
    ]
    unrelated = [('up{job="kube-state-metrics"}', f"1x{minutes}")]
    return [
        ("overdue: every snapshot fresh", "EtcdSnapshotOverdue", fresh, late, []),
        ("overdue: the last snapshot too old", "EtcdSnapshotOverdue", stale, late, [{}]),
        ("overdue: fresh but not ready to use", "EtcdSnapshotOverdue", fresh_not_ready, late, [{}]),
        ("overdue: no snapshot known at all", "EtcdSnapshotOverdue", unrelated, "1h", [{}]),
        ("failing: every snapshot ready", "EtcdSnapshotFailing", fresh, "30m", []),
        ("failing: an error on n2", "EtcdSnapshotFailing", failed_n2, "30m", [{"node": "n2"}]),
        ("failing: not ready to use", "EtcdSnapshotFailing", fresh_not_ready, "30m", [{"node": "n1"}]),
        ("failing: n2's failure aged out", "EtcdSnapshotFailing", old_failures_n2, late, []),
        (
            "failing: n2's failure still recent",
            "EtcdSnapshotFailing",
            old_failures_n2,
            "1h",
            [{"node": "n2"}],
        ),
        ("overdue: a failed n2 beside a fresh n1", "EtcdSnapshotOverdue", failed_n2, "50m", []),
    ]


def _etcd_tests(cfg: StackConfig) -> dict[str, Any]:
    by_name = {r["alert"]: r for r in monitoring.etcd_snapshot_alerts(cfg)}
    tests = []
    for name, alert, series, evaluate, fired in _etcd_cases(cfg.platform.alerting.backup_max_age_hours):
        rule = by_name[alert]
        expected = []
        for extra in fired:
            labels = {**extra, "severity": "ticket"}
            annotations = {k: _expand(v, labels) for k, v in rule["annotations"].items()}
            expected.append({"exp_labels": labels, "exp_annotations": annotations})
        tests.append(
            {
                "name": name,
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [{"eval_time": evaluate, "alertname": alert, "exp_alerts": expected}],
            }
        )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


@needs_promtool
def test_the_etcd_alerts_pass_promtool_check(cfg: StackConfig, tmp_path: Path) -> None:
    _write_rules(tmp_path, [{"name": "etcd-snapshots", "rules": monitoring.etcd_snapshot_alerts(cfg)}])
    done = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_etcd_alerts_fire_on_their_series_and_stay_quiet_otherwise(
    cfg: StackConfig, tmp_path: Path
) -> None:
    _write_rules(tmp_path, [{"name": "etcd-snapshots", "rules": monitoring.etcd_snapshot_alerts(cfg)}])
    document = _etcd_tests(cfg)
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@needs_promtool
def test_promtool_catches_an_etcd_alert_that_should_have_fired(cfg: StackConfig, tmp_path: Path) -> None:
    """The same harness fails when a quiet case is told to fire: the passing run above means something."""
    _write_rules(tmp_path, [{"name": "etcd-snapshots", "rules": monitoring.etcd_snapshot_alerts(cfg)}])
    document = _etcd_tests(cfg)
    quiet = document["tests"][0]  # overdue: every snapshot fresh
    quiet["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "ticket"}}]
    document["tests"] = [quiet]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode != 0 and "EtcdSnapshotOverdue" in done.stdout + done.stderr


# --- 3. Grafana ---------------------------------------------------------------------------------------


def test_grafana_loads_dashboards_only_from_the_labelled_configmaps_of_the_namespace(
    kps: dict[str, Any],
) -> None:
    grafana = kps["grafana"]
    assert grafana["enabled"] is True
    label, value = monitoring.GRAFANA_DASHBOARD_LABEL
    dashboards = grafana["sidecar"]["dashboards"]
    assert dashboards["enabled"] is True
    assert (dashboards["label"], dashboards["labelValue"]) == (label, value)
    assert dashboards["searchNamespace"] == NS  # kube-prometheus-stack's default is ALL
    assert dashboards["resource"] == "configmap"  # the sidecar's default is both (Secrets too)
    # nothing else brings dashboards: the chart's own, dashboards in values, grafana.com
    assert grafana["defaultDashboardsEnabled"] is False and grafana["forceDeployDashboards"] is False
    assert grafana["dashboards"] == {} and grafana["dashboardProviders"] == {}
    assert not [
        k for k, _ in _keys(grafana) if k.rsplit(".", 1)[-1] in ("gnetId", "url") and "dashboards" in k
    ]
    # no plugins, from values or from a sidecar
    assert grafana["plugins"] == [] and grafana["sidecar"]["plugins"] == {"enabled": False}


def test_grafana_has_the_one_prometheus_datasource_the_dashboards_name(kps: dict[str, Any]) -> None:
    datasources = kps["grafana"]["sidecar"]["datasources"]
    assert datasources["enabled"] and datasources["defaultDatasourceEnabled"]
    assert datasources["uid"] == monitoring.GRAFANA_DATASOURCE_UID
    # the chart's default url: the in-cluster Prometheus Service
    # (kube-prometheus-stack templates/grafana/configmaps-datasources.yaml)
    assert "url" not in datasources
    assert datasources["alertmanager"] == {"enabled": False}
    assert datasources["createPrometheusReplicasDatasources"] is False
    assert not kps["grafana"].get("additionalDataSources")
    assert datasources["searchNamespace"] == NS and datasources["resource"] == "configmap"


def test_grafana_calls_nobody_home(kps: dict[str, Any]) -> None:
    ini = kps["grafana"]["grafana.ini"]
    assert ini["analytics"] == {
        "reporting_enabled": False,
        "check_for_updates": False,
        "check_for_plugin_updates": False,
        "feedback_links_enabled": False,
    }
    assert ini["news"] == {"news_feed_enabled": False}
    assert ini["security"]["disable_gravatar"] is True
    assert ini["snapshots"]["external_enabled"] is False
    assert ini["plugins"]["preinstall_disabled"] is True
    assert ini["plugins"]["plugin_admin_enabled"] is False
    assert ini["plugins"]["public_key_retrieval_disabled"] is True
    # no analytics endpoint configured anywhere
    assert not [
        k for k, v in _keys(ini) if ("analytics" in k or "rudderstack" in k) and isinstance(v, str) and v
    ]


def test_grafana_holds_no_password_and_keeps_the_charts_secret(kps: dict[str, Any]) -> None:
    grafana = kps["grafana"]
    assert not [k for k, _ in _keys(kps) if k.rsplit(".", 1)[-1].lower() in ("adminpassword", "password")]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in (grafana.get("env") or {})
    # the chart's Secret <release>-grafana (random password, kept on upgrade by lookup)
    assert grafana["admin"]["existingSecret"] == ""
    facts = charts.kube_prometheus_stack(kps, monitoring.RELEASE)
    assert ("Secret", "kube-prometheus-stack-grafana") in {(r.kind, r.name) for r in facts.creates}


def test_grafana_is_restricted_stateless_and_read_only(kps: dict[str, Any]) -> None:
    grafana = kps["grafana"]
    pod = grafana["securityContext"]
    for container in (grafana["containerSecurityContext"], grafana["sidecar"]["securityContext"]):
        assert _restricted(pod, container) == []
        assert container["readOnlyRootFilesystem"] is True
    # no init-chown-data (root with CHOWN/DAC_OVERRIDE) and no PVC: the data is an emptyDir
    assert grafana["persistence"] == {"enabled": False}
    assert grafana["initChownData"] == {"enabled": False}
    assert {m["mountPath"] for m in grafana["extraEmptyDirMounts"]} == {"/tmp", "/var/log/grafana"}
    # no test pod (its own image, bats), no image renderer
    assert grafana["testFramework"] == {"enabled": False} and grafana["imageRenderer"] == {"enabled": False}
    # the sidecars read this namespace only: a Role, not a ClusterRole over every Secret
    assert grafana["rbac"]["namespaced"] is True


def test_node_exporter_stays_off(kps: dict[str, Any]) -> None:
    assert kps["nodeExporter"] == {"enabled": False}


# --- 4. images ------------------------------------------------------------------------------------


def test_every_image_of_the_release_is_declared_and_mirrored(kps: dict[str, Any]) -> None:
    facts = charts.kube_prometheus_stack(kps, monitoring.RELEASE)
    components = {i.component for i in facts.images}
    assert components == {
        "prometheus-operator",
        "prometheus-config-reloader",
        "prometheus",
        "alertmanager",
        "kube-state-metrics",
        "grafana",
        "grafana-sidecar",
    }
    assert components == set(images.CHART_IMAGE_VALUES[monitoring.RELEASE])
    # an undeclared sub-chart's image stays a completeness finding: it is not in the table
    node = charts.kube_prometheus_stack({**kps, "nodeExporter": {"enabled": True}}, monitoring.RELEASE)
    assert {i.component for i in node.images} - set(images.CHART_IMAGE_VALUES[monitoring.RELEASE]) == {
        "nodeExporter"
    }


def test_with_digests_the_release_has_no_image_finding() -> None:
    plan = plan_of(with_digests(), stack="eu-central-prod")
    assert not [f for f in plan.findings if f.kind == "image" and "kube-prometheus-stack" in f.resource]
    (release,) = [
        r for r in plan.of_type(planner.HELM_RELEASE) if chart_name(r.inputs["chart"]) == monitoring.RELEASE
    ]
    for image in charts.kube_prometheus_stack(release.inputs["values"], monitoring.RELEASE).images:
        assert image.ref.startswith("registry.sovereign.example.de/") and "@sha256:" in image.ref, image


# --- 5. network policies ----------------------------------------------------------------------------


def _objects(plan: planner.Plan, kind: str, namespace: str) -> list[dict[str, Any]]:
    return [
        o
        for o in plan.kubernetes_objects()
        if o["kind"] == kind and o["metadata"].get("namespace") == namespace
    ]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _policy(plan: planner.Plan, pod: dict[str, str]) -> dict[str, Any]:
    (spec,) = [
        p["spec"]
        for p in _objects(plan, "NetworkPolicy", NS)
        if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], pod)
    ]
    return spec


def _flows(rules: list[dict[str, Any]], side: str) -> set[tuple[str, int | None]]:
    """(peer, port) of each rule: a pod of this namespace by its name label, another namespace, an
    address block, DNS (kube-system); port None for a rule without ports."""
    out = set()
    for rule in rules:
        for peer in rule[side]:
            if "ipBlock" in peer:
                name = peer["ipBlock"]["cidr"]
            elif "namespaceSelector" in peer:
                name = "ns:" + peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            else:
                labels = peer["podSelector"]["matchLabels"]
                name = labels.get("app.kubernetes.io/name") or labels.get("app", "")
            for port in rule.get("ports") or [{"port": None}]:
                out.add((name, port["port"]))
    return out


def test_the_monitoring_namespace_has_one_policy_per_pod(prod: planner.Plan) -> None:
    names = {p["metadata"]["name"] for p in _objects(prod, "NetworkPolicy", NS)}
    assert names == {
        "default-deny",
        "prometheus",
        "prometheus-operator",
        "alertmanager",
        "kube-state-metrics",
        "grafana",
    }
    # each selects exactly its pods
    for pod in (ALERTMANAGER_POD, KSM_POD, GRAFANA_POD, PROMETHEUS_POD, OPERATOR_POD):
        _policy(prod, pod)


def test_prometheus_reaches_alertmanager_kube_state_metrics_and_grafana(prod: planner.Plan) -> None:
    spec = _policy(prod, PROMETHEUS_POD)
    egress = _flows(spec["egress"], "to")
    assert {
        ("alertmanager", 9093),
        ("alertmanager", 8080),
        ("kube-state-metrics", 8080),
        ("grafana", 3000),
    } <= egress
    assert ("grafana", 9090) in _flows(spec["ingress"], "from")


def test_alertmanager_admits_prometheus_only_and_reaches_dns_only_without_receivers() -> None:
    data = sections("eu-central-prod")
    data["platform"]["alerting"] = {"receivers": []}  # the example names one: here none
    spec = _policy(plan_of(data, stack="eu-central-prod"), ALERTMANAGER_POD)
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert _flows(spec["ingress"], "from") == {("prometheus", 9093), ("prometheus", 8080)}
    assert spec["egress"] == [DNS_EGRESS]


def test_alertmanager_reaches_each_receiver_as_narrowly_as_its_url_allows() -> None:
    data = _with_alerting(
        {
            "receivers": [
                {"name": "bridge", "url": "http://10.0.1.20:9095/hook"},
                {"name": "relay", "url": "http://oncall-relay.ops.svc.cluster.local:8080/hook"},
                {"name": "team", "url": "https://alerts.example-ops.de/hook"},
                {"name": "team-tickets", "url": "https://alerts.example-ops.de/tickets"},
            ]
        }
    )
    residency = data.setdefault("residency", {})
    residency["extra_hosts"] = [
        *(residency.get("extra_hosts") or []),
        {"host": "alerts.example-ops.de", "jurisdiction": "DE", "operator": "Example Ops GmbH"},
    ]
    # its addresses, declared (documentation range, RFC 5737): NetworkPolicy matches no names
    data["egress"]["destinations"].append(
        {
            "name": "ops-alerts",
            "host": "alerts.example-ops.de",
            "cidrs": ["198.51.100.40/30"],
            "purpose": "alerts",
        }
    )
    cfg = parse("eu-central-prod", data, "test")
    assert receiver_egress(cfg) == [
        # an address: that address on its port
        {"to": [{"ipBlock": {"cidr": "10.0.1.20/32"}}], "ports": [{"protocol": "TCP", "port": 9095}]},
        # a Service: its namespace, any port (the pod's port after the DNAT is not in the URL)
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]},
        # a host name: its declared destination's addresses, the URL's (here the scheme's) port only;
        # listed once (issue #23: no longer any address)
        {"to": [{"ipBlock": {"cidr": "198.51.100.40/30"}}], "ports": [{"protocol": "TCP", "port": 443}]},
    ]
    plan = plan_of(data, stack="eu-central-prod")
    spec = _policy(plan, ALERTMANAGER_POD)
    assert spec["egress"] == [*receiver_egress(cfg), DNS_EGRESS]


def test_kube_state_metrics_is_scraped_by_prometheus_and_reaches_the_api_only(
    prod: planner.Plan, cfg: StackConfig
) -> None:
    spec = _policy(prod, KSM_POD)
    assert _flows(spec["ingress"], "from") == {("prometheus", 8080)}
    assert spec["egress"] == api_server_egress(cfg)
    assert {c for c, _ in _flows(spec["egress"], "to")} == API_PEERS


def test_grafana_reaches_prometheus_the_api_and_dns_only(prod: planner.Plan, cfg: StackConfig) -> None:
    spec = _policy(prod, GRAFANA_POD)
    assert _flows(spec["ingress"], "from") == {("prometheus", 3000)}
    assert spec["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": monitoring.PROMETHEUS_POD}}],
            "ports": [{"protocol": "TCP", "port": 9090}],
        },
        *api_server_egress(cfg),
        DNS_EGRESS,
    ]
    assert "0.0.0.0/0" not in {c for c, _ in _flows(spec["egress"], "to")}


# --- inhibitions, by Alertmanager's semantics --------------------------------------------------------
# prometheus/alertmanager v0.34.0 inhibit/inhibit.go: a target alert is muted when an active source
# alert matches the source matchers, the target matches the target matchers, and every `equal`
# label has the same value on both (a missing label is the empty string), and the two differ.


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    import re

    for matcher in matchers:
        name, op, value = re.fullmatch(r'(\w+)(=~|=)"(.*)"', matcher).groups()  # type: ignore[union-attr]
        got = labels.get(name, "")
        if not (re.fullmatch(value, got) if op == "=~" else got == value):
            return False
    return True


def _muted(target: dict[str, str], firing: list[dict[str, str]]) -> bool:
    return any(
        source != target
        and _matches(rule["source_matchers"], source)
        and _matches(rule["target_matchers"], target)
        and all(source.get(k, "") == target.get(k, "") for k in rule["equal"])
        for rule in monitoring.INHIBIT_RULES
        for source in firing
    )


def _firing(cfg: StackConfig, name: str, **labels: str) -> dict[str, str]:
    rule = next(r for g in alerts.rule_groups(cfg) for r in g["rules"] if r.get("alert") == name)
    return {"alertname": name, **rule["labels"], **labels}


def test_a_page_silences_the_ticket_of_the_same_slo_and_pod_only(cfg: StackConfig) -> None:
    fast = _firing(cfg, "ErrorBudgetBurnFast", use_case="patient-support")
    slow = _firing(cfg, "ErrorBudgetBurnSlow", use_case="patient-support")
    other = _firing(cfg, "ErrorBudgetBurnSlow", use_case="order-support")
    assert fast["severity"] == "page" and slow["severity"] == "ticket"
    assert _muted(slow, [fast]) and not _muted(other, [fast]) and not _muted(fast, [slow])
    model = {"model_name": "llama31-8b-awq"}
    assert _muted(_firing(cfg, "TtftBudgetBurnSlow", **model), [_firing(cfg, "TtftBudgetBurnFast", **model)])
    itl_slow = _firing(cfg, "InterTokenLatencyBudgetBurnSlow", **model)
    assert not _muted(itl_slow, [_firing(cfg, "TtftBudgetBurnFast", **model)])  # another SLO
    pod = {"namespace": "sovereign-gateway", "pod": "gw-1"}
    low = _firing(cfg, "GatewayAuditDiskLow", **pod)
    assert _muted(low, [_firing(cfg, "GatewayAuditDiskReserveCrossed", **pod)])
    assert not _muted(
        low, [_firing(cfg, "GatewayAuditDiskReserveCrossed", namespace="sovereign-gateway", pod="gw-2")]
    )


def test_an_unrelated_page_silences_no_ticket(cfg: StackConfig) -> None:
    """The trap: a page without use_case/model_name (NodeNotReady) would equal every ticket without
    them on those labels; the matchers keep it from muting them."""
    rules = [r for g in alerts.rule_groups(cfg) for r in g["rules"] if "alert" in r]
    where = {"node": "n1", "namespace": "openbao", "pod": "p", "gpu": "0"}
    pages = [_firing(cfg, r["alert"], **where) for r in rules
             if r["labels"]["severity"] == "page" and "slo" not in r["labels"]
             and r["alert"] != "GatewayAuditDiskReserveCrossed"]  # fmt: skip
    tickets = [_firing(cfg, r["alert"], **where) for r in rules
               if r["labels"]["severity"] == "ticket" and r["alert"] != "GatewayAuditDiskLow"]  # fmt: skip
    assert pages and tickets
    assert [t["alertname"] for t in tickets if _muted(t, pages)] == []


def test_prometheus_keeps_the_whole_slo_period(kps: dict[str, Any], cfg: StackConfig) -> None:
    """The error-budget panel reads the counters over slo_days: retention must reach back that far."""
    kept = int(kps["prometheus"]["prometheusSpec"]["retention"].removesuffix("d"))
    assert kept > cfg.platform.alerting.slo_days
    longer = cfg.model_copy(
        update={
            "platform": cfg.platform.model_copy(
                update={"alerting": cfg.platform.alerting.model_copy(update={"slo_days": 90})}
            )
        }
    )
    assert int(monitoring.retention(longer).removesuffix("d")) > 90
