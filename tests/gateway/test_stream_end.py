"""A streamed answer's body ends before its final audit record is written, and that write does not
hold the event loop: the client gets the whole chunked body (its terminator too, so the
connection can carry the next request) while the record's append is still blocked; once the
append goes on, the record is in the trail with the stream's outcome, completing its admit.

(Issue 24: the gateway wrote the final record, with its fdatasync, on the event loop before the
end of the body went out, so a client reading to the end waited for the disk, rarely reused its
connection, and every other stream on the loop waited too.)

The gateway runs in this process (uvicorn in a thread, the production uvicorn configuration) so
the test can hold one append; no timing bound, only deadlock guards."""

from __future__ import annotations

import json
import os
import socket
import threading
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.app import create_app
from gateway.audit import AuditLog
from gateway.clientkeys import ClientKeyStore
from gateway.server import uvicorn_config
from gateway.settings import load_settings
from tests.support import Bao, Upstream, free_port, gateway_config

TENANT = "stream-end"
DEADLOCK_S = 30  # a guard against a hang only: every wait below normally ends at once


class HeldAppend:
    """Wraps AuditLog.append: the final record of one request id waits until released."""

    def __init__(self, audit: AuditLog, request_id: str) -> None:
        self._append = audit.append
        self.request_id = request_id
        self.reached = threading.Event()
        self.release = threading.Event()
        audit.append = self  # type: ignore[method-assign]

    def __call__(self, fields: dict[str, Any], key: Any = None) -> dict[str, Any]:
        if fields.get("request_id") == self.request_id:
            self.reached.set()
            self.release.wait(DEADLOCK_S * 2)
        return self._append(fields, key=key)


@contextmanager
def serve(tmp_path: Path, bao: Bao, upstream: Upstream, **extra: Any) -> Iterator[tuple[Any, int, str, Path]]:
    """A gateway in this process: (the Gateway object, its port, a client key, the audit trail)."""
    # fdatasync on (the default; tests elsewhere turn it off), unless *extra* says otherwise
    extra.setdefault("audit", {"fsync": True})
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url, **extra)
    settings = load_settings(config)
    key = ClientKeyStore(tmp_path / "keys.json").create(TENANT)[1]
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(DEADLOCK_S * 20):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started, "the in-process gateway did not start"
        yield app.state.gateway, port, key, settings.audit.path
    finally:
        server.should_exit = True
        thread.join(DEADLOCK_S)


@pytest.fixture
def served(tmp_path: Path, bao: Bao, upstream: Upstream) -> Iterator[tuple[Any, int, str, Path]]:
    with serve(tmp_path, bao, upstream) as gateway:
        yield gateway


def stream_request(key: str, request_id: str) -> bytes:
    body = json.dumps(
        {"messages": [{"role": "user", "content": "When is the practice open?"}], "stream": True}
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\nx-sovereign-use-case: patient-support\r\n"
        f"x-request-id: {request_id}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def read_to_body_end(sock: socket.socket) -> bytes:
    """Everything up to and including the chunked body's terminator; what came so far when the
    connection closes or the deadlock guard passes."""
    received = b""
    while b"\r\n0\r\n\r\n" not in received:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received
        if not data:
            return received
        received += data
    return received


def trail_record(trail: Path, kind: str, request_id: str) -> dict[str, Any] | None:
    if not trail.exists():
        return None
    for line in trail.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written as it is read: looked at again at the next poll
            continue
        if record.get("kind") == kind and record.get("request_id") == request_id:
            return dict(record)
    return None


def test_the_body_ends_while_the_final_record_is_still_being_written(
    served: tuple[Any, int, str, Path],
) -> None:
    gw, port, key, trail = served
    request_id = str(uuid.uuid4())
    held = HeldAppend(gw.audit, request_id)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLOCK_S) as sock:
            sock.sendall(stream_request(key, request_id))
            received = read_to_body_end(sock)
            # the end of the body came while the append of the record was held (or never came)
            assert b"\r\n0\r\n\r\n" in received, "the body did not end while its audit record was held"
            assert held.reached.wait(DEADLOCK_S)  # its append is (or now gets) held
            assert received.startswith(b"HTTP/1.1 200")
            assert b"data: [DONE]" in received
            assert trail_record(trail, "request", request_id) is None  # not written yet
            held.release.set()
            # the record follows; the connection carries the next request
            for _ in range(DEADLOCK_S * 100):
                if trail_record(trail, "request", request_id) is not None:
                    break
                threading.Event().wait(0.01)
            again = str(uuid.uuid4())
            sock.sendall(stream_request(key, again))
            assert read_to_body_end(sock).startswith(b"HTTP/1.1 200")
    finally:
        held.release.set()
    record = trail_record(trail, "request", request_id)
    admit = trail_record(trail, "admit", request_id)
    assert record is not None and admit is not None
    assert (record["outcome"], record["status"], record["error"]) == ("ok", 200, None)
    assert record["admit_seq"] == admit["seq"] and record["finish_reason"] == "stop"
    assert record["bytes"]["response"] > 0


# -- group commit: the audit writer thread ------------------------------------------------------
def test_records_waiting_together_share_one_fdatasync_and_stay_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.audit import AuditWriter, verify
    from tests.unit.test_audit import StaticKeys, unwrap

    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd))[1])
    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True)
    writer = AuditWriter(log)
    started, busy = threading.Event(), threading.Event()
    blocker = writer.submit(lambda: (started.set(), busy.wait(DEADLOCK_S))[1], batched=False)
    assert started.wait(DEADLOCK_S)  # the thread is held: the five wait together
    futures = [writer.submit(log.append, {"request_id": f"r{i}", "outcome": "ok"}) for i in range(5)]
    busy.set()
    records = [f.result(DEADLOCK_S) for f in futures]
    assert blocker.result(DEADLOCK_S) is True
    writer.close(DEADLOCK_S)
    assert len(syncs) == 1  # five records (and the key record before them): one flush
    assert [r["request_id"] for r in records] == [f"r{i}" for i in range(5)]
    assert verify(log.path, unwrap).ok


def test_a_batch_that_cannot_be_written_leaves_none_of_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.audit import AuditWriteError, AuditWriter, verify
    from tests.unit.test_audit import StaticKeys, unwrap

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True)
    log.append({"request_id": "before", "outcome": "ok"})
    size = log.path.stat().st_size
    writer = AuditWriter(log)
    busy = threading.Event()
    writer.submit(busy.wait, DEADLOCK_S, batched=False)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    admit = writer.submit(log.admit, {"request_id": "lost", "tenant": "t"})
    final = writer.submit(log.append, {"request_id": "lost", "tenant": "t", "outcome": "ok"})
    busy.set()
    for future in (admit, final):
        with pytest.raises(AuditWriteError):
            future.result(DEADLOCK_S)
    assert log.path.stat().st_size == size  # cut back: none of the batch is in the trail
    monkeypatch.undo()
    after = writer.submit(log.append, {"request_id": "after", "outcome": "ok"}).result(DEADLOCK_S)
    writer.close(DEADLOCK_S)
    assert after["seq"] == 2  # the chain goes on where it was (key record 0, "before" 1)
    result = verify(log.path, unwrap)
    assert result.ok and result.unfinished == []


# -- issue 24's review: the admission place, records after close, a failed admit's seq ----------
def test_the_admission_place_is_back_once_the_body_has_ended(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    """A client within its one concurrent request sends its next one on the connection as soon
    as a stream's body has ended: it is not refused with 429 tenant_concurrency_exceeded while
    the stream's final record is still being written."""
    limits = {"tenant_defaults": {"max_concurrent": 1, "rate_per_s": 1e6, "burst": 1_000_000}}
    with serve(tmp_path, bao, upstream, audit={"fsync": True}, limits=limits) as (gw, port, key, trail):
        request_id = str(uuid.uuid4())
        held = HeldAppend(gw.audit, request_id)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLOCK_S) as sock:
                sock.sendall(stream_request(key, request_id))
                assert b"\r\n0\r\n\r\n" in read_to_body_end(sock)
                assert held.reached.wait(DEADLOCK_S)  # the final record is handed over, held
                # given back when the record was handed over (the same step of the loop)
                assert gw.admission.requests == 0 and gw.admission.streams == 0
                assert gw.admission._tenants[TENANT].in_flight == 0
                sock.sendall(stream_request(key, str(uuid.uuid4())))
                sock.settimeout(0.5)  # a 429 would come at once; the answer waits for the record
                with pytest.raises(TimeoutError):
                    early = sock.recv(65536)
                    pytest.fail(f"answered while the record was held: {early[:200]!r}")
                held.release.set()
                sock.settimeout(DEADLOCK_S)
                assert read_to_body_end(sock).startswith(b"HTTP/1.1 200")
        finally:
            held.release.set()
    assert trail_record(trail, "request", request_id) is not None


def test_records_handed_over_after_close_are_written(tmp_path: Path) -> None:
    """uvicorn runs the lifespan's shutdown (close_audit) while cancelled streams still unwind:
    their records are written then, in the caller, never left on a queue nobody reads."""
    from gateway.audit import AuditWriter, verify
    from tests.unit.test_audit import StaticKeys, unwrap

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True)
    writer = AuditWriter(log)
    queued = writer.submit(log.append, {"request_id": "queued", "tenant": "t", "outcome": "ok"})
    writer.close(DEADLOCK_S)
    assert queued.done()  # close writes what was handed over before
    late = writer.submit(log.append, {"request_id": "late", "tenant": "t", "outcome": "shutting_down"})
    assert late.done() and late.result()["request_id"] == "late"
    writer.close(DEADLOCK_S)  # a second close: nothing to do
    records = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [r.get("request_id") for r in records[1:]] == ["queued", "late"]  # after the key record
    assert verify(log.path, unwrap).ok


def test_a_final_record_names_no_admit_whose_batch_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled while its admit was on its way: that admit's batch fails, so its seq
    goes to the next request's admit; the first request's final record must not complete it."""
    from gateway.app import Exchange, Gateway
    from gateway.audit import AuditWriteError, AuditWriter, verify
    from tests.unit.test_audit import StaticKeys, unwrap

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True)
    log.append({"request_id": "warm", "tenant": "t", "admit_seq": None, "outcome": "ok"})
    gw = types.SimpleNamespace(audit=log)  # what Gateway's writer-thread jobs use
    writer = AuditWriter(log)
    first, second = Exchange(request_id="A", tenant="t"), Exchange(request_id="B", tenant="t")
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    first.admit_job = writer.submit(Gateway._admit_record, gw, first)
    with pytest.raises(AuditWriteError):
        first.admit_job.result(DEADLOCK_S)
    monkeypatch.setattr(os, "fdatasync", real)
    second.admit_job = writer.submit(Gateway._admit_record, gw, second)
    second.admit_seq = second.admit_job.result(DEADLOCK_S)
    final = writer.submit(Gateway._append_final, gw, first, first.record("cancelled", 499))
    assert final.result(DEADLOCK_S)["admit_seq"] is None
    writer.close(DEADLOCK_S)
    assert log.unfinished == ["B"]  # B's admit stays open until B's own final record
    result = verify(log.path, unwrap)
    assert result.ok and result.unfinished == ["B"]


def test_a_final_record_in_its_admits_batch_names_it(tmp_path: Path) -> None:
    """Cancelled while its admit waits in the writer: the final record joins the same batch and
    names the admit (both written together)."""
    from gateway.app import Exchange, Gateway
    from gateway.audit import AuditWriter, verify
    from tests.unit.test_audit import StaticKeys, unwrap

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True)
    gw = types.SimpleNamespace(audit=log)
    writer = AuditWriter(log)
    started, busy = threading.Event(), threading.Event()
    writer.submit(lambda: (started.set(), busy.wait(DEADLOCK_S)), batched=False)
    assert started.wait(DEADLOCK_S)
    ex = Exchange(request_id="C", tenant="t")
    ex.admit_job = writer.submit(Gateway._admit_record, gw, ex)
    final = writer.submit(Gateway._append_final, gw, ex, ex.record("cancelled", 499))
    busy.set()
    admit_seq = ex.admit_job.result(DEADLOCK_S)
    assert final.result(DEADLOCK_S)["admit_seq"] == admit_seq
    writer.close(DEADLOCK_S)
    result = verify(log.path, unwrap)
    assert result.ok and result.unfinished == []


def test_a_batch_is_sealed_after_its_callers_are_told(tmp_path: Path) -> None:
    """The records are durable before a seal: their callers do not wait for it."""
    from gateway.audit import AuditWriter
    from tests.unit.test_audit import StaticKeys

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True)
    writer = AuditWriter(log)
    sealing, go_on = threading.Event(), threading.Event()

    def slow_seal() -> None:
        sealing.set()
        go_on.wait(DEADLOCK_S)

    log.seal_if_due = slow_seal  # type: ignore[method-assign,assignment]
    try:
        record = writer.submit(log.append, {"request_id": "r", "outcome": "ok"})
        assert sealing.wait(DEADLOCK_S)  # the seal is under way, and held there
        assert record.done() and record.result()["request_id"] == "r"  # told before it
    finally:
        go_on.set()
        writer.close(DEADLOCK_S)


def test_inline_writes_open_no_batch(tmp_path: Path) -> None:
    """AuditWriter(inline=True): each record written as it comes, without a batch (whose undo
    state copies the open admits)."""
    from gateway.audit import AuditWriter, verify
    from tests.unit.test_audit import StaticKeys, unwrap

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=False)

    def no_batch() -> None:
        raise AssertionError("a batch opened for an inline write")

    log.begin_batch = no_batch  # type: ignore[method-assign]
    writer = AuditWriter(log, inline=True)
    admit = writer.submit(log.admit, {"request_id": "i", "tenant": "t"}).result(0)
    writer.submit(log.append, {"request_id": "i", "tenant": "t", "admit_seq": admit["seq"]}).result(0)
    assert verify(log.path, unwrap).ok and log.unfinished == []


def test_the_gateway_writes_through_the_writer_thread_without_fdatasync_too(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    """audit.fsync: false (as in the other gateway tests) runs the same writer thread."""
    with serve(tmp_path, bao, upstream, audit={"fsync": False}) as (gw, port, key, _):
        threads: list[str] = []
        append = gw.audit.append

        def noting(fields: dict[str, Any], key: Any = None) -> dict[str, Any]:
            threads.append(threading.current_thread().name)
            return dict(append(fields, key=key))

        gw.audit.append = noting
        request_id = str(uuid.uuid4())
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLOCK_S) as sock:
            sock.sendall(stream_request(key, request_id))
            assert read_to_body_end(sock).startswith(b"HTTP/1.1 200")
        for _ in range(DEADLOCK_S * 100):
            if threads:
                break
            threading.Event().wait(0.01)
        assert threads == ["audit-writer"]


def test_a_seal_that_cannot_make_its_folder_leaves_the_writer_writing(tmp_path: Path) -> None:
    """A file where the segments folder belongs (or a read-only disk) makes the seal fail: the
    records before it are written, the failure is noted, and the writer thread goes on writing
    (an OSError out of the seal used to end the thread, and every later request hung)."""
    from gateway.audit import AuditWriter, segments_dir
    from tests.unit.test_audit import StaticKeys

    log = AuditLog(tmp_path / "audit.jsonl", StaticKeys(), fsync=True, segment_max_bytes=1)
    segments_dir(log.path).write_text("not a folder")
    writer = AuditWriter(log)
    try:
        first = writer.submit(log.append, {"request_id": "r1", "outcome": "ok"})
        assert first.result(DEADLOCK_S)["request_id"] == "r1"
        second = writer.submit(log.append, {"request_id": "r2", "outcome": "ok"})
        assert second.result(DEADLOCK_S)["request_id"] == "r2"
        assert "not sealed" in (log.take_problem() or "")
    finally:
        writer.close(DEADLOCK_S)
    ids = [json.loads(line).get("request_id") for line in log.path.read_text().splitlines()]
    assert "r1" in ids and "r2" in ids
