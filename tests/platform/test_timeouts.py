"""Pulumi waits as long as each workload may take to start (issue #19 item 6): customTimeouts and
Helm's `timeout` derived from the workloads' own probes and Job settings, not Pulumi's 10 minutes.

Each budget is recomputed here from the rendered manifests (the probes as Kubernetes runs them) or
from the charts' probes at the pinned versions, and compared with what the program registers: a
probe changed without its timeout (or the reverse) fails."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pulumi.runtime.mocks import MockMonitor

from infra import config
from infra import plan as planner
from infra.k8s_platform import common, gpu, inference, openbao
from infra.policy.charts import chart_name
from tests.infra.support import plan_of, sections

Timeouts = dict[str, tuple[int, int]]  # resource name -> (create, update) seconds


def _seconds(duration: str) -> int:
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return int(duration[:-1])


@pytest.fixture(scope="module")
def registered() -> tuple[planner.Plan, Timeouts]:
    """The prod plan and the customTimeouts of every registration (the mocks' MockResourceArgs
    leave resource options out: the monitor's request has them)."""
    seen: Timeouts = {}
    original = MockMonitor.RegisterResource

    def recording(self: MockMonitor, request: Any) -> Any:
        t = request.customTimeouts
        if t.create or t.update:
            seen[request.name] = (_seconds(t.create), _seconds(t.update))
        return original(self, request)

    MockMonitor.RegisterResource = recording  # type: ignore[method-assign]
    try:
        plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    finally:
        MockMonitor.RegisterResource = original  # type: ignore[method-assign]
    return plan, seen


def _one(plan: planner.Plan, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in plan.kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _probe(probe: dict[str, Any]) -> int:
    """Kubernetes' own reading: initialDelaySeconds + failureThreshold * periodSeconds (defaults 0, 3, 10)."""
    return probe.get("initialDelaySeconds", 0) + probe.get("failureThreshold", 3) * probe.get(
        "periodSeconds", 10
    )


def _ready(container: dict[str, Any]) -> int:
    first = container.get("startupProbe") or container.get("livenessProbe") or container["readinessProbe"]
    extra = (
        container["readinessProbe"].get("periodSeconds", 10)
        if first is not container["readinessProbe"]
        else 0
    )
    return _probe(first) + extra


def _timeouts_of(registered: tuple[planner.Plan, Timeouts], suffix: str) -> tuple[int, int]:
    _, seen = registered
    (name,) = [n for n in seen if n.endswith(suffix)]
    return seen[name]


def test_vllm_waits_for_its_twenty_minute_startup_probe(registered: tuple[planner.Plan, Timeouts]) -> None:
    plan, _ = registered
    cfg = config.parse("eu-central-prod", sections(), "test")
    model = cfg.platform.models[0]
    deployment = _one(plan, "Deployment", f"vllm-{model.name}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    startup = container["startupProbe"]
    assert _probe(startup) == 1200  # the 20 minutes the issue names
    verify = common.IMAGE_PULL_S + math.ceil(model.volume_gi * 1024 / inference.VERIFY_MIB_S)
    pod = common.VLLM_IMAGE_PULL_S + verify + _ready(container)
    create, update = _timeouts_of(registered, f"model-{model.name}-deployment")
    assert create == pod + common.STATUS_MARGIN_S > 600  # longer than Pulumi's default 10 minutes
    # a rolling update replaces one pod at a time (maxSurge 0), up to KEDA's max_replicas
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert update == model.max_replicas * pod + common.STATUS_MARGIN_S
    # and the Deployment itself does not declare ProgressDeadlineExceeded (600 s by default) first
    assert deployment["spec"]["progressDeadlineSeconds"] == pod


def test_the_weights_job_has_a_deadline_and_pulumi_outwaits_it(
    registered: tuple[planner.Plan, Timeouts],
) -> None:
    plan, _ = registered
    cfg = config.parse("eu-central-prod", sections(), "test")
    model = cfg.platform.models[0]
    job = _one(plan, "Job", f"weights-fetch-{model.name}")["spec"]
    attempts = job["backoffLimit"] + 1
    transfer = math.ceil(model.volume_gi * 1024 / inference.FETCH_MIB_S)
    backoff = sum(10 * 2**i for i in range(job["backoffLimit"]))
    assert job["activeDeadlineSeconds"] == common.IMAGE_PULL_S + attempts * transfer + backoff
    create, update = _timeouts_of(registered, f"model-{model.name}-fetch")
    assert create == update == job["activeDeadlineSeconds"] + common.STATUS_MARGIN_S > 600


def test_the_gateway_waits_for_its_startup_probe_per_pod(registered: tuple[planner.Plan, Timeouts]) -> None:
    plan, _ = registered
    cfg = config.parse("eu-central-prod", sections(), "test")
    spec = _one(plan, "StatefulSet", "gateway")["spec"]["template"]["spec"]
    pod = common.IMAGE_PULL_S + max(_ready(c) for c in spec["containers"])
    assert max(_ready(c) for c in spec["containers"]) == _ready(spec["containers"][0]) == 300 + 5
    create, update = _timeouts_of(registered, "gateway-statefulset")
    assert create == pod + common.STATUS_MARGIN_S
    assert update == cfg.platform.gateway.max_replicas * pod + common.STATUS_MARGIN_S


def _release(plan: planner.Plan, chart: str) -> planner.PlannedResource:
    (found,) = [r for r in plan.of_type(planner.HELM_RELEASE) if chart_name(r.inputs["chart"]) == chart]
    return found


@pytest.mark.parametrize(
    ("chart", "wait", "config_key"),
    [
        ("gpu-operator", gpu.GPU_OPERATOR_WAIT, "gpu_operator_version"),
        ("keda", gpu.KEDA_WAIT, "keda_version"),
    ],
)
def test_helm_waits_for_the_charts_own_probes(
    registered: tuple[planner.Plan, Timeouts], chart: str, wait: gpu.ChartWait, config_key: str
) -> None:
    plan, _ = registered
    release = _release(plan, chart)
    # the probes were read from the chart at the version the stacks pin: a chart upgrade re-reads them
    assert wait.version == release.inputs["version"] == getattr(config.PlatformConfig(), config_key)
    slowest = max(_ready(c) for c in wait.probes.values())
    assert release.inputs["timeout"] == common.IMAGE_PULL_S + slowest
    create, update = _timeouts_of(
        registered, {"gpu-operator": "gpu-gpu-operator", "keda": "autoscaling-keda"}[chart]
    )
    assert create == update == release.inputs["timeout"] + common.STATUS_MARGIN_S
    # the release is atomic: Helm waits (and rolls back on timeout), so the timeout is what counts
    assert release.inputs["atomic"] is True


def test_the_gpu_operator_needs_more_than_helms_default(registered: tuple[planner.Plan, Timeouts]) -> None:
    """node-feature-discovery's master may take its startup probe's 300 s: Helm's (and
    pulumi-kubernetes') default timeout of 300 s would roll the whole release back."""
    assert _probe(gpu.GPU_OPERATOR_WAIT.probes["nfd-master"]["startupProbe"]) == 300
    assert _release(registered[0], "gpu-operator").inputs["timeout"] > 300


def test_openbao_release_waits_for_the_readiness_probe_its_values_set(
    registered: tuple[planner.Plan, Timeouts],
) -> None:
    plan, _ = registered
    release = _release(plan, "openbao")
    probe = release.inputs["values"]["server"]["readinessProbe"]
    assert release.inputs["timeout"] == common.IMAGE_PULL_S + _probe(probe)
    create, _ = _timeouts_of(registered, "openbao-release")
    assert create == release.inputs["timeout"] + common.STATUS_MARGIN_S
    cfg = config.parse("eu-central-prod", sections(), "test")
    assert openbao.chart_wait(cfg).version == release.inputs["version"]


def test_every_workload_and_release_has_its_timeouts(registered: tuple[planner.Plan, Timeouts]) -> None:
    plan, seen = registered
    waited = [
        r.name
        for r in plan.custom()
        if r.type
        in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:batch/v1:Job")
        or r.type == planner.HELM_RELEASE
    ]
    # the system-upgrade-controller (upgrades.py) starts in seconds and has no probe (docs/platform.md)
    missing = [n for n in waited if n not in seen and not n.endswith("upgrades-controller")]
    assert missing == []


def test_a_probe_changed_without_its_timeout_is_caught() -> None:
    """The check above, against a vLLM container whose startup probe got longer."""
    container = {
        "startupProbe": {"periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {"periodSeconds": 5},
    }
    assert common.container_start_s(container) == _ready(container) == 1805
    registered_for_120 = common.VLLM_IMAGE_PULL_S + 1205
    assert registered_for_120 != common.VLLM_IMAGE_PULL_S + _ready(container)
