"""The audit chain detects edits, deletions, reordering, insertion, forgery and truncation."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

from gateway.audit import AuditKey, AuditLog, AuditWriteError, Segment, local_segments, verify

KEYS = {"wrapped-1": os.urandom(32), "wrapped-2": os.urandom(32)}


class StaticKeys:
    def __init__(self) -> None:
        self.wrapped = "wrapped-1"

    def current(self) -> AuditKey:
        return AuditKey(kid=f"kid-{self.wrapped}", wrapped=self.wrapped, key=KEYS[self.wrapped])


def unwrap(wrapped: str) -> bytes:
    return KEYS[wrapped]


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    keys = StaticKeys()
    log = AuditLog(tmp_path / "audit.jsonl", keys, fsync=False)
    for i in range(4):
        log.append({"request_id": f"r{i}", "status": 200})
    keys.wrapped = "wrapped-2"  # key rotation mid-trail
    for i in range(4, 6):
        log.append({"request_id": f"r{i}", "status": 200})
    return tmp_path / "audit.jsonl"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_intact_trail_verifies(trail: Path) -> None:
    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.records == 8  # 2 key records + 6 requests


def test_resume_continues_the_chain(trail: Path) -> None:
    log = AuditLog(trail, StaticKeys(), fsync=False)
    assert log.next_seq == 8
    log.append({"request_id": "after-restart"})
    assert verify(trail, unwrap).ok


def test_edit_is_detected(trail: Path) -> None:
    ls = lines(trail)
    ls[3] = ls[3].replace('"status":200', '"status":500')
    trail.write_text("".join(ls))
    result = verify(trail, unwrap)
    assert not result.ok and result.line == 4 and "edited" in result.message


def test_deletion_is_detected(trail: Path) -> None:
    ls = lines(trail)
    del ls[2]
    trail.write_text("".join(ls))
    result = verify(trail, unwrap)
    assert not result.ok and result.line == 3 and "deleted" in result.message


def test_reordering_is_detected(trail: Path) -> None:
    ls = lines(trail)
    ls[2], ls[3] = ls[3], ls[2]
    trail.write_text("".join(ls))
    result = verify(trail, unwrap)
    assert not result.ok and result.line == 3


def test_rehashed_forgery_without_the_key_is_detected(trail: Path) -> None:
    """An attacker who recomputes the hash (but has no key) still fails the HMAC."""
    import hashlib

    from gateway.audit import canonical

    ls = lines(trail)
    record = json.loads(ls[1])
    record["status"] = 204
    body = {k: v for k, v in record.items() if k not in {"hash", "mac"}}
    record["hash"] = hashlib.sha256(canonical(body)).hexdigest()
    ls[1] = canonical(record).decode() + "\n"
    trail.write_text("".join(ls))
    result = verify(trail, unwrap)
    assert not result.ok and result.line == 2 and "HMAC" in result.message


def test_truncated_tail_is_detected_by_the_signed_head(trail: Path) -> None:
    ls = lines(trail)
    trail.write_text("".join(ls[:-2]))
    result = verify(trail, unwrap)
    assert not result.ok and "truncated" in result.message


def test_cut_off_last_record_is_detected(trail: Path) -> None:
    data = trail.read_bytes()
    trail.write_bytes(data[:-40])
    result = verify(trail, unwrap)
    assert not result.ok and result.line == 8


def test_unknown_audit_key_is_reported(trail: Path) -> None:
    def refuse(wrapped: str) -> bytes:
        raise PermissionError("permission denied")

    result = verify(trail, refuse)
    assert not result.ok and result.line == 1 and "cannot unwrap" in result.message


def test_damaged_trail_refuses_to_resume(trail: Path) -> None:
    trail.write_bytes(trail.read_bytes() + b"{half a rec")
    with pytest.raises(AuditWriteError, match="damaged record"):
        AuditLog(trail, StaticKeys())


def test_unwritable_sink_raises(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=False)
    (tmp_path / "audit.jsonl").mkdir()  # appends now fail, even for root
    with pytest.raises(AuditWriteError, match="cannot append"):
        log.append({"x": 1})
    with pytest.raises(AuditWriteError, match="not writable"):
        log.check_writable()


def test_head_lagging_one_record_behind_is_accepted(trail: Path) -> None:
    """A crash between the record's write and the head's leaves the head one behind."""
    log = AuditLog(trail, StaticKeys(), fsync=False)
    head_before = (trail.parent / "audit.jsonl.head").read_bytes()
    log.append({"request_id": "last"})
    (trail.parent / "audit.jsonl.head").write_bytes(head_before)
    assert verify(trail, unwrap).ok


def test_forged_head_is_detected(trail: Path) -> None:
    head_path = trail.parent / "audit.jsonl.head"
    head = json.loads(head_path.read_bytes())
    head["seq"] += 5
    head_path.write_text(json.dumps(head))
    result = verify(trail, unwrap)
    assert not result.ok and "signature" in result.message


def test_missing_head_is_reported(trail: Path) -> None:
    (trail.parent / "audit.jsonl.head").unlink()
    result = verify(trail, unwrap)
    assert not result.ok and "missing" in result.message
    assert verify(trail, unwrap, check_head=False).ok


# -- segments ---------------------------------------------------------------------------------


def segmented(tmp_path: Path, records: int, max_bytes: int = 1500) -> Path:
    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=False, segment_max_bytes=max_bytes)
    for i in range(records):
        log.append({"request_id": f"r{i}", "status": 200, "pad": "x" * 200})
    return tmp_path / "audit.jsonl"


def test_full_segments_are_sealed_and_the_chain_runs_across_them(tmp_path: Path) -> None:
    trail = segmented(tmp_path, 20)
    sealed = local_segments(trail)
    assert len(sealed) >= 3
    for first, file in sealed:
        assert file.name == f"{first:012d}.jsonl" and file.stat().st_mode & 0o777 == 0o400
        assert json.loads(file.read_text().splitlines()[0])["kind"] == "key"  # each segment names its key
    result = verify(trail, unwrap)
    assert result.ok, result.message
    assert result.records == 20 + len(sealed) + (1 if trail.exists() else 0)  # requests + key records


def test_a_restart_after_a_seal_continues_from_the_newest_segment(tmp_path: Path) -> None:
    trail = segmented(tmp_path, 6)
    log = AuditLog(trail, StaticKeys(), fsync=False)
    log.seal()
    assert not trail.exists()
    resumed = AuditLog(trail, StaticKeys(), fsync=False)
    assert resumed.next_seq == log.next_seq
    resumed.append({"request_id": "after-restart"})
    assert verify(trail, unwrap).ok


def test_a_missing_segment_is_named_as_the_records_it_held(tmp_path: Path) -> None:
    trail = segmented(tmp_path, 20)
    sealed = local_segments(trail)
    (first, middle), (after, _) = sealed[1], sealed[2]
    middle.chmod(0o600)
    middle.unlink()
    result = verify(trail, unwrap)
    assert not result.ok
    assert (
        f"records {first}-{after - 1} are missing: no segment, local or archived, holds them"
        in result.message
    )


def test_archived_segments_fill_in_for_pruned_local_ones(tmp_path: Path) -> None:
    trail = segmented(tmp_path, 20)
    archived = []
    for first, file in local_segments(trail)[:-1]:  # shipped and pruned; the newest stays local
        content = functools.partial(bytes, file.read_bytes())
        archived.append(Segment(first, f"s3://archive/{file.name}", content))
        file.chmod(0o600)
        file.unlink()
    assert not verify(trail, unwrap).ok
    result = verify(trail, unwrap, archived=archived)
    assert result.ok, result.message


def test_a_segment_that_differs_between_local_and_archive_is_named(tmp_path: Path) -> None:
    trail = segmented(tmp_path, 20)
    first, file = local_segments(trail)[0]
    altered = file.read_bytes().replace(b'"status":200', b'"status":500', 1)
    result = verify(trail, unwrap, archived=[Segment(first, "s3://archive/x", lambda: altered)])
    assert not result.ok
    assert f"segment {first:012d}.jsonl differs between {file} and s3://archive/x" in result.message


def test_an_edit_inside_a_segment_names_the_segment_and_line(tmp_path: Path) -> None:
    trail = segmented(tmp_path, 20)
    _, file = local_segments(trail)[1]
    file.chmod(0o600)
    ls = lines(file)
    ls[1] = ls[1].replace('"status":200', '"status":204')
    file.write_text("".join(ls))
    result = verify(trail, unwrap)
    assert not result.ok and f"{file} line 2" in result.message and "edited" in result.message


def test_a_segment_is_sealed_by_age(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=False, segment_max_age_s=0.0)
    log.append({"request_id": "r0"})  # due at once: sealed right after its record
    assert [f for f, _ in local_segments(tmp_path / "audit.jsonl")] == [0]
    assert log.seal_if_due() is None  # nothing open
