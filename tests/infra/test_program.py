"""The real Pulumi program under ``pulumi.runtime.set_mocks``, for each example stack."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from infra import plan as planner
from infra.policy import rules
from tests.infra.support import EXAMPLES, plan_of, sections

SERVER = rules.SERVER


@pytest.fixture(scope="module", params=EXAMPLES)
def example(request: pytest.FixtureRequest) -> planner.Plan:
    return plan_of(sections(request.param), stack=request.param)


def test_every_example_stack_plans_cleanly(example: planner.Plan) -> None:
    assert example.violations == []
    assert len(example.of_type(SERVER)) >= 3


def test_every_location_is_in_the_eu(example: planner.Plan) -> None:
    located = [r for r in example.custom() if "location" in r.inputs or "networkZone" in r.inputs]
    assert located
    for r in located:
        assert r.inputs.get("location", "fsn1") in {"fsn1", "nbg1", "hel1"}, r.name
        assert r.inputs.get("networkZone", "eu-central") == "eu-central", r.name


def test_only_the_bastion_has_a_public_ipv4(example: planner.Plan) -> None:
    public = []
    for server in example.of_type(SERVER):
        nets = server.inputs["publicNets"]
        assert nets and nets[0]["ipv6Enabled"] is False
        if nets[0]["ipv4Enabled"]:
            public.append(server.inputs["labels"]["role"])
        else:
            assert server.inputs["networks"][0]["ip"].startswith(("10.20.1.", "10.30.1."))
    assert public == ["bastion"]


def test_private_nodes_route_out_through_the_bastion_nat(example: planner.Plan) -> None:
    (route,) = example.of_type("hcloud:index/networkRoute:NetworkRoute")
    (bastion,) = [s for s in example.of_type(SERVER) if s.inputs["labels"]["role"] == "bastion"]
    assert route.inputs["destination"] == "0.0.0.0/0"
    assert route.inputs["gateway"] == bastion.inputs["networks"][0]["ip"]
    assert "MASQUERADE" in bastion.inputs["userData"]
    node = next(s for s in example.of_type(SERVER) if s.inputs["labels"]["role"] == "worker")
    gateway = str(ipaddress.ip_network(example.config["network"]["ip_range"]).network_address + 1)
    assert f"ip route replace default via {gateway}" in node.inputs["userData"]


def test_every_server_gets_the_key_only_admin_user_the_roles_log_in_as(example: planner.Plan) -> None:
    keys = [k["public_key"] for k in example.config["admin"]["ssh_keys"]]
    for server in example.of_type(SERVER):
        doc = yaml.safe_load(server.inputs["userData"])
        (user,) = doc["users"]
        assert (user["name"], user["lock_passwd"], user["ssh_authorized_keys"]) == ("ops", True, keys)
        assert doc["disable_root"] is True and doc["ssh_pwauth"] is False


def test_firewalls_deny_by_default_and_allow_ssh_from_admins_to_the_bastion_only(
    example: planner.Plan,
) -> None:
    firewalls = {r.name.rsplit("-", 1)[-1]: r.inputs for r in example.of_type(rules.FIREWALL)}
    assert firewalls["nodes"]["rules"] == []
    assert "role in (control-plane,worker)" in firewalls["nodes"]["applyTos"][0]["labelSelector"]
    inbound = firewalls["bastion"]["rules"]
    admins = example.config["admin"]["cidrs"]
    assert {(r["protocol"], r.get("port")) for r in inbound} == {("tcp", "22"), ("icmp", None)}
    assert all(r["sourceIps"] == admins for r in inbound)
    assert firewalls["bastion"]["applyTos"][0]["labelSelector"].endswith("role=bastion")


def test_control_plane_size_and_placement(example: planner.Plan) -> None:
    cp = [s for s in example.of_type(SERVER) if s.inputs["labels"]["role"] == "control-plane"]
    assert len(cp) == example.config["control_plane"]["count"]
    groups = {r.id: r.inputs for r in example.of_type("hcloud:index/placementGroup:PlacementGroup")}
    assert {int(s.inputs["placementGroupId"]) for s in cp} == {
        int(i) for i, g in groups.items() if g["name"].endswith("control-plane")
    }
    assert all(g["type"] == "spread" for g in groups.values())


def test_every_labelled_resource_carries_residency_labels(example: planner.Plan) -> None:
    labelled = [r for r in example.custom() if r.type in rules.LABELLED]
    assert len(labelled) >= 8
    for r in labelled:
        labels = r.inputs["labels"]
        assert labels["residency"] == "eu" and labels["data-classification"] == "phi", r.name
        assert labels["stack"] == example.stack


def test_load_balancer_is_private(example: planner.Plan) -> None:
    (attachment,) = example.of_type(rules.LB_NETWORK)
    assert attachment.inputs["enablePublicInterface"] is False
    assert attachment.inputs["ip"] == example.config["load_balancer"]["private_ip"]
    (target,) = example.of_type("hcloud:index/loadBalancerTarget:LoadBalancerTarget")
    assert target.inputs["usePrivateIp"] is True and target.inputs["labelSelector"].endswith("role=worker")


def test_every_resource_has_a_component_parent(example: planner.Plan) -> None:
    for r in example.resources:
        if r.custom:
            assert r.parent_type and r.parent_type.startswith(("sovereign:infra:", "sovereign:platform:")), (
                r.urn
            )
        else:  # components sit under the stack or under another component (the platform layer)
            assert r.parent_type == "pulumi:pulumi:Stack" or r.parent_type.startswith("sovereign:"), r.urn


def test_kubeconfig_output_is_secret(example: planner.Plan) -> None:
    assert example.secret_outputs == ["kubeconfig"]
    assert example.to_json()["outputs"]["kubeconfig"] == "[secret]"


def test_prod_gpu_pool_is_wired_through_the_vswitch() -> None:
    prod = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    (network,) = prod.of_type("hcloud:index/network:Network")
    subnets = {s.inputs["type"]: s.inputs for s in prod.of_type(rules.SUBNET)}
    assert network.inputs["exposeRoutesToVswitch"] is True
    assert subnets["vswitch"]["vswitchId"] == 71234
    assert subnets["vswitch"]["ipRange"] == "10.20.2.0/24"
    assert int(subnets["vswitch"]["networkId"]) == int(network.id)
    assert [h["name"] for h in prod.declared_hosts] == ["gpu-fsn1-1", "gpu-fsn1-2"]
    assert prod.outputs["gpu_hosts"] == ["gpu-fsn1-1", "gpu-fsn1-2"]


def test_dr_without_gpu_servers_has_no_vswitch_subnet() -> None:
    dr = plan_of(sections("eu-north-dr"), stack="eu-north-dr")
    assert [s.inputs["type"] for s in dr.of_type(rules.SUBNET)] == ["cloud"]
    assert dr.declared_hosts == []


def test_rke2_bootstrap_runs_ansible_with_hosts_and_role_digest_as_triggers() -> None:
    prod = plan_of(sections("eu-central-prod"), stack="eu-central-prod", role_digest="a" * 64)
    (cmd,) = prod.of_type("command:local:Command")
    server_ids = {s.id for s in prod.of_type(SERVER)}
    triggers = cmd.inputs["triggers"]
    assert server_ids <= set(triggers)
    assert "roles:" + "a" * 64 in triggers and "robot:2345671" in triggers
    assert cmd.inputs["create"] == "sovereign converge --playbook playbooks/cluster.yml --token-stdin"
    assert cmd.parent_type == "sovereign:infra:Rke2Cluster"
    inventory = cmd.inputs["environment"]["SOVEREIGN_INVENTORY"]
    assert '"control_plane"' in inventory and "10.20.2.11" in inventory
    # the join token: generated once, a secret in state, redacted in the plan
    # (the memory store's passwords are RandomPasswords of the platform layer: memory_store.py)
    (token,) = [
        r for r in prod.of_type("random:index/randomPassword:RandomPassword")
        if r.parent_type == "sovereign:infra:Rke2Cluster"
    ]  # fmt: skip
    assert token.inputs["length"] == 64
    assert cmd.inputs["stdin"] == "[secret]" and cmd.inputs["create"].endswith("--token-stdin")
    # its stdout is the cluster-admin kubeconfig: never in the pulumi up log (Ansible's stderr is)
    assert cmd.inputs["logging"] == "stderr"


def test_a_role_change_changes_the_triggers() -> None:
    data = sections("eu-north-dr")
    before = plan_of(data, role_digest="1" * 64).of_type("command:local:Command")[0].inputs["triggers"]
    after = plan_of(data, role_digest="2" * 64).of_type("command:local:Command")[0].inputs["triggers"]
    assert before != after and len(before) == len(after)


def test_plan_is_deterministic() -> None:
    data = sections()
    first, second = plan_of(data).to_json(), plan_of(data).to_json()
    assert first == second
