"""`sovereign bootstrap-backend` against a real S3 server process on loopback (moto, with
authentication on): the three buckets, their settings, idempotence, Object Lock that holds,
and the clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import botocore.exceptions
import pytest

from infra import config, objectstore
from tests.storage.conftest import StackFactory
from tests.support import S3Server, sovereign


def bucket_names(cfg: config.StackConfig) -> dict[str, str]:
    return {plan.role: plan.name for plan in objectstore.buckets(cfg)}


def test_creates_the_three_buckets_with_their_settings(stack: StackFactory, s3: S3Server) -> None:
    cfg = stack(storage={"audit_retention_days": 30})
    reports = objectstore.bootstrap(cfg)
    assert [(r.plan.role, r.created) for r in reports] == [("state", True), ("models", True), ("audit", True)]
    client = s3.client()
    names = bucket_names(cfg)
    for name in names.values():
        assert client.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
        rules = client.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = client.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
    lifecycle = client.get_bucket_lifecycle_configuration(Bucket=names["state"])["Rules"]
    expiry = {r["ID"]: r for r in lifecycle}["sovereign-expire-old-state-versions"]
    assert expiry["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    lock = client.get_object_lock_configuration(Bucket=names["audit"])["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 30)


def test_a_second_run_changes_nothing(stack: StackFactory) -> None:
    cfg = stack()
    objectstore.bootstrap(cfg)
    again = objectstore.bootstrap(cfg)
    assert [(r.created, r.changed, r.unsupported) for r in again] == [(False, [], [])] * 3
    assert all("unchanged" in r.lines()[0] for r in again)


def test_a_changed_retention_is_applied_on_the_next_run(stack: StackFactory, s3: S3Server) -> None:
    cfg = stack(storage={"audit_retention_days": 30})
    objectstore.bootstrap(cfg)
    longer = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"audit_retention_days": 400})})
    audit = objectstore.bootstrap(longer)[2]
    assert audit.changed == ["object lock: COMPLIANCE, 400 days default retention"]
    lock = s3.client().get_object_lock_configuration(Bucket=bucket_names(cfg)["audit"])
    assert lock["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Days"] == 400


def test_object_lock_keeps_an_audit_segment_until_its_retention_ends(
    stack: StackFactory, s3: S3Server
) -> None:
    cfg = stack(storage={"audit_retention_days": 1})
    objectstore.bootstrap(cfg)
    client = s3.client()
    bucket = bucket_names(cfg)["audit"]
    put = client.put_object(Bucket=bucket, Key="gateway/x/000000000000.jsonl", Body=b"{}\n")
    head = client.head_object(Bucket=bucket, Key="gateway/x/000000000000.jsonl")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(hours=23)
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key="gateway/x/000000000000.jsonl", VersionId=put["VersionId"])


def test_an_existing_audit_bucket_without_object_lock_is_refused(stack: StackFactory, s3: S3Server) -> None:
    cfg = stack()
    s3.client().create_bucket(Bucket=bucket_names(cfg)["audit"])  # created by hand, without the lock
    with pytest.raises(objectstore.StorageError, match=r"without Object Lock.*new bucket name"):
        objectstore.bootstrap(cfg)


def test_bad_credentials_are_named_without_echoing_them(
    stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = stack()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(objectstore.StorageError) as caught:
        objectstore.bootstrap(cfg)
    message = str(caught.value)
    assert "refused the credentials (InvalidAccessKeyId)" in message and "AWS_ACCESS_KEY_ID" in message
    assert "AKIAWRONG" not in message and "not-the-secret" not in message


def test_an_endpoint_off_the_eu_allowlist_is_refused_before_any_request(stack: StackFactory) -> None:
    with pytest.raises(objectstore.StorageError, match="not on the EU allowlist"):
        objectstore.client("https://s3.us-east-1.amazonaws.com")
    with pytest.raises(config.StackConfigError, match=r"endpoints.object_storage.*not on the EU allowlist"):
        stack(endpoints={"object_storage": "https://s3.us-east-1.amazonaws.com"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"storage": {"audit_archive": None}}, "storage.audit_archive: not set"),
        ({"endpoints": {"pulumi_backend": "file:///srv/state"}}, "not an s3:// backend"),
    ],
)
def test_missing_bucket_settings_name_the_key(stack: StackFactory, changes: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(objectstore.StorageError, match=message):
        objectstore.bootstrap(stack(**changes))


def test_prod_refuses_governance_mode(stack: StackFactory) -> None:
    with pytest.raises(config.StackConfigError, match=r"storage\.audit_lock_mode.*needs COMPLIANCE"):
        stack(storage={"audit_lock_mode": "GOVERNANCE"}, region={"environment": "prod"})


def test_cli_prints_the_login_lines(stack: StackFactory, tmp_path: Path) -> None:
    cfg = stack("eu-cli")
    run = ["bootstrap-backend", "--stack", "eu-cli", "--stacks-dir", str(tmp_path / "stacks")]
    result = sovereign(*run, timeout=120)
    assert result.returncode == 0, result.stderr
    state = bucket_names(cfg)["state"]
    assert f"state   s3://{state}: created" in result.stdout
    assert (
        f"pulumi login 's3://{state}?endpoint=" in result.stdout and "s3ForcePathStyle=true'" in result.stdout
    )
    assert "--secrets-provider='hashivault://pulumi-eu-cli'" in result.stdout
    missing = sovereign(*run[:2], "eu-none", *run[3:], timeout=120)
    assert missing.returncode == 2 and "no such stack file" in missing.stderr  # bad input (README)
