"""Every Secret a pod mounts is created by the program (issue #19 item 5): the gateway's client keys
and the two object-storage keys from Pulumi stack secrets; a missing one stops `pulumi up` before
anything is created and is a warning in the plan; no value ever reaches plan.json or a log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from infra import plan as planner
from infra.k8s_platform import secrets as platform_secrets
from tests.infra.support import plan_of, sections
from tests.infra.test_entrypoint import pinned, run_entrypoint
from tests.infra.test_entrypoint import platform_secrets as stack_secret_values

MARKERS = {
    "gateway_client_keys": {"keys": [{"key_id": "k1", "tenant": "magento", "sha256": "c4n4ry-hash-0xF00D"}]},
    "models_s3_access_key": "AKCANARYMODELS000001",
    "models_s3_secret_key": "canary-models-secret-0xBEEF",
    "audit_s3_access_key": "AKCANARYAUDIT0000001",
    "audit_s3_secret_key": "canary-audit-secret-0xCAFE",
    "openbao_snapshot_s3_access_key": "AKCANARYSNAPSHOT0001",
    "openbao_snapshot_s3_secret_key": "canary-snapshot-secret-0xD00D",
    "openbao_snapshot_copy_s3_access_key": "AKCANARYSNAPCOPY0001",
    "openbao_snapshot_copy_s3_secret_key": "canary-snapshot-copy-secret-0xF1F1",
    "memory_backup_s3_access_key": "AKCANARYMEMORY000001",
    "memory_backup_s3_secret_key": "canary-memory-secret-0xC0DE",
}


def _referenced_secrets(plan: planner.Plan) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret a pod template or a ServiceMonitor refers to."""
    found: set[tuple[str, str]] = set()
    for obj in plan.kubernetes_objects():
        ns = obj["metadata"].get("namespace", "")
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"):
            template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else None
            spec = (template or obj["spec"]["template"])["spec"]
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    found.add((ns, volume["secret"]["secretName"]))
            for c in spec["containers"] + spec.get("initContainers", []):
                for env in c.get("env", []):
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        found.add((ns, ref["name"]))
        if obj["kind"] == "ServiceMonitor":
            for endpoint in obj["spec"]["endpoints"]:
                tls = endpoint.get("tlsConfig") or {}
                for part in (tls.get("ca"), tls.get("cert")):
                    if part and "secret" in part:
                        found.add((ns, part["secret"]["name"]))
                if "keySecret" in tls:
                    found.add((ns, tls["keySecret"]["name"]))
    return found


def _declared_secrets(plan: planner.Plan) -> set[tuple[str, str]]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in plan.kubernetes_objects()
        if o["kind"] == "Secret"
    }


@pytest.fixture(scope="module")
def prod() -> planner.Plan:
    return plan_of(sections("eu-central-prod") | MARKERS, stack="eu-central-prod")


def test_every_secret_a_pod_mounts_is_declared_by_the_program(prod: planner.Plan) -> None:
    referenced = _referenced_secrets(prod)
    assert {
        ("sovereign-gateway", "gateway-client-keys"),
        ("sovereign-gateway", "object-storage-audit"),
        ("sovereign-inference", "object-storage-read"),
        ("openbao", "object-storage-openbao-snapshot"),
        ("openbao", "object-storage-openbao-snapshot-copy"),
    } <= referenced
    assert referenced - _declared_secrets(prod) == set()


def test_a_plan_without_the_stack_secrets_still_declares_them_and_warns() -> None:
    plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    assert _referenced_secrets(plan) - _declared_secrets(plan) == set()
    platform = [b for b in plan.blockers if b.startswith("sovereign-llm:") and " is not set: " in b]
    assert [b.split(" is not set")[0] for b in platform] == [
        "sovereign-llm:gateway_client_keys",
        "sovereign-llm:models_s3_access_key",
        "sovereign-llm:models_s3_secret_key",
        "sovereign-llm:audit_s3_access_key",
        "sovereign-llm:audit_s3_secret_key",
        "sovereign-llm:openbao_snapshot_s3_access_key",
        "sovereign-llm:openbao_snapshot_s3_secret_key",
        "sovereign-llm:openbao_snapshot_copy_s3_access_key",
        "sovereign-llm:openbao_snapshot_copy_s3_secret_key",
        "sovereign-llm:memory_backup_s3_access_key",
        "sovereign-llm:memory_backup_s3_secret_key",
    ]
    # each names what needs it and the command that sets it
    assert "sovereign-gateway/gateway-client-keys" in platform[0]
    assert "sovereign gateway keys create --keys-file" in platform[0]
    assert "pulumi config set --secret sovereign-llm:gateway_client_keys" in platform[0]
    assert "read the model bucket" in platform[1] and "write to the audit archive" in platform[3]
    assert "openbao/object-storage-openbao-snapshot" in platform[5] and "openbao-snapshots/" in platform[5]
    # the copy location's key is a blocker of its own, naming its Secret and the copy's setting
    assert "openbao/object-storage-openbao-snapshot-copy" in platform[7]
    assert "storage.openbao_snapshot_copy" in platform[7]
    # the memory store's backup key (platform.memory_store), naming its Secret and the bucket's setting
    assert "sovereign-memory/memory-backup-s3" in platform[9]
    assert "platform.memory_store.backup_bucket" in platform[9]


def test_with_every_stack_secret_set_nothing_of_the_platform_blocks(prod: planner.Plan) -> None:
    assert not [b for b in prod.blockers if " is not set: a stack secret" in b]


def test_only_what_the_stack_deploys_needs_a_secret() -> None:
    dr = plan_of(sections("eu-north-dr"), stack="eu-north-dr")  # phase 1: nothing mounts them
    assert not [b for b in dr.blockers if " is not set: a stack secret" in b]
    assert not [o for o in dr.kubernetes_objects() if o["metadata"].get("name") == "gateway-client-keys"]
    data = sections("eu-central-prod")
    data["storage"] = {}  # no audit archive: no audit-ship sidecar, no archive keys
    plan = plan_of(data, stack="eu-central-prod")
    names = {name for _, name in _declared_secrets(plan)}
    assert "object-storage-audit" not in names and "object-storage-read" in names
    assert not [b for b in plan.blockers if "audit_s3" in b]


def test_no_secret_value_reaches_the_plan(prod: planner.Plan, tmp_path: Path) -> None:
    plan_path, k8s_path = planner.write(prod, tmp_path)
    written = plan_path.read_text() + k8s_path.read_text()
    for marker in ("c4n4ry-hash-0xF00D", "AKCANARYMODELS000001", "canary-models-secret-0xBEEF",
                   "AKCANARYAUDIT0000001", "canary-audit-secret-0xCAFE", "AKCANARYSNAPCOPY0001",
                   "canary-snapshot-copy-secret-0xF1F1", "AKCANARYMEMORY000001",
                   "canary-memory-secret-0xC0DE"):  # fmt: skip
        assert marker not in written
    secrets = {o["metadata"]["name"]: o for o in prod.kubernetes_objects() if o["kind"] == "Secret"}
    assert secrets["gateway-client-keys"]["stringData"] == {"keys.json": "[secret]"}
    assert secrets["object-storage-read"]["stringData"] == {"credentials": "[secret]"}
    assert secrets["object-storage-audit"]["stringData"] == {"credentials": "[secret]"}
    assert secrets["object-storage-openbao-snapshot-copy"]["stringData"] == {"credentials": "[secret]"}
    assert secrets["memory-backup-s3"]["stringData"] == dict.fromkeys(
        ("ACCESS_KEY_ID", "ACCESS_SECRET_KEY", "REGION"), "[secret]"
    )
    assert secrets["memory-store-dsn"]["stringData"] == {"dsn": "[secret]"}


def test_the_credentials_file_is_what_the_pods_s3_client_reads(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "credentials"
    path.write_text(platform_secrets._credentials_file("AKIDEXAMPLE", "wJalrXUtnFEMI"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    credentials = botocore.session.Session().get_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("AKIDEXAMPLE", "wJalrXUtnFEMI")


def test_a_key_store_that_is_not_one_is_refused_without_its_value() -> None:
    assert json.loads(platform_secrets.key_store('{"keys": []}')) == {"keys": []}
    with pytest.raises(ValueError) as refused:
        platform_secrets.key_store('["s3cr3t-value"]')
    assert "sovereign-llm:gateway_client_keys" in str(refused.value)
    assert "s3cr3t-value" not in str(refused.value)


def test_a_missing_stack_secret_stops_pulumi_up_before_anything_is_created() -> None:
    data = pinned()
    del data["models_s3_secret_key"]
    result = run_entrypoint(data, "file:///tmp/state")
    assert result.returncode == 1 and result.stdout == ""
    head, line = result.stderr.splitlines()[:2]
    assert head == "sovereign-llm: eu-central-prod (not deployable yet): invalid stack config:"
    assert line.strip().startswith("sovereign-llm:models_s3_secret_key is not set")
    for value in stack_secret_values().values():  # the others' values are not in the message
        if isinstance(value, str):
            assert value not in result.stderr


def test_a_deploy_logs_no_secret_value() -> None:
    data = pinned() | MARKERS
    result = run_entrypoint(data, "s3://state?endpoint=fsn1.your-objectstorage.com")
    assert result.returncode == 0, result.stderr
    for marker in ("c4n4ry-hash-0xF00D", "canary-models-secret-0xBEEF", "canary-audit-secret-0xCAFE"):
        assert marker not in result.stdout and marker not in result.stderr
