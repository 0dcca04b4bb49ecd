"""`sovereign incident affected`: the requests in a window, from a verified trail written by the
gateway's audit code (gateway.audit.AuditLog, with sealed segments), ids and counts only."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditKey, AuditLog
from infra import incident_affected as aff

KEY = os.urandom(32)


class StaticKeys:
    def current(self) -> AuditKey:
        return AuditKey(kid="kid-1", wrapped="wrapped-1", key=KEY)


def unwrap(wrapped: str) -> bytes:
    assert wrapped == "wrapped-1"
    return KEY


def admission(request_id: str, tenant: str, use_case: str, key_id: str) -> dict[str, Any]:
    """The fields the gateway writes (gateway/app.py Exchange.admission)."""
    return {
        "request_id": request_id,
        "tenant": tenant,
        "key_id": key_id,
        "use_case": use_case,
        "policy_version": "3+ab12",
        "model": "small",
        "upstream_model": "m",
        "weights_sha256": "0" * 64,
        "stream": False,
        "bytes": {"request": 120},
    }


def final(request_id: str, tenant: str, use_case: str, key_id: str, admit_seq: int | None) -> dict[str, Any]:
    return {
        **admission(request_id, tenant, use_case, key_id),
        "admit_seq": admit_seq,
        "outcome": "ok",
        "status": 200,
        "error": None,
        "finish_reason": "stop",
        "latency_ms": {"total": 10.0, "upstream": 9.0, "ttft": 2.0},
        "bytes": {"request": 120, "response": 300},
        "dropped_fields": ["address"],
        "phi": {
            "tokenised": {"NAME": 2, "KVNR": 1},
            "removed": {"IBAN": 1},
            "context_fields_used": ["name"],
            "context_fields_dropped": ["address"],
            "restored": 2,
            "unrestored": 1,
        },
    }


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, datetime, datetime]:
    """Six requests of two tenants and two use cases, the first three sealed into a segment;
    (file, a time before the fourth, a time after the last)."""
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path, StaticKeys(), fsync=False)
    cases = [
        ("r1", "clinic-a", "patient-support", "k1"),
        ("r2", "clinic-b", "patient-support", "k2"),
        ("r3", "clinic-a", "order-support", "k1"),
        ("r4", "clinic-a", "patient-support", "k1"),
        ("r5", "clinic-b", "patient-support", "k2"),
        ("r6", "clinic-a", "patient-support", "k3"),
    ]
    middle = datetime.now(UTC)
    for i, (rid, tenant, use_case, key_id) in enumerate(cases):
        if i == 3:
            assert log.seal() is not None
            middle = datetime.now(UTC)
        seq = log.admit(admission(rid, tenant, use_case, key_id))["seq"]
        log.append(final(rid, tenant, use_case, key_id, seq))
    log.event("incident", {"action": "suspend", "use_case": "patient-support", "by": "oncall", "reason": "x"})
    return path, middle, datetime.now(UTC) + timedelta(seconds=1)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_selects_the_window_across_segments_merging_admit_and_final(
    trail: tuple[Path, datetime, datetime],
) -> None:
    path, middle, end = trail
    everything = aff.Window(middle - timedelta(days=1), end)
    result, found = aff.find(path, unwrap, everything)
    assert result.ok, result.message
    assert [a.request_id for a in found] == ["r1", "r2", "r3", "r4", "r5", "r6"]
    first = rows(aff.to_csv(found))[0]
    assert first == {
        "first_ts": first["first_ts"],
        "request_id": "r1",
        "tenant": "clinic-a",
        "key_id": "k1",
        "use_case": "patient-support",
        "policy_version": "3+ab12",
        "model": "small",
        "forwarded": "yes",
        "outcome": "ok",
        "status": "200",
        "phi_tokenised": "KVNR=1 NAME=2",
        "phi_removed": "IBAN=1",
        "unrestored": "1",
        "context_fields_dropped": "address",
    }
    later = aff.Window(middle, end, use_case="patient-support", tenant="clinic-a")
    _, found = aff.find(path, unwrap, later)
    assert [a.request_id for a in found] == ["r4", "r6"]
    _, found = aff.find(path, unwrap, aff.Window(middle - timedelta(days=1), end, key_id="k2"))
    assert [a.request_id for a in found] == ["r2", "r5"]
    assert aff.summary(found) == [
        "tenant clinic-b  use case patient-support: 2 requests, 2 forwarded to the model; "
        "PHI found: IBAN=2 KVNR=2 NAME=4"
    ]


def test_a_tampered_trail_selects_nothing(trail: tuple[Path, datetime, datetime]) -> None:
    path, middle, end = trail
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["tenant"] = "clinic-z"
    lines[2] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    result, found = aff.find(path, unwrap, aff.Window(middle - timedelta(days=1), end))
    assert not result.ok and "edited" in result.message and found == []


def test_a_removed_segment_selects_nothing(trail: tuple[Path, datetime, datetime]) -> None:
    path, middle, end = trail
    (segment,) = (path.parent / "audit.jsonl.segments").iterdir()
    segment.chmod(0o600)
    segment.unlink()
    result, found = aff.find(path, unwrap, aff.Window(middle - timedelta(days=1), end))
    assert not result.ok and found == []
    assert result.message.startswith(f"{path} line 1 (seq 0): sequence number is 7, expected 0")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yesterday", "not an ISO 8601 time"), ("2026-11-30T10:00:00", "has no UTC offset")],
)
def test_times_need_iso_with_offset(value: str, expected: str) -> None:
    with pytest.raises(aff.AffectedError, match=expected) as caught:
        aff.parse_time(value, "--from")
    assert "yesterday" not in str(caught.value)
    assert aff.parse_time("2026-11-30T11:00:00+01:00", "--from") == datetime(2026, 11, 30, 10, tzinfo=UTC)


def test_the_command_refuses_a_bad_window_naming_the_option(
    trail: tuple[Path, datetime, datetime], capsys: pytest.CaptureFixture[str]
) -> None:
    from infra.cli import main

    path, _, _ = trail
    token = path.parent / "auditor.token"
    token.write_text("t")
    base = [
        "incident",
        "affected",
        str(path),
        "--openbao-address",
        "http://127.0.0.1:9",
        "--token-file",
        str(token),
    ]
    assert main([*base, "--from", "2026-11-30T10:00:00+00:00", "--to", "2026-11-30T09:00:00+00:00"]) == 1
    assert "--to: the window ends before it starts" in capsys.readouterr().err
    assert main([*base, "--from", "last tuesday", "--to", "2026-11-30T09:00:00+00:00"]) == 1
    err = capsys.readouterr().err
    assert "--from: not an ISO 8601 time" in err and "tuesday" not in err
