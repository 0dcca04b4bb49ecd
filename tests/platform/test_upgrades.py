"""RKE2 upgrades under Pulumi's mocks: the system-upgrade-controller and its two Plans, each Plan
validated against the Plan CRD of the pinned controller release (upstream's generated file, byte
for byte), as strictly as the API server validates a custom resource."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import jsonschema
import pytest

from infra import images
from infra import plan as planner
from infra.k8s_platform import upgrades
from infra.policy import completeness
from tests.infra.support import fake_digest, plan_of, sections, with_digests

MIRROR = "registry.sovereign.example.de"  # endpoints.registry_mirror of eu-central-prod


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    """The example stack with the digests its operator sets after mirroring (platform.images)."""
    return plan_of(with_digests("eu-central-prod"), stack="eu-central-prod")


def _on_the_mirror(reference: str, upstream: str) -> images.Ref:
    """*reference* is *upstream* on the stack's mirror, pinned by its digest in platform.images."""
    assert completeness.image_problem(reference, MIRROR) is None, reference
    ref, source = images.parse(reference), images.parse(upstream)
    assert (ref.registry, ref.path, ref.tag) == (MIRROR, f"{source.registry}/{source.path}", source.tag)
    assert ref.digest == fake_digest(source.name)
    return ref


def _strict(node: Any) -> Any:
    """The CRD's structural schema with unknown fields refused. The API server prunes unknown
    fields of a custom resource, or refuses them with field validation Strict (kubectl's default
    since Kubernetes 1.27, KEP-2885); either way a misspelt field never reaches the controller."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def plan_schema() -> dict[str, Any]:
    crd = upgrades.plan_crd()
    assert crd["spec"]["group"] == "upgrade.cattle.io" and crd["spec"]["names"]["kind"] == "Plan"
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    schema: dict[str, Any] = _strict(served["schema"]["openAPIV3Schema"])
    return schema


def validate(obj: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(plan_schema()).validate(obj)


def plans(plan: planner.Plan) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in plan.kubernetes_objects() if o["kind"] == "Plan"}


def test_the_crd_is_the_pinned_release_s_own() -> None:
    digest = hashlib.sha256(upgrades.CRD_FILE.read_bytes()).hexdigest()
    assert digest == upgrades.CRD_SHA256  # pkg/crds/yaml/generated/upgrade.cattle.io_plans.yaml at v0.16.3


def test_both_plans_match_the_crd_schema(prod: planner.Plan) -> None:
    found = plans(prod)
    assert set(found) == {"rke2-server", "rke2-agent"}
    for obj in found.values():
        assert obj["apiVersion"] == "upgrade.cattle.io/v1"
        assert obj["metadata"]["namespace"] == "system-upgrade"
        validate(obj)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "concurency"), 1),  # misspelt
        (("spec", "drain", "deleteEmptyDirData"), True),  # wrong case: kubectl would keep emptyDirs
        (("spec", "concurrency"), "1"),
        (("spec", "upgrade"), None),  # required
    ],
)
def test_the_schema_check_refuses_what_the_api_server_refuses(
    prod: planner.Plan, path: tuple[str, ...], value: Any
) -> None:
    broken = copy.deepcopy(plans(prod)["rke2-agent"])
    *parents, leaf = path
    target = broken
    for key in parents:
        target = target[key]
    if value is None:
        del target[leaf]
    else:
        target[leaf] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_servers_then_agents_one_node_at_a_time_at_the_stack_s_version(prod: planner.Plan) -> None:
    found = plans(prod)
    server, agent = found["rke2-server"]["spec"], found["rke2-agent"]["spec"]
    for spec in (server, agent):
        assert spec["version"] == "v1.33.5+rke2r1"  # rke2.version of the stack
        assert spec["concurrency"] == 1 and spec["cordon"] is True
        # the upgrade image of that version (tag: the version with + as -), by digest from the mirror;
        # tagged already, so the controller does not append the version (container.go WithLatestTag)
        ref = _on_the_mirror(spec["upgrade"]["image"], "docker.io/rancher/rke2-upgrade:v1.33.5-rke2r1")
        assert ref.tag == spec["version"].replace("+", "-")
        assert spec["serviceAccountName"] == "system-upgrade"
    control_plane = {"key": "node-role.kubernetes.io/control-plane", "values": ["true"]}
    assert {**control_plane, "operator": "In"} in server["nodeSelector"]["matchExpressions"]
    assert {**control_plane, "operator": "NotIn"} in agent["nodeSelector"]["matchExpressions"]
    assert "drain" not in server  # etcd and the control plane restart in place
    assert agent["drain"]["deleteEmptydirData"] is True and agent["drain"]["timeout"] == "10m"
    # the agents wait for every server (prepare), with the same image as the upgrade itself
    assert agent["prepare"] == {"image": agent["upgrade"]["image"], "args": ["prepare", "rke2-server"]}
    # the GPU agents are tainted; the upgrade Job tolerates only "unschedulable" by itself
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in agent["tolerations"]


def test_a_new_rke2_version_moves_both_plans() -> None:
    config = sections("eu-central-prod")
    config["rke2"] = {**config["rke2"], "version": "v1.33.6+rke2r1"}
    moved = plan_of(with_digests("eu-central-prod") | {"rke2": config["rke2"]}, stack="eu-central-prod")
    found = plans(moved)
    assert {p["spec"]["version"] for p in found.values()} == {"v1.33.6+rke2r1"}
    # the new release's upgrade image has no digest yet: the Plans name it, and pulumi up stops
    assert {images.parse(p["spec"]["upgrade"]["image"]).tag for p in found.values()} == {"v1.33.6-rke2r1"}
    assert [b for b in moved.blockers if "docker.io/rancher/rke2-upgrade:v1.33.6-rke2r1" in b]


def test_the_controller_is_pinned_restricted_and_on_a_server(prod: planner.Plan) -> None:
    (deployment,) = [
        o
        for o in prod.kubernetes_objects()
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "system-upgrade-controller"
    ]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    _on_the_mirror(container["image"], f"docker.io/rancher/system-upgrade-controller:{upgrades.SUC_VERSION}")
    assert pod["metadata"]["labels"]["upgrade.cattle.io/controller"] == "system-upgrade-controller"
    assert not any("hostPath" in v for v in pod["spec"]["volumes"])
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert (
        terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "node-role.kubernetes.io/control-plane"
    )
    (config_map,) = [
        o for o in prod.kubernetes_objects() if o["metadata"]["name"] == "default-controller-env"
    ]
    # the cordon/drain Jobs' kubectl (upstream's default tag), by digest from the mirror too
    kubectl = config_map["data"]["SYSTEM_UPGRADE_JOB_KUBECTL_IMAGE"]
    _on_the_mirror(kubectl, "docker.io/rancher/kubectl:v1.30.3")
    (namespace,) = [
        o
        for o in prod.kubernetes_objects()
        if o["kind"] == "Namespace" and o["metadata"]["name"] == "system-upgrade"
    ]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_crd_is_declared_beside_the_plans(prod: planner.Plan) -> None:
    (crd,) = [o for o in prod.kubernetes_objects() if o["kind"] == "CustomResourceDefinition"]
    assert crd["metadata"]["name"] == "plans.upgrade.cattle.io"
    plan_resources = [r for r in prod.custom() if r.type == "kubernetes:upgrade.cattle.io/v1:Plan"]
    assert len(plan_resources) == 2
    for r in plan_resources:
        assert r.parent_type == "sovereign:platform:SystemUpgrade"


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against *labels*
    (k8s.io/apimachinery pkg/apis/meta/v1 LabelSelector semantics)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def test_a_plans_job_is_never_kept_off_a_node_by_the_controllers_anti_affinity(prod: planner.Plan) -> None:
    """The Job runs on the node it upgrades, the controller's server too: its pod labels (the
    Plan's, but those with "cattle.io/", plus the controller's own; v0.16.3 job.go) must not match
    the controller pod's required anti-affinity, which the scheduler applies to incoming pods
    (kube-scheduler interpodaffinity, satisfyExistingPodsAntiAffinity)."""
    (deployment,) = [
        o
        for o in prod.kubernetes_objects()
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "system-upgrade-controller"
    ]
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    controller_pod = deployment["spec"]["template"]["metadata"]["labels"]
    assert any(_matches(t["labelSelector"], controller_pod) for t in terms)  # the selector is live
    for name, obj in plans(prod).items():
        job_pod = {k: v for k, v in obj["metadata"]["labels"].items() if "cattle.io/" not in k}
        job_pod |= {
            "upgrade.cattle.io/controller": "system-upgrade-controller",
            "upgrade.cattle.io/plan": name,
        }
        assert not any(_matches(t["labelSelector"], job_pod) for t in terms), name
