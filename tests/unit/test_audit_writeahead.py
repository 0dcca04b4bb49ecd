"""Write-ahead audit: a request's admit record is on disk before it is forwarded, its final
record completes it; a crash in between is completed as abandoned by the next process and
named by `verify` until then; a full disk fails the writability check whatever the reserve."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.audit import (
    RECORD_HEADROOM_BYTES,
    AuditLog,
    AuditWriteError,
    VerifyResult,
    local_segments,
    verify,
)
from tests.unit.test_audit import StaticKeys, unwrap


def admit_fields(request_id: str, tenant: str = "acme") -> dict[str, Any]:
    """What the gateway records right before it forwards a request (no text, ever)."""
    return {
        "request_id": request_id,
        "tenant": tenant,
        "key_id": "k1",
        "use_case": "triage",
        "policy_version": "1+abc",
        "model": "small",
        "upstream_model": "m",
        "weights_sha256": "0" * 64,
        "stream": True,
        "bytes": {"request": 120},
    }


def final_fields(request_id: str, tenant: str = "acme", outcome: str = "ok") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant": tenant,
        "use_case": "triage",
        "outcome": outcome,
        "status": 200,
    }


def records(trail: Path) -> list[dict[str, Any]]:
    found = []
    for _, file in local_segments(trail):
        found += [json.loads(line) for line in file.read_text().splitlines()]
    if trail.exists():
        found += [json.loads(line) for line in trail.read_text().splitlines()]
    return found


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def test_admit_then_complete_verifies_with_nothing_unfinished(trail: Path) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False)
    admitted = log.admit(admit_fields("r1"))
    assert admitted["kind"] == "admit" and admitted["request_id"] == "r1"
    assert log.unfinished == ["r1"]
    done = log.append(final_fields("r1"))
    assert done["kind"] == "request"
    assert log.unfinished == []
    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.records == 3  # key, admit, request
    assert (result.unfinished, result.abandoned) == ([], [])
    assert result.report() == [f"OK {result.message}"]


def test_the_admit_is_durable_like_a_request_record(trail: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    log = AuditLog(trail, StaticKeys(), fsync=True)
    log.admit(admit_fields("r1"))
    assert len(synced) == 2  # the key record and the admit, each on disk before admit() returns
    assert [r["kind"] for r in records(trail)] == ["key", "admit"]


def test_an_admit_without_completion_is_named_by_id(trail: Path) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False)
    log.admit(admit_fields("r-done"))
    log.admit(admit_fields("r-open"))
    log.append(final_fields("r-done"))
    log.append(final_fields("r-refused", outcome="rejected"))  # refused before forwarding: no admit
    assert log.unfinished == ["r-open"]
    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.unfinished == ["r-open"] and result.abandoned == []
    report = result.report()
    assert report[0].startswith("OK ")
    assert report[1] == (
        "1 request was forwarded to the model and has no final record "
        "(in flight now, or lost in a crash): r-open"
    )


def test_a_reused_request_id_is_counted_per_admit(trail: Path) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False)
    log.admit(admit_fields("same"))
    log.admit(admit_fields("same"))
    log.admit(admit_fields("same", tenant="other"))
    log.append(final_fields("same"))
    assert log.unfinished == ["same", "same"]  # one of acme's, and other's
    log.append(final_fields("same", tenant="other"))
    assert log.unfinished == ["same"]
    assert verify(trail, unwrap).unfinished == ["same"]


def test_admit_needs_a_request_id(trail: Path) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False)
    with pytest.raises(ValueError, match="request_id"):
        log.admit({"tenant": "acme"})


def test_a_crash_between_admit_and_end_is_completed_as_abandoned(trail: Path) -> None:
    crashed = AuditLog(trail, StaticKeys(), fsync=False)
    crashed.admit(admit_fields("r-done"))
    crashed.append(final_fields("r-done"))
    lost = crashed.admit(admit_fields("r-lost"))
    del crashed  # kill -9: no final record for r-lost

    assert verify(trail, unwrap).unfinished == ["r-lost"]  # named until the gateway restarts

    restarted = AuditLog(trail, StaticKeys(), fsync=False)
    assert restarted.unfinished == ["r-lost"]
    restarted.append(final_fields("r-next"))
    assert restarted.unfinished == []
    abandoned = [r for r in records(trail) if r.get("outcome") == "abandoned"]
    assert len(abandoned) == 1
    (record,) = abandoned
    assert record["kind"] == "request" and record["request_id"] == "r-lost"
    assert record["status"] is None and record["admit_seq"] == lost["seq"]
    assert (record["tenant"], record["use_case"], record["key_id"], record["model"]) == (
        "acme", "triage", "k1", "small",
    )  # fmt: skip
    kinds = [(r["kind"], r.get("request_id")) for r in records(trail)][-2:]
    assert kinds == [("request", "r-lost"), ("request", "r-next")]  # before the new process's own

    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.unfinished == [] and result.abandoned == ["r-lost"]
    assert result.report()[1] == (
        "1 request was ended by a restart after a crash (outcome abandoned): r-lost"
    )

    again = AuditLog(trail, StaticKeys(), fsync=False)  # a second restart completes nothing twice
    assert again.unfinished == []
    again.admit(admit_fields("r-after"))
    assert [r.get("outcome") for r in records(trail)].count("abandoned") == 1


def test_abandoned_completions_come_first_also_before_an_admit(trail: Path) -> None:
    crashed = AuditLog(trail, StaticKeys(), fsync=False)
    crashed.admit(admit_fields("a"))
    crashed.admit(admit_fields("b"))
    restarted = AuditLog(trail, StaticKeys(), fsync=False)
    assert restarted.finish_abandoned() == ["a", "b"]
    assert restarted.finish_abandoned() == []
    restarted.admit(admit_fields("c"))
    assert restarted.unfinished == ["c"]
    result = verify(trail, unwrap)
    assert result.ok and result.unfinished == ["c"] and result.abandoned == ["a", "b"]


def test_a_restart_with_a_fresh_audit_key_signs_the_abandoned_records_with_it(trail: Path) -> None:
    crashed = AuditLog(trail, StaticKeys(), fsync=False)
    crashed.admit(admit_fields("r-lost"))
    keys = StaticKeys()
    keys.wrapped = "wrapped-2"
    AuditLog(trail, keys, fsync=False).append(final_fields("r-next"))
    tail = records(trail)[-3:]
    assert tail[0]["kind"] == "key" and {r["kid"] for r in tail} == {"kid-wrapped-2"}
    result = verify(trail, unwrap)
    assert result.ok and result.abandoned == ["r-lost"]


# -- segments ---------------------------------------------------------------------------------


def test_admit_and_completion_in_different_segments(trail: Path) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False, segment_max_bytes=1500)
    log.admit(admit_fields("long"))
    for i in range(12):  # other requests fill and seal segments while "long" streams
        log.admit(admit_fields(f"r{i}"))
        log.append({**final_fields(f"r{i}"), "pad": "x" * 200})
    assert len(local_segments(trail)) >= 2
    assert log.unfinished == ["long"]
    assert verify(trail, unwrap).unfinished == ["long"]
    log.append(final_fields("long"))
    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.unfinished == [] and result.abandoned == []


def test_a_crash_after_the_admits_segment_was_sealed(trail: Path) -> None:
    """The admit is in the newest sealed segment, the active file has other records."""
    crashed = AuditLog(trail, StaticKeys(), fsync=False)
    crashed.admit(admit_fields("r-lost"))
    crashed.seal()
    crashed.append(final_fields("r-other"))
    assert trail.exists() and len(local_segments(trail)) == 1
    restarted = AuditLog(trail, StaticKeys(), fsync=False)
    assert restarted.unfinished == ["r-lost"]
    restarted.append(final_fields("r-next"))
    result = verify(trail, unwrap)
    assert result.ok and result.unfinished == [] and result.abandoned == ["r-lost"]


def test_a_crash_right_after_a_seal_resumes_from_the_sealed_segment(trail: Path) -> None:
    crashed = AuditLog(trail, StaticKeys(), fsync=False)
    crashed.admit(admit_fields("r-done"))
    crashed.append(final_fields("r-done"))
    crashed.admit(admit_fields("r-lost"))
    crashed.seal()
    assert not trail.exists()
    restarted = AuditLog(trail, StaticKeys(), fsync=False)
    assert restarted.next_seq == crashed.next_seq
    assert restarted.unfinished == ["r-lost"]
    restarted.admit(admit_fields("r-next"))
    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.unfinished == ["r-next"] and result.abandoned == ["r-lost"]


# -- a disk that cannot take a record -----------------------------------------------------------


def full_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    stat = SimpleNamespace(f_bavail=free // 4096, f_frsize=4096)
    monkeypatch.setattr(os, "statvfs", lambda path: stat)


def test_a_full_disk_is_not_writable_even_without_a_reserve(
    trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False, min_free_bytes=0)
    log.check_writable()
    assert log.space_ok()
    full_disk(monkeypatch, 0)
    with pytest.raises(AuditWriteError) as raised:
        log.check_writable()  # opening for append still succeeds: only free space tells
    least = RECORD_HEADROOM_BYTES // 1024
    assert raised.value.reason == f"below the reserve (audit.min_free_bytes, at least {least} KiB)"
    assert str(trail) in str(raised.value)
    assert not log.space_ok()


def test_the_headroom_applies_below_it_and_the_reserve_above_it(
    trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_disk(monkeypatch, RECORD_HEADROOM_BYTES - 4096)
    least = RECORD_HEADROOM_BYTES // 1024
    with pytest.raises(AuditWriteError, match=rf"below the reserve \({least} KiB: .* at least {least} KiB"):
        AuditLog(trail, StaticKeys(), fsync=False, min_free_bytes=1024).check_writable()
    full_disk(monkeypatch, RECORD_HEADROOM_BYTES)
    AuditLog(trail, StaticKeys(), fsync=False, min_free_bytes=0).check_writable()
    reserve = AuditLog(trail, StaticKeys(), fsync=False, min_free_bytes=RECORD_HEADROOM_BYTES * 4)
    with pytest.raises(AuditWriteError) as raised:
        reserve.check_writable()
    assert f"below the reserve ({least * 4} KiB: audit.min_free_bytes" in str(raised.value)
    assert str(trail) not in raised.value.reason


# -- sovereign audit verify -----------------------------------------------------------------------


def run_verify(trail: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> int:
    from gateway import kms
    from infra import cli

    monkeypatch.setattr(kms, "transit_unwrapper", lambda *args: unwrap)  # no OpenBao here
    token = trail.parent / "auditor.token"
    token.write_text("t\n")
    argv = ["audit", "verify", str(trail), "--openbao-address", "http://127.0.0.1:1"]
    return cli.main([*argv, "--token-file", str(token), *flags])


def test_cli_names_unfinished_and_abandoned_requests(
    trail: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    crashed = AuditLog(trail, StaticKeys(), fsync=False)
    crashed.admit(admit_fields("r-lost"))
    restarted = AuditLog(trail, StaticKeys(), fsync=False)
    restarted.admit(admit_fields("r-a"))
    restarted.admit(admit_fields("r-b"))

    assert run_verify(trail, monkeypatch) == 0  # in flight on a live trail is normal
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK ")
    assert out[1] == (
        "2 requests were forwarded to the model and have no final record "
        "(in flight now, or lost in a crash): r-a r-b"
    )
    assert out[2] == "1 request was ended by a restart after a crash (outcome abandoned): r-lost"

    assert run_verify(trail, monkeypatch, "--require-complete") == 1
    assert "--require-complete: 2 admitted requests have no final record" in capsys.readouterr().out

    restarted.append(final_fields("r-a"))
    restarted.append(final_fields("r-b"))
    assert run_verify(trail, monkeypatch, "--require-complete") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("OK ") and "r-lost" in out[1]


def test_a_broken_chain_still_exits_1_and_scopes_the_ids(
    trail: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False)
    log.admit(admit_fields("r-open"))
    log.append(final_fields("r-x"))
    lines = trail.read_text().splitlines(keepends=True)
    trail.write_text("".join([*lines[:2], lines[2].replace('"status":200', '"status":500')]))
    assert run_verify(trail, monkeypatch) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("BROKEN ")
    assert out[1].endswith("(in flight now, or lost in a crash) (in the records before the break): r-open")


def test_verify_result_defaults_keep_existing_callers_working() -> None:
    result = VerifyResult(True, 0, "OK: 0 records")
    assert result.unfinished == [] and result.abandoned == []


def test_a_refused_retry_under_the_same_request_id_does_not_close_the_admitted_one(trail: Path) -> None:
    """The gateway's final records name their admit (admit_seq; null when refused before being
    admitted): a client's retry that reuses the id and is refused (429) completes nothing, so the
    request that reached the model stays open until its own end, or a crash names it."""
    log = AuditLog(trail, StaticKeys(), fsync=False)
    admitted = log.admit(admit_fields("same"))
    log.append({**final_fields("same", outcome="rejected"), "status": 429, "admit_seq": None})
    assert log.unfinished == ["same"]
    assert verify(trail, unwrap).unfinished == ["same"]
    log.append({**final_fields("same"), "admit_seq": admitted["seq"]})
    assert log.unfinished == [] and verify(trail, unwrap).unfinished == []


def test_a_failure_after_the_record_is_durable_is_reported_not_raised(
    trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head or a seal failing after the line is on disk: the record is there, so append
    returns it (raising made the gateway refuse a request its admit says was forwarded, and
    left the next record on the same seq); the problem is reported once."""
    log = AuditLog(trail, StaticKeys(), fsync=False)
    log.append(final_fields("r0"))

    def no_head(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log, "_write_head", no_head)
    first = log.admit(admit_fields("r1"))
    second = log.append({**final_fields("r1"), "admit_seq": first["seq"]})
    assert second["seq"] == first["seq"] + 1
    problem = log.take_problem()
    assert problem is not None and "head" in problem and log.take_problem() is None
    result = verify(trail, unwrap)  # the head lags two records behind: accepted
    assert result.ok and result.records == second["seq"] + 1 and result.unfinished == []
