"""`sovereign audit ship` and `audit verify` across the archive: sealed segments go to the Object
Lock bucket in order; the chain verifies across archived and local segments; gaps, altered
copies and a missing bucket are named. Real moto S3 server; the CLI test uses a real `bao`."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import AuditKey, AuditLog, local_segments, verify
from gateway.kms import KeyProvider
from gateway.settings import OpenBaoSettings
from infra import audit_archive, config, objectstore
from tests import support
from tests.storage.conftest import StackFactory
from tests.support import Bao, S3Server

KEY = os.urandom(32)


class StaticKeys:
    def current(self) -> AuditKey:
        return AuditKey(kid="kid-1", wrapped="wrapped-1", key=KEY)


def unwrap(wrapped: str) -> bytes:
    assert wrapped == "wrapped-1"
    return KEY


def write_trail(path: Path, records: int, keys: object = None) -> Path:
    log = AuditLog(path, keys or StaticKeys(), fsync=False, segment_max_bytes=1500)  # type: ignore[arg-type]
    for i in range(records):
        log.append({"request_id": f"r{i}", "status": 200, "pad": "x" * 200})
    log.close()
    return path


@pytest.fixture
def archive(stack: StackFactory) -> audit_archive.Archive:
    cfg = stack(storage={"audit_retention_days": 2})
    objectstore.bootstrap(cfg)
    return audit_archive.from_stack(cfg, "gateway-0")


def test_sealed_segments_are_shipped_in_order_under_object_lock(
    archive: audit_archive.Archive, tmp_path: Path, s3: S3Server
) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", 24)
    sealed = local_segments(trail)
    result = audit_archive.ship(trail, archive)
    assert len(result.shipped) == len(sealed) >= 3 and result.already == 0
    remote = audit_archive.archived(archive)
    assert [a.first for a in remote] == [first for first, _ in sealed]
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(remote))  # contiguous
    head = s3.client().head_object(Bucket=archive.bucket, Key=remote[0].key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["Metadata"]["first-seq"] == "0"
    again = audit_archive.ship(trail, archive)  # idempotent
    assert (again.shipped, again.already) == ([], len(sealed))


def test_after_pruning_the_chain_verifies_across_archive_and_local(
    archive: audit_archive.Archive, tmp_path: Path
) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", 24)
    result = audit_archive.ship(trail, archive, prune=True)
    left = local_segments(trail)
    assert len(left) == 1 and len(result.pruned) == len(result.shipped) - 1  # the newest stays
    local_only = verify(trail, unwrap)
    assert not local_only.ok and "are missing: no segment, local or archived" in local_only.message
    across = verify(trail, unwrap, archived=audit_archive.segments(archive))
    assert across.ok, across.message
    # the gateway goes on after a restart, from the newest segment it kept
    log = AuditLog(trail, StaticKeys(), fsync=False, segment_max_bytes=1500)
    for i in range(6):
        log.append({"request_id": f"later-{i}", "pad": "y" * 200})
    audit_archive.ship(trail, archive, prune=True)
    assert verify(trail, unwrap, archived=audit_archive.segments(archive)).ok


def test_a_gap_stops_shipping_and_names_the_missing_records(
    archive: audit_archive.Archive, tmp_path: Path
) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", 24)
    sealed = local_segments(trail)
    (gap_first, gap_file), (after, _) = sealed[1], sealed[2]
    gap_file.chmod(0o600)
    gap_file.unlink()  # lost before it was shipped
    with pytest.raises(objectstore.StorageError, match=rf"records {gap_first}-{after - 1} are missing after"):
        audit_archive.ship(trail, archive)
    assert [a.first for a in audit_archive.archived(archive)] == [0]  # what came before the gap is safe


def test_a_local_segment_altered_after_shipping_is_reported(
    archive: audit_archive.Archive, tmp_path: Path
) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", 24)
    audit_archive.ship(trail, archive)
    _, file = local_segments(trail)[0]
    file.chmod(0o600)
    file.write_text(file.read_text().replace('"status":200', '"status":403', 1))
    with pytest.raises(objectstore.StorageError, match="differs from its archived copy"):
        audit_archive.ship(trail, archive)
    result = verify(trail, unwrap, archived=audit_archive.segments(archive))
    assert not result.ok and "differs between" in result.message


def test_a_new_version_written_over_an_archived_segment_is_caught(
    archive: audit_archive.Archive, tmp_path: Path, s3: S3Server
) -> None:
    trail = write_trail(tmp_path / "audit.jsonl", 24)
    audit_archive.ship(trail, archive, prune=True)
    first = audit_archive.archived(archive)[0]
    client = s3.client()
    body = client.get_object(Bucket=archive.bucket, Key=first.key)["Body"].read()
    # Object Lock keeps the original version; a writer can still stack a new one on top
    client.put_object(
        Bucket=archive.bucket, Key=first.key, Body=body.replace(b'"status":200', b'"status":500', 1)
    )
    result = verify(trail, unwrap, archived=audit_archive.segments(archive))
    assert not result.ok
    assert (
        f"s3://{archive.bucket}/{first.key} line 2 (seq 1)" in result.message and "edited" in result.message
    )


def test_a_missing_archive_bucket_says_to_bootstrap(stack: StackFactory, tmp_path: Path) -> None:
    cfg = stack("eu-nobucket")
    trail = write_trail(tmp_path / "audit.jsonl", 12)
    with pytest.raises(
        objectstore.StorageError, match=r"does not exist.*bootstrap-backend --stack eu-nobucket"
    ):
        audit_archive.ship(trail, audit_archive.from_stack(cfg, "gateway-0"))
    unset = cfg.model_copy(update={"storage": config.StorageConfig()})
    with pytest.raises(objectstore.StorageError, match=r"storage\.audit_archive is not set"):
        audit_archive.from_stack(unset, "gateway-0")


def test_cli_ship_and_verify_across_the_archive_with_openbao_keys(
    stack: StackFactory, tmp_path: Path, bao: Bao
) -> None:
    cfg = stack("eu-audit")
    objectstore.bootstrap(cfg)
    keys = KeyProvider(OpenBaoSettings(address=bao.address, token=bao.gateway_token), tmp_path / "wrapped")
    asyncio.run(keys.refresh_audit_key())  # as the gateway does before it writes (a real transit data key)
    trail = write_trail(tmp_path / "audit.jsonl", 24, keys)
    where = ["--stack", "eu-audit", "--stacks-dir", str(tmp_path / "stacks"), "--chain", "gateway-0"]
    token = tmp_path / "auditor.token"
    token.write_text(bao.auditor_token)

    def sovereign(*args: str) -> subprocess.CompletedProcess[str]:
        return support.sovereign(*args, cwd=tmp_path)

    shipped = sovereign("audit", "ship", str(trail), *where, "--prune")
    assert shipped.returncode == 0, shipped.stderr
    assert "segment(s) shipped to s3://" in shipped.stdout and "local copies pruned" in shipped.stdout
    bao_flags = ["--openbao-address", bao.address, "--token-file", str(token)]
    verified = sovereign("audit", "verify", str(trail), *bao_flags, *where)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK ")
    local_only = sovereign("audit", "verify", str(trail), *bao_flags)
    assert local_only.returncode == 1 and "are missing" in local_only.stdout


def test_the_sidecar_mode_keeps_shipping_new_segments(stack: StackFactory, tmp_path: Path) -> None:
    cfg = stack("eu-sidecar")
    objectstore.bootstrap(cfg)
    archive = audit_archive.from_stack(cfg, "gateway-1")
    trail = write_trail(tmp_path / "audit.jsonl", 12)
    heartbeat = tmp_path / "alive"
    command = support.sovereign_argv(
        "audit", "ship", str(trail), "--stack", "eu-sidecar", "--stacks-dir", str(tmp_path / "stacks"),
        "--chain", "gateway-1", "--every", "0.2", "--heartbeat", str(heartbeat),
    )  # fmt: skip
    sidecar = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert sidecar.poll() is None, sidecar.stdout.read() if sidecar.stdout else ""
            assert time.monotonic() < deadline, f"the sidecar did not {what}"
            time.sleep(0.1)

    try:
        until(
            lambda: len(audit_archive.archived(archive)) == len(local_segments(trail)),
            "ship the first segments",
        )
        until(heartbeat.exists, "touch its heartbeat")
        write_trail(trail, 12)  # the gateway writes on and seals more segments
        until(
            lambda: len(audit_archive.archived(archive)) == len(local_segments(trail)),
            "ship the new segments",
        )
    finally:
        sidecar.terminate()
        sidecar.wait(timeout=10)
    assert verify(trail, unwrap, archived=audit_archive.segments(archive)).ok
