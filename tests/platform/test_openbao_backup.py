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
from infra.config import Rke2Config, StackConfigError, parse
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
    # the declared object storage of the bucket (fsn1) and of the copy (hel1), nothing else over HTTPS
    assert [peer["ipBlock"] for peer in https["to"]] == [{"cidr": "192.0.2.16/28"}, {"cidr": "192.0.2.32/28"}]
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


# -- the copy location (storage.openbao_snapshot_copy): eu-central-prod copies to the DR region, hel1 --
def test_the_cronjob_copies_to_the_dr_location_with_a_key_of_its_own(prod: planner.Plan) -> None:
    [config] = kube(prod, "ConfigMap", "openbao-snapshot-config")
    settings = openbao_backup.SnapshotSettings.model_validate(yaml.safe_load(config["data"]["snapshot.yaml"]))
    copy = settings.copy_target
    assert copy is not None
    assert (copy.endpoint, copy.bucket, copy.region) == (
        "https://hel1.your-objectstorage.com",
        "sovereign-openbao-snapshots-eu-central",
        "hel1",
    )
    # the same prefix, lock and retention as the primary; the stack's 35 days in both
    assert (copy.prefix, copy.lock_mode) == (settings.target.prefix, settings.target.lock_mode)
    assert copy.retention_days == settings.target.retention_days == 35
    assert settings.target.credentials_file is None  # the primary's: AWS_SHARED_CREDENTIALS_FILE
    # the copy's key is a second Secret, mounted where its settings say
    [cron] = kube(prod, "CronJob", "openbao-snapshot")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "snapshot-copy-keys"]
    assert volume["secret"]["secretName"] == platform_openbao.SNAPSHOT_COPY_CREDENTIALS
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "snapshot-copy-keys"]
    assert mount["readOnly"] is True
    assert str(copy.credentials_file) == f"{mount['mountPath']}/credentials"
    [secret] = kube(prod, "Secret", platform_openbao.SNAPSHOT_COPY_CREDENTIALS)
    assert secret["metadata"]["namespace"] == OPENBAO_NS
    assert secret["stringData"] == {"credentials": "[secret]"}
    minor = Rke2Config().version.removeprefix("v").split(".")
    for obj in (cron, secret, config):
        kubernetes_validate.validate(obj, f"{minor[0]}.{minor[1]}", strict=True)


def test_a_missing_copy_key_blocks_the_deploy_and_no_copy_needs_none(prod: planner.Plan) -> None:
    blockers = [b for b in prod.blockers if "openbao_snapshot_copy_s3_" in b]
    assert [b.split(" is not set")[0] for b in blockers] == [
        "sovereign-llm:openbao_snapshot_copy_s3_access_key",
        "sovereign-llm:openbao_snapshot_copy_s3_secret_key",
    ]
    assert all("openbao/object-storage-openbao-snapshot-copy" in b for b in blockers)
    data = sections("eu-central-prod")
    del data["storage"]["openbao_snapshot_copy"]
    plan = plan_of(data, stack="eu-central-prod")
    assert not [b for b in plan.blockers if "openbao_snapshot_copy" in b]
    assert not kube(plan, "Secret", platform_openbao.SNAPSHOT_COPY_CREDENTIALS)
    [cron] = kube(plan, "CronJob", "openbao-snapshot")
    assert "snapshot-copy-keys" not in str(cron)
    [config] = kube(plan, "ConfigMap", "openbao-snapshot-config")
    assert "copy_target" not in yaml.safe_load(config["data"]["snapshot.yaml"])


def _refused(storage: dict[str, Any]) -> str:
    data = sections("eu-central-prod")
    data["storage"] |= storage
    with pytest.raises(StackConfigError) as refused:
        parse("eu-central-prod", data, "test")
    return str(refused.value)


def test_the_copy_location_must_be_another_eu_location_and_the_retention_bounded() -> None:
    copy = sections("eu-central-prod")["storage"]["openbao_snapshot_copy"]
    same = _refused({"openbao_snapshot_copy": copy | {"endpoint": "https://FSN1.your-objectstorage.com/"}})
    assert "storage.openbao_snapshot_copy.endpoint" in same and "the same object storage" in same
    outside = _refused({"openbao_snapshot_copy": copy | {"endpoint": "https://s3.us-east-1.amazonaws.com"}})
    assert "storage.openbao_snapshot_copy.endpoint" in outside and "not on the EU allowlist" in outside
    not_url = _refused({"openbao_snapshot_copy": copy | {"endpoint": "file:///copies"}})
    assert "not an http(s):// S3 endpoint URL" in not_url and "file:///copies" not in not_url
    assert "FSN1" not in same  # the value is never repeated
    assert "openbao_snapshot_copy.bucket" in _refused({"openbao_snapshot_copy": copy | {"bucket": "A_B"}})
    assert "openbao_snapshot_retention_days" in _refused({"openbao_snapshot_retention_days": 0})
    no_archive = _refused({"audit_archive": None})
    assert "storage.openbao_snapshot_copy: set, but storage.audit_archive is not" in no_archive
    # another retention reaches both locations
    data = sections("eu-central-prod")
    data["storage"]["openbao_snapshot_retention_days"] = 14
    cfg = parse("eu-central-prod", data, "test")
    days = [openbao_backup.target(cfg, where).retention_days for where in openbao_backup.LOCATIONS]
    assert days == [14, 14]
