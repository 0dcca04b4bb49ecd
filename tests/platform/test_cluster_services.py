"""Monitoring CRDs before their users, storage, the cloud controller (issue #19 items 1 and 2).

The chart facts are quoted from the charts at their pinned tags (infra/policy/charts.py names the
templates); they are checked against the values the program renders, and each defect the issue
found is reintroduced into the plan to show that the completeness check catches it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pulumi
import pytest

from infra import config, program
from infra import plan as planner
from infra.k8s_platform import cluster_services, monitoring
from infra.k8s_platform.common import GPU_NODE_LABEL
from infra.policy import completeness
from infra.policy.charts import chart_name
from tests.infra.support import plan_of, sections

STACKS = ("eu-central-prod", "eu-north-dr")


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


def _release(plan: planner.Plan, chart: str) -> planner.PlannedResource:
    (found,) = [r for r in plan.of_type(planner.HELM_RELEASE) if chart_name(r.inputs["chart"]) == chart]
    return found


def _check(resources: list[completeness.Resource], plan: planner.Plan) -> list[completeness.Finding]:
    mirror = "https://registry.sovereign.example.de"
    return [f for f in completeness.check(resources, registry_mirror=mirror) if f.kind != "image"]


def _without_dependency(plan: planner.Plan, on: str, of: Any) -> list[completeness.Resource]:
    """The plan's resources with the dependency on *on* (a URN) removed from those *of* selects."""
    return [
        replace(r, dependencies=tuple(d for d in r.dependencies if d != on)) if of(r) else r
        for r in planner.completeness_view(plan.resources)
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_the_example_stacks_have_no_crd_storage_or_reference_finding(stack: str) -> None:
    plan = plan_of(sections(stack), stack=stack)
    assert [f for f in plan.findings if f.kind in ("crd", "storage-class", "reference", "chart")] == []


def test_service_monitors_without_the_crd_provider_are_caught(prod: planner.Plan) -> None:
    release = _release(prod, "kube-prometheus-stack").urn
    resources = _without_dependency(prod, release, lambda r: r.type.endswith(":ServiceMonitor"))
    found = [f for f in _check(resources, prod) if f.kind == "crd"]
    assert len(found) == 3 and all("ServiceMonitor" in f.resource for f in found)
    assert all(
        "kube-prometheus-stack" in f.missing and "not among its dependencies" in f.missing for f in found
    )


@pytest.mark.parametrize("chart", ["keda", "gpu-operator"])
def test_releases_rendering_service_monitors_without_the_crd_provider_are_caught(
    prod: planner.Plan, chart: str
) -> None:
    release = _release(prod, "kube-prometheus-stack").urn
    user = _release(prod, chart).urn
    resources = _without_dependency(prod, release, lambda r: r.urn == user)
    (found,) = [f for f in _check(resources, prod) if f.kind == "crd"]
    assert f"chart {chart}" in found.resource and "ServiceMonitor" in found.missing


def test_without_the_monitoring_stack_nothing_installs_the_crd(prod: planner.Plan) -> None:
    release = _release(prod, "kube-prometheus-stack").urn
    resources = [r for r in planner.completeness_view(prod.resources) if r.urn != release]
    found = [f for f in _check(resources, prod) if f.kind == "crd"]
    # the five ServiceMonitors and the PrometheusRule of the alerts
    assert len(found) == 6 and all("nothing in the program installs it" in f.missing for f in found)


def test_the_weights_on_a_class_nothing_provides_is_caught() -> None:
    data = sections("eu-central-prod")
    data["platform"]["weights_storage_class"] = "longhorn"
    plan = plan_of(data, stack="eu-central-prod")
    found = [f for f in plan.findings if f.kind == "storage-class"]
    # one per model's weights volume: the chat model's and the embedding model's
    assert sorted(f.resource.split(" [")[0] for f in found) == [
        "PersistentVolumeClaim sovereign-inference/weights-bge-m3",
        "PersistentVolumeClaim sovereign-inference/weights-llama31-8b-awq",
    ]
    for finding in found:
        assert "'longhorn'" in finding.missing
        assert "local-path" in finding.fix and "hcloud-volumes" in finding.fix


def test_without_the_csi_driver_the_claims_without_a_class_are_caught(prod: planner.Plan) -> None:
    csi = _release(prod, "hcloud-csi").urn
    resources = [r for r in planner.completeness_view(prod.resources) if r.urn != csi]
    found = {f.resource.split(" [")[0] for f in _check(resources, prod) if f.kind == "storage-class"}
    # OpenBao's data and audit claims, the gateway's state volume, Prometheus's named class
    assert any("StatefulSet sovereign-gateway/gateway" in f for f in found)
    assert any("openbao" in f for f in found) and any("kube-prometheus-stack" in f for f in found)


def test_the_weights_volume_lands_on_a_gpu_server(prod: planner.Plan) -> None:
    objects = prod.kubernetes_objects()
    pvcs = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert len(pvcs) == 2  # the chat model's and the embedding model's
    for pvc in pvcs:
        assert pvc["spec"]["storageClassName"] == "local-path"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # local-path refuses ReadWriteMany
    for kind in ("Job", "Deployment"):
        workloads = [
            o for o in objects if o["kind"] == kind and o["metadata"]["namespace"] == "sovereign-inference"
        ]
        assert len(workloads) == 2
        for workload in workloads:
            spec = workload["spec"]["template"]["spec"]
            # a GPU server, the one the model's stack config names (config.py, gpu_server)
            assert spec["nodeSelector"][GPU_NODE_LABEL] == "true"
            assert spec["nodeSelector"]["kubernetes.io/hostname"] in ("gpu-fsn1-1", "gpu-fsn1-2")
            gpu_taint = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            assert gpu_taint in spec["tolerations"]
    values = _release(prod, "local-path-provisioner").inputs["values"]
    storage_class = values["storageClass"]
    assert storage_class["name"] == "local-path" and storage_class["defaultClass"] is False
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    assert storage_class["allowedTopologies"] == [
        {"matchLabelExpressions": [{"key": GPU_NODE_LABEL, "values": ["true"]}]}
    ]
    assert values["helperImage"]["tag"] != "latest"


def test_the_csi_driver_provides_the_default_class(prod: planner.Plan) -> None:
    release = _release(prod, "hcloud-csi")
    assert release.inputs["namespace"] == "kube-system"
    (storage_class,) = release.inputs["values"]["storageClasses"]
    assert storage_class["name"] == "hcloud-volumes" and storage_class["defaultStorageClass"] is True
    token = release.inputs["values"]["controller"]["hcloudToken"]["existingSecret"]
    assert token == {"name": "hcloud", "key": "token"}


def test_the_cloud_controller_uses_the_network_without_routes_or_robot(prod: planner.Plan) -> None:
    release = _release(prod, "hcloud-cloud-controller-manager")
    values = release.inputs["values"]
    assert release.inputs["namespace"] == "kube-system"
    assert values["networking"]["enabled"] is False  # the route controller: not with a vSwitch
    assert values["env"]["HCLOUD_NETWORK"]["valueFrom"]["secretKeyRef"] == {
        "name": "hcloud",
        "key": "network",
    }
    assert values["env"]["HCLOUD_NETWORK_ROUTES_ENABLED"] == {"value": "false"}
    assert values["robot"]["enabled"] is False
    assert values["args"]["controllers"] == "*,-cloud-node-lifecycle"
    (secret,) = [
        o for o in prod.kubernetes_objects() if o["kind"] == "Secret" and o["metadata"]["name"] == "hcloud"
    ]
    assert secret["metadata"]["namespace"] == "kube-system"
    assert set(secret["stringData"]) == {"token", "network"}
    assert secret["stringData"]["token"] == "[secret]"


def test_everything_else_waits_for_the_cloud_controller_and_storage(prod: planner.Plan) -> None:
    view = planner.completeness_view(prod.resources)
    program_ = completeness._Program(view)
    ccm = _release(prod, "hcloud-cloud-controller-manager").urn
    storage = {_release(prod, c).urn for c in ("hcloud-csi", "local-path-provisioner")}
    for r in program_.k8s:
        if r.type in (
            planner.HELM_RELEASE,
            "kubernetes:apps/v1:StatefulSet",
            "kubernetes:apps/v1:Deployment",
        ):
            if r.urn in storage or r.urn == ccm:
                continue
            assert ccm in program_.before(r), r.name
            assert storage <= program_.before(r), r.name


def test_prometheus_selects_every_service_monitor_and_keeps_its_data() -> None:
    cfg = config.parse("eu-central-prod", sections(), "test")
    spec = monitoring.values(cfg)["prometheus"]["prometheusSpec"]
    # kube-prometheus-stack values.yaml: true would select only ServiceMonitors labelled release=<name>
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == cluster_services.DEFAULT_CLASS
    values = monitoring.values(cfg)
    assert values["crds"]["enabled"] is True
    # Grafana and Alertmanager came with the operations issue (tests/platform/test_monitoring_stack.py)
    assert values["grafana"]["enabled"] is values["alertmanager"]["enabled"] is True


def test_keda_queries_the_prometheus_the_stack_installs(prod: planner.Plan) -> None:
    scaled = [o for o in prod.kubernetes_objects() if o["kind"] == "ScaledObject"]
    assert len(scaled) == 2  # the chat model's and the embedding model's
    release = _release(prod, "kube-prometheus-stack")
    for scaler in scaled:
        address = scaler["spec"]["triggers"][0]["metadata"]["serverAddress"]
        # prometheus-operated: the Service the operator makes for every Prometheus in its namespace
        assert address == f"http://prometheus-operated.{release.inputs['namespace']}.svc:9090"


@pytest.mark.parametrize(
    ("chart", "wait"),
    [
        ("hcloud-cloud-controller-manager", cluster_services.CCM_WAIT),
        ("hcloud-csi", cluster_services.CSI_WAIT),
        ("local-path-provisioner", cluster_services.LOCAL_PATH_WAIT),
        ("kube-prometheus-stack", monitoring.KUBE_PROMETHEUS_WAIT),
    ],
)
def test_each_release_waits_for_its_charts_probes(prod: planner.Plan, chart: str, wait: Any) -> None:
    release = _release(prod, chart)
    assert release.inputs["version"] == wait.version
    assert release.inputs["timeout"] == wait.budget_s() and release.inputs["atomic"] is True


def test_a_missing_hcloud_token_blocks_the_deploy() -> None:
    cfg = config.parse("eu-central-prod", sections(), "test")
    loop = asyncio.new_event_loop()  # get_secret makes an Output, which needs one
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_all_config({})
        assert any(b.startswith("hcloud:token is not set") for b in program.deploy_blockers(cfg))
        pulumi.runtime.set_all_config({"hcloud:token": "t"}, ["hcloud:token"])
        assert not any(b.startswith("hcloud:token") for b in program.deploy_blockers(cfg))
    finally:
        pulumi.runtime.set_all_config({})
        asyncio.set_event_loop(None)
        loop.close()
