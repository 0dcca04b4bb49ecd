"""OpenBao as chart 0.19.1 really runs it (issue #19 item 3): a writable /tmp for its start script,
its ServiceMonitor on the port the chart names under TLS, no more members than nodes it may run
on, and the model publisher's policy in the cluster too.

The chart facts are quoted from github.com/openbao/openbao-helm at tag openbao-0.19.1
(charts/openbao/templates/_helpers.tpl and values.yaml); they are checked against the values
the program renders, not against the chart itself (nothing is fetched at test time)."""

from __future__ import annotations

from typing import Any

import pytest

from infra import config, openbao_contract
from infra.hosts import inventory
from infra.k8s_platform.openbao import helm_values
from tests.infra.support import plan_of, sections

# templates/_helpers.tpl, "openbao.args" (HA and standalone modes) at openbao-0.19.1, the script
# server-statefulset.yaml runs: `cp /openbao/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl;`
# then `sed -Ei ... /tmp/storageconfig.hcl` and `bao server -config=/tmp/storageconfig.hcl`
START_SCRIPT_WRITES = "/tmp/storageconfig.hcl"


def _server(stack: str = "eu-central-prod") -> dict[str, Any]:
    plan = plan_of(sections(stack), stack=stack)
    (release,) = [r for r in plan.helm_releases() if r["name"] == "openbao"]
    server: dict[str, Any] = release["values"]["server"]
    return server


def _writable(server: dict[str, Any], path: str) -> bool:
    """Whether *path* is on a writable volume of the server container, as the chart renders
    server.volumes / server.volumeMounts (toYaml, "openbao.volumes" / "openbao.mounts") and
    extraVolumes (read-only, under /openbao/userconfig)."""
    volumes = {v["name"]: v for v in server.get("volumes") or []}
    for mount in server.get("volumeMounts") or []:
        inside = path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/")
        if inside and not mount.get("readOnly") and "emptyDir" in volumes.get(mount["name"], {}):
            return True
    return False


def test_the_start_script_can_write_its_config_copy_under_a_read_only_root() -> None:
    server = _server()
    container = server["statefulSet"]["securityContext"]["container"]
    assert container["readOnlyRootFilesystem"] is True  # kept: the fix is a volume, not a writable root
    assert _writable(server, START_SCRIPT_WRITES)
    (tmp,) = [v for v in server["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["sizeLimit"]  # bounded


def test_without_the_tmp_volume_the_check_finds_the_crash_loop() -> None:
    server = _server()
    broken = {k: v for k, v in server.items() if k not in ("volumes", "volumeMounts")}
    assert not _writable(broken, START_SCRIPT_WRITES)
    read_only = {**server, "volumeMounts": [{**m, "readOnly": True} for m in server["volumeMounts"]]}
    assert not _writable(read_only, START_SCRIPT_WRITES)


def test_sealed_members_do_not_hold_helms_wait() -> None:
    """Members stay sealed (never Ready) until the custodians unseal them; Helm's wait skips a
    StatefulSet whose update strategy is not RollingUpdate (helm pkg/kube/ready.go)."""
    server = _server()
    assert server["updateStrategyType"] == "OnDelete"
    assert server["readinessProbe"]["enabled"] is True


def test_the_service_monitor_names_the_port_the_chart_gives_8200_under_tls() -> None:
    plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    (monitor,) = [
        o
        for o in plan.kubernetes_objects()
        if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "openbao"
    ]
    (endpoint,) = monitor["spec"]["endpoints"]
    # "openbao.scheme": "https" unless global.tlsDisable; the Services name port 8200 after it
    values: dict[str, Any] = helm_values(config.parse("eu-central-prod", sections(), "test"))
    assert values["global"]["tlsDisable"] is False
    assert endpoint["port"] == "https" and endpoint["scheme"] == "https"
    # the headless Service only (label openbao-internal): each member once, sealed ones included
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "openbao",
        "openbao-internal": "true",
    }


def test_more_openbao_members_than_nodes_is_refused_naming_the_fix() -> None:
    data = sections("eu-north-dr")
    data["platform"] = {"openbao": {"replicas": 3}}
    with pytest.raises(config.StackConfigError) as refused:
        config.parse("eu-north-dr", data, "test")
    (problem,) = [p for p in map(str, refused.value.problems) if "openbao.replicas" in p]
    assert problem.startswith("sovereign-llm:platform.openbao.replicas: 3")
    assert "may run on 2 node(s)" in problem and "set platform.openbao.replicas to 1" in problem
    data["workers"] = {**data["workers"], "count": 2}  # or add a worker
    assert config.parse("eu-north-dr", data, "test").platform.openbao.replicas == 3


@pytest.mark.parametrize("stack", ["eu-central-prod", "eu-north-dr"])
def test_the_example_stacks_fit_their_members_on_their_nodes(stack: str) -> None:
    cfg = config.parse(stack, sections(stack), "test")
    assert cfg.platform.openbao.replicas <= cfg.openbao_nodes()
    assert plan_of(sections(stack), stack=stack).helm_releases()


def test_the_node_count_matches_where_openbao_may_be_scheduled() -> None:
    """openbao_nodes() counts control plane and workers: true while only the GPU servers are tainted
    and OpenBao neither tolerates taints nor selects nodes. Changing either fails here."""
    cfg = config.parse("eu-central-prod", sections(), "test")
    server = _server()
    assert not server.get("tolerations") and not server.get("nodeSelector")
    (term,) = server["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    hosts = inventory.build(
        cfg,
        bastion_public_ip="198.51.100.1",
        control_plane={
            f"cp-{i}": str(cfg.network.control_plane_ip(i)) for i in range(cfg.control_plane.count)
        },
        workers={f"w-{i}": str(cfg.network.worker_ip(i)) for i in range(cfg.workers.count)},
        gpu_hosts=[],
    )
    groups = hosts["all"]["children"]
    assert "rke2_node_taints" not in groups["control_plane"]["vars"]
    assert "rke2_node_taints" not in groups["workers"]["vars"]
    assert groups["gpu"]["vars"]["rke2_node_taints"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert cfg.openbao_nodes() == cfg.control_plane.count + cfg.workers.count


def test_the_cluster_has_the_model_publisher_policy_of_the_local_stack() -> None:
    plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    policies = {r.inputs["name"]: r.inputs["policy"] for r in plan.of_type("vault:index/policy:Policy")}
    # the stack uses the default signing key: the very policy `make up` gives the dev server
    assert policies["sovereign-model-publisher"] == openbao_contract.PUBLISHER_POLICY
    data = sections("eu-central-prod")
    data["storage"] = {**data["storage"], "manifest_signing_key": "manifests-2027"}
    renamed = plan_of(data, stack="eu-central-prod")
    (policy,) = [
        r.inputs["policy"]
        for r in renamed.of_type("vault:index/policy:Policy")
        if r.inputs["name"] == "sovereign-model-publisher"
    ]
    assert 'path "transit/sign/manifests-2027"' in policy and 'path "transit/keys/manifests-2027"' in policy
    assert "model-manifests" not in policy


def test_the_gateway_settings_default_to_the_openbao_contract_names() -> None:
    """The gateway does not import the contract (its image is to carry only the gateway): its
    defaults restate the contract's mount, keys and kill-switch path, and must not drift from them."""
    from gateway.settings import IncidentSettings, OpenBaoSettings

    bao, incident = OpenBaoSettings(), IncidentSettings()
    assert (bao.transit_mount, bao.tenant_key, bao.audit_key) == (
        openbao_contract.TRANSIT_MOUNT, openbao_contract.TENANT_KEY, openbao_contract.AUDIT_KEY,
    )  # fmt: skip
    assert (incident.kv_mount, incident.path) == (openbao_contract.KV_MOUNT, openbao_contract.INCIDENT_PATH)
