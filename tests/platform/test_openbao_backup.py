"""The OpenBao Raft snapshot CronJob in the plan (docs/backup-restore.md): on its schedule, in the
OpenBao namespace, the gateway image's `sovereign openbao snapshot`, a Kubernetes-auth role whose
only policy reads snapshots, an object-storage key of its own, network flows to OpenBao and the
bucket only; restricted and valid against the Kubernetes schema like every other object."""

from __future__ import annotations

from typing import Any

import hvac
import kubernetes_validate
import pytest
import yaml

from infra import openbao_backup
from infra import plan as planner
from infra.config import Rke2Config
from infra.k8s_platform import openbao as platform_openbao
from infra.k8s_platform.common import OPENBAO_NS
from tests.infra.support import plan_of, sections
from tests.support import Bao


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod"), stack="eu-central-prod")


def kube(plan: planner.Plan, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in plan.kubernetes_objects()
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def resources(plan: planner.Plan, type_: str) -> list[dict[str, Any]]:
    return [r.inputs for r in plan.of_type(type_)]


def test_the_snapshot_cronjob_runs_the_snapshot_command_on_its_schedule(prod: planner.Plan) -> None:
    [cron] = kube(prod, "CronJob", "openbao-snapshot")
    assert cron["metadata"]["namespace"] == OPENBAO_NS
    spec = cron["spec"]
    assert spec["schedule"] == platform_openbao.SNAPSHOT_SCHEDULE and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["openbao", "snapshot", "--config", platform_openbao.SNAPSHOT_SETTINGS]
    [gateway] = kube(prod, "StatefulSet", "gateway")
    assert container["image"] == gateway["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["serviceAccountName"] == "openbao-snapshot" and pod["automountServiceAccountToken"] is False
    [token] = [v for v in pod["volumes"] if v["name"] == "sa-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "openbao"
    # the listener's CA only, not its private key from the same Secret
    [ca] = [v for v in pod["volumes"] if v["name"] == "openbao-ca"]
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    # its settings: the Object Lock bucket of storage.audit_archive, under the snapshot prefix
    [config] = kube(prod, "ConfigMap", "openbao-snapshot-config")
    settings = openbao_backup.SnapshotSettings.model_validate(yaml.safe_load(config["data"]["snapshot.yaml"]))
    assert settings.kubernetes_role == "openbao-snapshot"
    assert settings.target.bucket == "sovereign-audit-eu-central"
    assert settings.target.prefix == openbao_backup.SNAPSHOT_PREFIX
    assert settings.target.lock_mode == "COMPLIANCE"
    assert str(settings.ca_file) == platform_openbao.SNAPSHOT_CA


def test_the_snapshot_pod_is_restricted_and_every_object_matches_the_schema(prod: planner.Plan) -> None:
    [cron] = kube(prod, "CronJob", "openbao-snapshot")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
    minor = Rke2Config().version.removeprefix("v").split(".")
    names = {"openbao-snapshot", "openbao-snapshot-config", "object-storage-openbao-snapshot",
             "openbao-snapshot-egress", "openbao-from-snapshot"}  # fmt: skip
    checked = [o for o in prod.kubernetes_objects() if o["metadata"]["name"] in names]
    assert {o["kind"] for o in checked} >= {
        "CronJob",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
    }
    for obj in checked:
        kubernetes_validate.validate(obj, f"{minor[0]}.{minor[1]}", strict=True)
    broken = yaml.safe_load(yaml.safe_dump(cron))
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"  # not for a Job
    broken["spec"]["schedul"] = broken["spec"].pop("schedule")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, f"{minor[0]}.{minor[1]}", strict=True)


def test_the_snapshot_policy_reads_snapshots_and_nothing_else(prod: planner.Plan, bao: Bao) -> None:
    [policy] = [
        p for p in resources(prod, "vault:index/policy:Policy") if p["name"] == "sovereign-openbao-snapshot"
    ]
    # what a real OpenBao makes of the plan's policy: a token holding it alone
    root = hvac.Client(url=bao.address, token=bao.root)
    root.sys.create_or_update_policy("plan-snapshot-policy", policy["policy"])
    token = root.auth.token.create(policies=["plan-snapshot-policy"], no_parent=True)["auth"]["client_token"]
    paths = ["sys/storage/raft/snapshot", "sys/storage/raft/snapshot-force", "sys/storage/raft/configuration",
             "transit/decrypt/tenant-data", "transit/datakey/plaintext/audit-hmac", "sys/policy/root",
             "auth/token/create", "kv/data/gateway/x", "sys/seal"]  # fmt: skip
    answer = hvac.Client(url=bao.address, token=token).adapter.post(
        "/v1/sys/capabilities-self", json={"paths": paths}
    )
    capabilities = {path: answer["data"][path] for path in paths}
    assert capabilities.pop("sys/storage/raft/snapshot") == ["read"]
    assert set(map(tuple, capabilities.values())) == {("deny",)}, capabilities
    [role] = [
        r for r in resources(prod, "vault:kubernetes/authBackendRole:AuthBackendRole")
        if r["roleName"] == "openbao-snapshot"
    ]  # fmt: skip
    assert role["tokenPolicies"] == ["sovereign-openbao-snapshot"]
    assert role["boundServiceAccountNames"] == ["openbao-snapshot"]
    assert role["boundServiceAccountNamespaces"] == [OPENBAO_NS]
    # and no other role carries it
    others = [r for r in resources(prod, "vault:kubernetes/authBackendRole:AuthBackendRole") if r is not role]
    assert all("sovereign-openbao-snapshot" not in r["tokenPolicies"] for r in others)


def test_the_snapshot_pods_reach_openbao_and_the_bucket_only(prod: planner.Plan) -> None:
    [egress] = kube(prod, "NetworkPolicy", "openbao-snapshot-egress")
    assert egress["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "openbao-snapshot"}}
    rules = egress["spec"]["egress"]
    ports = sorted(p["port"] for r in rules for p in r["ports"])
    assert ports == [53, 53, 443, 8200]
    [https] = [r for r in rules if r["ports"] == [{"protocol": "TCP", "port": 443}]]
    assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]  # nothing in the cluster over HTTPS
    [admit] = kube(prod, "NetworkPolicy", "openbao-from-snapshot")
    assert admit["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8200}]


def test_the_object_storage_key_is_a_stack_secret_never_in_the_plan(prod: planner.Plan) -> None:
    [secret] = kube(prod, "Secret", platform_openbao.SNAPSHOT_CREDENTIALS)
    assert secret["metadata"]["namespace"] == OPENBAO_NS
    assert "aws_secret_access_key" not in str(secret)


def test_phase_one_and_stacks_without_a_bucket_have_no_snapshot_job() -> None:
    data = sections("eu-central-prod")
    data["platform"]["openbao"]["initialised"] = False
    assert not kube(plan_of(data, stack="eu-central-prod"), "CronJob")
    data = sections("eu-central-prod")
    data["storage"] = {}
    plan = plan_of(data, stack="eu-central-prod")
    assert not kube(plan, "CronJob") and not kube(plan, "NetworkPolicy", "openbao-snapshot-egress")
