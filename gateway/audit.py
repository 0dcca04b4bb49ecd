"""Tamper-evident audit trail: hash-chained, HMAC-signed JSON lines, a signed head, write-ahead
(``admit``) records completed after a crash, ``verify``.

Each line is one record. ``hash`` is the SHA-256 of the record's canonical JSON (without
``hash`` and ``mac``); ``prev`` is the previous record's ``hash``; ``seq`` counts from 0;
``mac`` is HMAC-SHA256 over ``hash`` with the audit key named by ``kid``.

The HMAC keys are data keys from OpenBao transit (envelope encryption): a ``key`` record
introduces each key by its wrapped (encrypted) form, so a verifier with decrypt rights on
the transit key recovers it, and nobody without OpenBao can forge a record. A sidecar
``<file>.head`` holds the latest (seq, hash, mac) so a cut-off tail is detected too.

**Segments.** The trail is cut into segments so that finished parts can be archived: when
the active file reaches ``segment_max_bytes`` or ``segment_max_age_s``, it is sealed — renamed
to ``<file>.segments/<first seq, 12 digits>.jsonl``, read-only — and the chain continues in a
fresh active file (seq and prev carry on; the first record of every segment introduces its
key again, so each segment can be checked on its own given its predecessor's last hash).
A sealed segment's modification time is the moment it was sealed. ``sovereign audit ship``
copies sealed segments, in order, to the Object Lock archive, and after every complete round
writes ``<file>.shipped`` (:func:`write_shipped`: the first seq the archive does not hold), so
the gateway can tell, at scrape time, which sealed segments still wait for the archive and
when the last round succeeded (:func:`shipping_state`, gateway/scrape_metrics.py);
:func:`verify` checks the whole chain across archived segments, local segments and the active
file, naming any records that no segment holds.

**Write-ahead.** A request that reaches the model has two records: ``kind: "admit"``
(:meth:`AuditLog.admit`), on disk before the first byte is forwarded, and ``kind: "request"``
(:meth:`AuditLog.append`) when it ends, with the same ``request_id`` and ``tenant``. A crash
between the two leaves an admit without a completion: the next process finds those in the
trail it resumes and completes them with ``outcome: "abandoned"`` before its first own record,
and :func:`verify` names admits that no later record completes (``VerifyResult.unfinished``).

**Group commit.** The gateway appends from one writer thread (:class:`AuditWriter`), never from
its event loop: records handed over while the previous write was on its way are written
together, in the order handed over, with one ``write`` and one ``fdatasync``
(:meth:`AuditLog.begin_batch` / :meth:`AuditLog.commit_batch`); none of them counts as written
before that fdatasync returns, and when it fails none of them stays in the trail (the file is
cut back to where the batch began and the chain continues from there). So the write-ahead rule
holds as before, and one disk flush serves every request that arrived meanwhile.

Records never contain prompt or answer text: callers pass counts, ids and outcomes only.
Hand-written because no maintained library keeps an HMAC'd hash chain in JSONL.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import SovereignError

GENESIS = "0" * 64
HEAD_SIZE = 512
# Free space the trail's disk must have for records, whatever audit.min_free_bytes says (even
# 0): opening a file for appending succeeds on a full disk, so only free space tells whether
# the next records fit. A record is well under 4 KiB; this leaves room for the records of the
# requests in flight when the check passed and the key record that opens a new segment (the
# reserve, 8 MiB by default, is the real margin; this is the floor when it is set lower).
RECORD_HEADROOM_BYTES = 32 << 10
ABANDONED = "abandoned"  # the outcome of a request whose process died before its final record


class AuditWriteError(SovereignError, RuntimeError):
    """The audit record could not be written; the request must not be served un-audited.
    ``reason`` says why in words that name no path (what /readyz shows)."""

    def __init__(self, message: str, reason: str = "not writable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AuditKey:
    kid: str
    wrapped: str
    key: bytes = field(repr=False)  # the plaintext HMAC key: never in a log or a traceback


class AuditKeySource(Protocol):
    def current(self) -> AuditKey:
        """The key to sign with now (raises KeyUnavailable when OpenBao cannot provide one)."""
        ...


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _seal(body: dict[str, Any], key: bytes) -> tuple[dict[str, Any], bytes]:
    """The sealed record and its line. The line is the canonical body with hash and mac
    appended (JSON objects are unordered; verify() re-canonicalises), so the body is
    serialised once, not twice."""
    encoded = canonical(body)
    digest = hashlib.sha256(encoded).hexdigest()
    mac = hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()
    line = encoded[:-1] + f',"hash":"{digest}","mac":"{mac}"}}\n'.encode()
    return {**body, "hash": digest, "mac": mac}, line


def _head_mac(key: bytes, seq: int, digest: str) -> str:
    return hmac.new(key, f"head:{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def segments_dir(path: Path) -> Path:
    """Where the sealed segments of the trail *path* live."""
    return path.with_name(path.name + ".segments")


def shipped_marker(path: Path) -> Path:
    """The file ``sovereign audit ship`` rewrites after every complete round: the first seq the
    archive does not hold, as text; its modification time is the round's end."""
    return path.with_name(path.name + ".shipped")


def write_shipped(path: Path, next_seq: int) -> None:
    """Record that the archive holds every record of the trail *path* below *next_seq*
    (written whole and renamed into place: a reader never sees half of it)."""
    marker = shipped_marker(path)
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(f"{next_seq}\n", encoding="ascii")
    os.replace(partial, marker)


@dataclass(frozen=True)
class ShippingState:
    """What the archive lacks of a trail, as the shipper's marker and the local segments say."""

    unshipped: int  # sealed local segments the archive does not hold
    oldest_sealed_at: float | None  # time.time() when the oldest of them was sealed
    last_round_at: float | None  # time.time() of the last complete shipping round, if any


def shipping_state(path: Path) -> ShippingState:
    """Which sealed segments of *path* wait for the archive: those starting at or after the
    marker's seq (every sealed one when there is no marker yet); a segment that vanishes while
    it is looked at (pruned) is skipped."""
    marker = shipped_marker(path)
    try:
        shipped_below, last_round = int(marker.read_text(encoding="ascii")), marker.stat().st_mtime
    except (OSError, ValueError):
        shipped_below, last_round = 0, None
    unshipped, oldest = 0, None
    for first, file in local_segments(path):
        if first < shipped_below:
            continue
        try:
            sealed_at = file.stat().st_mtime
        except OSError:
            continue
        unshipped += 1
        oldest = sealed_at if oldest is None else min(oldest, sealed_at)
    return ShippingState(unshipped, oldest, last_round)


def free_bytes(folder: Path) -> int:
    """Free space on the disk of *folder* for an unprivileged writer (0 when it cannot be read)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def reserve_bytes(min_free_bytes: int) -> int:
    """The free space below which the trail refuses records: audit.min_free_bytes, at least
    RECORD_HEADROOM_BYTES."""
    return max(min_free_bytes, RECORD_HEADROOM_BYTES)


def segment_name(first_seq: int) -> str:
    return f"{first_seq:012d}.jsonl"


def local_segments(path: Path) -> list[tuple[int, Path]]:
    """The sealed segments of *path*, (first seq, file), in chain order."""
    folder = segments_dir(path)
    if not folder.is_dir():
        return []
    found = []
    for item in folder.iterdir():
        stem = item.name.removesuffix(".jsonl")
        if item.name.endswith(".jsonl") and stem.isdigit() and len(stem) == 12:
            found.append((int(stem), item))
    return sorted(found)


class Admitted:
    """Admitted requests that no completing record has followed yet, by their admit's seq,
    each with the few fields an ``abandoned`` completion copies. Holds only requests in flight:
    memory stays bounded by them.

    A final record names the admit it completes by ``admit_seq`` (the gateway's records all
    carry it: ``null`` for a request refused before it was admitted, which completes nothing —
    a client may reuse a request id, and its refused retry must not close the admit of the
    request that did reach the model). A record without the field (written by hand, or before
    the field existed) completes the oldest open admit with its request id and tenant."""

    COPIED = ("tenant", "key_id", "use_case", "model")

    def __init__(self) -> None:
        self._open: dict[int, dict[str, Any]] = {}

    def note(self, record: dict[str, Any]) -> None:
        """Take in one record of the chain, in chain order (other kinds are ignored)."""
        kind, request_id, tenant = record.get("kind"), record.get("request_id"), record.get("tenant")
        if kind not in {"admit", "request"} or not isinstance(request_id, str):
            return
        if kind == "admit":
            seq = record.get("seq")
            if isinstance(seq, int):
                info = {"seq": seq, "request_id": request_id}
                info.update({k: record.get(k) for k in self.COPIED})
                self._open[seq] = info
            return
        if "admit_seq" in record:
            admit_seq = record["admit_seq"]
            if isinstance(admit_seq, int):
                self._open.pop(admit_seq, None)
            return
        for seq, info in sorted(self._open.items()):
            if info["request_id"] == request_id and info["tenant"] == tenant:
                del self._open[seq]
                return

    def pending(self) -> list[dict[str, Any]]:
        """The open admits' infos, in chain order."""
        return [self._open[seq] for seq in sorted(self._open)]

    def ids(self) -> list[str]:
        return [str(info["request_id"]) for info in self.pending()]


def _edge_records(
    path: Path, admitted: Admitted | None = None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(first, last) record of a trail file, or None when it is empty; every record also goes
    to *admitted* when given."""
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    with path.open("rb") as fh:
        for line in fh:
            try:
                last = json.loads(line)
            except ValueError:
                raise AuditWriteError(
                    f"audit trail {path} ends in a damaged record; run "
                    "`sovereign audit verify` and archive the file before starting a new one"
                ) from None
            first = first or last
            if admitted is not None and isinstance(last, dict):
                admitted.note(last)
    return (first, last) if first is not None and last is not None else None


class AuditLog:
    """Appends records to the chain and seals full segments. Not thread-safe: use from one
    thread (the gateway's :class:`AuditWriter`)."""

    def __init__(
        self,
        path: Path,
        keys: AuditKeySource,
        fsync: bool = True,
        segment_max_bytes: int | None = None,
        segment_max_age_s: float | None = None,
        min_free_bytes: int = 0,
    ) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._keys = keys
        self._fsync = fsync
        self._max_bytes = segment_max_bytes
        self._max_age_s = segment_max_age_s
        self._min_free = min_free_bytes
        self._kid: str | None = None
        self._head_fd: int | None = None
        self._segment_first: int | None = None  # seq of the active file's first record
        self._segment_bytes = 0
        self._segment_started = 0.0  # time.monotonic() of the active file's first record
        self._admitted = Admitted()  # admits without their completing record, this process's too
        self._batch: _Batch | None = None  # records appended since begin_batch, not written yet
        # the last failure after a record was already durable (sealing, the head): reported by
        # take_problem(), never raised (the record is there); noted in the writer thread, taken
        # on the event loop, hence the lock
        self.problem: str | None = None
        self._problem_lock = threading.Lock()
        self._seq, self._prev = self._resume()
        # admits a previous process left open (it died with them in flight): completed as
        # abandoned before this process's first record, when a key is at hand
        self._orphans = self._admitted.pending()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _resume(self) -> tuple[int, str]:
        """Continue an existing chain after its last complete record (in the active file, else
        in the newest sealed segment). Learns the admits that the newest sealed segment and the
        active file leave without a completing record (a segment may be sealed between a
        request's admit and its end; one in flight across two seals is not looked for)."""
        sealed = local_segments(self.path)
        newest = _edge_records(sealed[-1][1], self._admitted) if sealed else None
        edges = _edge_records(self.path, self._admitted) if self.path.exists() else None
        if edges is not None:
            self._segment_first = int(edges[0]["seq"])
            self._segment_bytes = self.path.stat().st_size
            self._segment_started = time.monotonic()  # its age restarts with the process
            return int(edges[1]["seq"]) + 1, str(edges[1]["hash"])
        if newest is not None:
            return int(newest[1]["seq"]) + 1, str(newest[1]["hash"])
        return 0, GENESIS

    @property
    def next_seq(self) -> int:
        return self._seq

    def take_problem(self) -> str | None:
        """The failure since the last call that did not cost a record (and forget it); from any
        thread."""
        with self._problem_lock:
            problem, self.problem = self.problem, None
        return problem

    def _note_problem(self, problem: str) -> None:
        with self._problem_lock:
            self.problem = problem

    def seal_if_due_noting(self) -> None:
        """:meth:`seal_if_due` after records were written: a failure is noted for
        :meth:`take_problem`, never raised (the records are there; the gateway's sealer retries)."""
        try:
            self.seal_if_due()
        except Exception as exc:  # never out of the writer thread: it would stop writing
            self._note_problem(f"audit segment not sealed: {exc}")

    @property
    def unfinished(self) -> list[str]:
        """Request ids admitted and not completed yet, in admit order: in flight in this
        process, or left by a crashed one until their abandoned completions are written."""
        return self._admitted.ids()

    def check_writable(self) -> None:
        """Raise AuditWriteError when a record could not be appended now: the file cannot be
        opened for appending, or its disk has less free space than the reserve, or than
        RECORD_HEADROOM_BYTES when the reserve is smaller (opening succeeds on a full disk)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab"):
                pass
        except OSError as exc:
            raise AuditWriteError(f"audit trail {self.path} is not writable: {exc.strerror}") from None
        free, needed, least = self.free_bytes(), self._needed_free(), RECORD_HEADROOM_BYTES // 1024
        if free < needed:
            raise AuditWriteError(
                f"audit trail {self.path}: {free // 1024} KiB free on its disk, below the reserve "
                f"({needed // 1024} KiB: audit.min_free_bytes, at least {least} KiB for records): "
                "free space or move audit.path",
                reason=f"below the reserve (audit.min_free_bytes, at least {least} KiB)",
            )

    def _needed_free(self) -> int:
        return reserve_bytes(self._min_free)

    def free_bytes(self) -> int:
        """Free space on the trail's disk for an unprivileged writer."""
        return free_bytes(self.path.parent)

    def space_ok(self) -> bool:
        return self.free_bytes() >= self._needed_free()

    def admit(self, fields: dict[str, Any], key: AuditKey | None = None) -> dict[str, Any]:
        """Sign and append the admit record of a request about to be forwarded to the model
        (``kind: "admit"``; *fields* must hold its ``request_id`` and ``tenant``); durable like
        :meth:`append`, so it is on disk before the first byte goes out. The request's
        :meth:`append` with the same request_id and tenant completes it."""
        if not isinstance(fields.get("request_id"), str):
            raise ValueError("an admit record needs the request_id its final record will carry")
        return self._append("admit", fields, key)

    def append(self, fields: dict[str, Any], key: AuditKey | None = None) -> dict[str, Any]:
        """Sign and append one request record with *key* (default: the current audit key);
        returns the sealed record. It completes the oldest open admit with its request_id and
        tenant, if any."""
        return self._append("request", fields, key)

    def event(self, kind: str, fields: dict[str, Any], key: AuditKey | None = None) -> dict[str, Any]:
        """Sign and append a record of another *kind* than a request's (e.g. ``"incident"``: a
        use case suspended or resumed); chained, signed and durable like :meth:`append`."""
        if kind in {"admit", "request", "key"}:
            raise ValueError(f"use admit() or append() for {kind!r} records")
        return self._append(kind, fields, key)

    def finish_abandoned(self, key: AuditKey | None = None) -> list[str]:
        """Complete the admits a previous process left open with ``outcome: "abandoned"``
        records (the request reached the model; its process died before its final record).
        Done by the first :meth:`admit` or :meth:`append` anyway; the ids completed."""
        if not self._orphans:
            return []
        return self._finish_orphans(self._key_record(key))

    def _append(self, kind: str, fields: dict[str, Any], key: AuditKey | None) -> dict[str, Any]:
        key = self._key_record(key)
        if self._orphans:
            self._finish_orphans(key)
        record = self._write({**fields, "kind": kind, "kid": key.kid}, key)
        if self._batch is None:  # a batch is sealed, if due, once it is written (by its writer)
            self.seal_if_due_noting()
        return record

    # -- group commit --------------------------------------------------------------------
    def begin_batch(self) -> None:
        """Records appended from now until :meth:`commit_batch` are chained and signed at once
        but written together by it (one write, one fdatasync)."""
        if self._batch is not None:
            raise RuntimeError("an audit batch is open already")
        self._batch = _Batch(self._state())

    def commit_batch(self) -> None:
        """Write the open batch's records durably; AuditWriteError when they cannot be, and then
        none of them is in the trail (the file cut back, the chain state as before the batch).
        Does not seal: the caller tells the batch's callers first, then calls
        :meth:`seal_if_due_noting`."""
        batch, self._batch = self._batch, None
        if batch is None or not batch.lines:
            return
        try:
            self._append_durably(b"".join(batch.lines))
        except AuditWriteError:
            self._restore(batch.before)
            raise
        if batch.head is not None:
            self._update_head(batch.head)

    def _state(self) -> tuple[Any, ...]:
        return (self._seq, self._prev, self._kid, self._segment_first, self._segment_bytes,
                self._segment_started, dict(self._admitted._open), list(self._orphans))  # fmt: skip

    def _restore(self, state: tuple[Any, ...]) -> None:
        (self._seq, self._prev, self._kid, self._segment_first, self._segment_bytes,
         self._segment_started, self._admitted._open, self._orphans) = state  # fmt: skip

    def _key_record(self, key: AuditKey | None) -> AuditKey:
        """The key to sign with, introduced by a key record if the active file lacks it."""
        key = key or self._keys.current()
        if key.kid != self._kid:
            self._write({"kind": "key", "kid": key.kid, "wrapped": key.wrapped}, key)
            self._kid = key.kid
        return key

    def _finish_orphans(self, key: AuditKey) -> list[str]:
        done = []
        while self._orphans:
            info = self._orphans[0]
            fields = {k: info[k] for k in Admitted.COPIED}
            self._write(
                {
                    **fields,
                    "kind": "request",
                    "kid": key.kid,
                    "request_id": info["request_id"],
                    "admit_seq": info["seq"],
                    "outcome": ABANDONED,
                    "status": None,
                },
                key,
            )
            self._orphans.pop(0)
            done.append(str(info["request_id"]))
        return done

    def seal_if_due(self) -> Path | None:
        """Seal the active segment when it reached its size or age limit; the sealed file."""
        if self._segment_first is None:
            return None
        full = self._max_bytes is not None and self._segment_bytes >= self._max_bytes
        old = self._max_age_s is not None and time.monotonic() - self._segment_started >= self._max_age_s
        return self.seal() if full or old else None

    def seal(self) -> Path | None:
        """Close the active segment: rename it into the segments folder, read-only. The chain
        continues in a new active file, whose first record introduces the key again."""
        if self._batch is not None:
            raise RuntimeError("an audit segment cannot be sealed while a batch is open")
        if self._segment_first is None or not self.path.exists():
            return None
        folder = segments_dir(self.path)
        target = folder / segment_name(self._segment_first)
        try:
            # inside the try: a folder that cannot be made (a file in its place, a read-only or
            # full disk) is an AuditWriteError like any other, never an OSError that ends the
            # writer thread
            folder.mkdir(mode=0o700, exist_ok=True)
            if target.exists():
                raise AuditWriteError(f"audit segment {target} exists already; the trail was tampered with")
            os.rename(self.path, target)
            os.utime(target)  # its modification time says when it was sealed (shipping_state)
            os.chmod(target, 0o400)
            fd = os.open(folder, os.O_RDONLY)  # the rename is durable once the folder is synced
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditWriteError(f"cannot seal audit segment {target}: {exc.strerror}") from None
        self._segment_first, self._segment_bytes, self._kid = None, 0, None
        return target

    def _write_head(self, data: bytes) -> None:
        """Overwrite the head in place with one fixed-size write (a rename per record costs
        more than the rest of the record; a single write below a page is not torn)."""
        if len(data) > HEAD_SIZE:
            raise AuditWriteError("audit head record too large")
        if self._head_fd is None:
            self._head_fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._head_fd, data.ljust(HEAD_SIZE, b" "), 0)

    def _append_durably(self, data: bytes) -> None:
        """Append *data* (whole records) and fdatasync it; on any failure cut the file back to
        where it was (never half a record: the chain would end in a damaged line) and raise
        AuditWriteError."""
        try:
            # opened per write (the path, not a kept descriptor, is the trail: a moved or
            # replaced file is noticed at once); raw os calls skip the io layer's objects
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size  # one writer: where these records start
                try:
                    if os.write(fd, data) != len(data):
                        raise OSError(28, "No space left on device (short write)")
                    if self._fsync:
                        os.fdatasync(fd)  # data and size; half the cost of fsync here
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditWriteError(f"cannot append to audit trail {self.path}: {exc.strerror}") from None

    def _advance(self, record: dict[str, Any], line: bytes) -> None:
        """The chain state after *record* (written, or in the open batch)."""
        if self._segment_first is None:
            self._segment_first, self._segment_started = record["seq"], time.monotonic()
        self._segment_bytes += len(line)
        self._seq += 1
        self._prev = record["hash"]
        self._admitted.note(record)

    def _update_head(self, head: dict[str, Any]) -> None:
        try:
            self._write_head(canonical(head))
        except (OSError, AuditWriteError) as exc:
            # a head that lags is accepted by verify (it only has to name a record of the trail)
            self._note_problem(f"audit head not updated: {getattr(exc, 'strerror', None) or exc}")

    def close(self) -> None:
        if self._head_fd is not None:
            os.close(self._head_fd)
            self._head_fd = None

    def _write(self, fields: dict[str, Any], key: AuditKey) -> dict[str, Any]:
        body = {
            "seq": self._seq,
            "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
            "prev": self._prev,
            **fields,
        }
        record, line = _seal(body, key.key)
        head = {
            "seq": record["seq"],
            "hash": record["hash"],
            "kid": key.kid,
            "mac": _head_mac(key.key, record["seq"], record["hash"]),
        }
        if self._batch is not None:  # written by commit_batch
            self._batch.lines.append(line)
            self._batch.head = head
            self._advance(record, line)
            return record
        self._append_durably(line)
        # the record is durable: from here on nothing may raise, or the caller would take a
        # written record for a missing one (and the next would reuse its seq)
        self._advance(record, line)
        self._update_head(head)
        return record


@dataclass
class _Batch:
    before: tuple[Any, ...]  # the chain state to go back to when the batch cannot be written
    lines: list[bytes] = field(default_factory=list)
    head: dict[str, Any] | None = None  # the head naming the batch's last record


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    batched: bool
    future: Future[Any]


class AuditWriter:
    """The one thread that writes a trail. Jobs run one at a time in the order handed over.
    Jobs that append records (*batched*) and wait together form one group commit: their records
    are written with one write and one fdatasync, and each job's future is resolved only when
    they are durable (or with the AuditWriteError when they are not); a batch is sealed, if due,
    after its futures are resolved. Other jobs (sealing) run alone, between batches.

    After :meth:`close` a job handed over runs at once in the caller's thread (once the writer
    thread has written everything handed over before): a record is never left on a queue that
    nobody reads. *inline*: no thread at all, every job runs so (an explicit opt-in; the gateway
    always runs the thread)."""

    def __init__(self, log: AuditLog, max_batch: int = 512, inline: bool = False) -> None:
        self._log = log
        self._max = max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._current: list[_Job] = []  # the round's jobs (failed, should the round raise)
        self._lock = threading.Lock()  # close against submit; jobs run in the caller one at a time
        self._closed = inline
        self._thread: threading.Thread | None = None
        if not inline:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, batched: bool = True) -> Future[Any]:
        """``fn(*args)`` in the writer thread; *batched*: fn appends records (and nothing else
        that must wait for their fdatasync). After :meth:`close`: in the caller's thread."""
        future: Future[Any] = Future()
        job = _Job(fn, args, batched, future)
        with self._lock:
            if not self._closed:
                self._jobs.put(job)
                return future
            if self._thread is not None:
                self._thread.join()  # it writes what was handed over before close (no-op once it has)
            # one record at a time, each durable (and sealed, if due) before it returns: no batch,
            # whose undo state would copy the open admits per record
            future.set_running_or_notify_cancel()
            _, result, error = self._call(job)
            _settle(future, result, error)
        return future

    def close(self, timeout_s: float | None = None) -> None:
        """Write everything handed over, then stop the thread; later jobs run in their caller."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                if not self._round():
                    return
            except BaseException as exc:  # a defect: the thread lives on, the jobs it held fail
                self._log._note_problem(f"audit writer: unexpected {type(exc).__name__}")
                self._fail_pending(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        """The jobs of a round that raised: each gets the error (a job already settled keeps its
        result)."""
        for job in self._current:
            if not job.future.done():
                with contextlib.suppress(Exception):
                    job.future.set_exception(AuditWriteError(f"audit writer: {type(exc).__name__}"))
        self._current = []
        if self._log._batch is not None:
            with contextlib.suppress(Exception):
                self._log._restore(self._log._batch.before)
            self._log._batch = None

    def _round(self) -> bool:
        """One round of the writer: the jobs waiting now; False once told to stop."""
        jobs = [self._jobs.get()]
        while len(jobs) < self._max:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        self._current = [job for job in jobs if job is not None]
        batch: list[tuple[_Job, Any, BaseException | None]] = []
        for job in jobs:
            if job is None:
                self._commit(batch)
                self._current = []
                return False
            if not job.future.set_running_or_notify_cancel():
                continue
            if job.batched:
                if not batch:
                    self._log.begin_batch()
                batch.append(self._call(job))
                continue
            self._commit(batch)
            batch = []
            _, result, error = self._call(job)
            _settle(job.future, result, error)
        self._commit(batch)
        self._current = []
        return True

    @staticmethod
    def _call(job: _Job) -> tuple[_Job, Any, BaseException | None]:
        try:
            return job, job.fn(*job.args), None
        except Exception as exc:
            return job, None, exc

    def _commit(self, batch: list[tuple[_Job, Any, BaseException | None]]) -> None:
        if not batch:
            return
        failure: BaseException | None = None
        try:
            self._log.commit_batch()
        except Exception as exc:  # AuditWriteError: none of the batch's records is in the trail
            failure = exc
        for job, result, error in batch:
            _settle(job.future, result, error or failure)
        if failure is None:  # the callers are told first: a seal is no part of their records
            self._log.seal_if_due_noting()


def _settle(future: Future[Any], result: Any, error: BaseException | None) -> None:
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class VerifyResult:
    ok: bool
    records: int
    message: str
    line: int | None = None
    # request ids admitted (forwarded to the model) that no later record completes: in flight
    # now on a live trail, or lost in a crash the gateway has not restarted from yet
    unfinished: list[str] = field(default_factory=list)
    # request ids completed with outcome abandoned: ended by a restart after a crash
    abandoned: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """The lines `sovereign audit verify` prints: the verdict, then the unfinished and
        abandoned requests by id (ids and counts only; records never hold text)."""
        lines = [("OK " if self.ok else "BROKEN ") + self.message]
        scope = "" if self.ok else " (in the records before the break)"
        if self.unfinished:
            lines.append(
                f"{_count(self.unfinished)} forwarded to the model and {_have(self.unfinished)} no final "
                f"record (in flight now, or lost in a crash){scope}: {' '.join(self.unfinished)}"
            )
        if self.abandoned:
            lines.append(
                f"{_count(self.abandoned)} ended by a restart after a crash (outcome abandoned){scope}: "
                f"{' '.join(self.abandoned)}"
            )
        return lines


def _count(ids: list[str]) -> str:
    return f"{len(ids)} request was" if len(ids) == 1 else f"{len(ids)} requests were"


def _have(ids: list[str]) -> str:
    return "has" if len(ids) == 1 else "have"


@dataclass(frozen=True)
class Segment:
    """A sealed segment of the chain, wherever it is kept (a local file, the archive)."""

    first_seq: int
    source: str  # for messages: a path or an s3:// URL
    read: Callable[[], bytes]


def _pieces(path: Path, archived: Sequence[Segment]) -> tuple[list[Segment], str | None]:
    """The trail's segments in chain order (local and archived, each once) then the active
    file; or the reason a segment kept twice differs between its copies."""
    by_first: dict[int, Segment] = {}
    for first, file in local_segments(path):
        by_first[first] = Segment(first, str(file), file.read_bytes)
    for segment in archived:
        known = by_first.get(segment.first_seq)
        if known is None:
            by_first[segment.first_seq] = segment
        elif hashlib.sha256(known.read()).digest() != hashlib.sha256(segment.read()).digest():
            return [], (
                f"segment {segment_name(segment.first_seq)} differs between {known.source} and "
                f"{segment.source}: one copy was altered"
            )
    pieces = [by_first[k] for k in sorted(by_first)]
    if path.exists() and path.stat().st_size:
        pieces.append(Segment(-1, str(path), path.read_bytes))  # first seq: whatever comes next
    return pieces, None


def _check(
    raw: bytes, seq: int, prev: str, keys: dict[str, bytes], unwrap: Callable[[str], bytes]
) -> tuple[str | None, str, dict[str, Any]]:
    """(why the record is broken or None, its hash, the record). Learns keys from key records."""
    if not raw.endswith(b"\n"):
        return "record is cut off (no line end): the file was truncated", "", {}
    try:
        record = json.loads(raw)
    except ValueError:
        return "not valid JSON: the record was damaged or truncated", "", {}
    if not isinstance(record, dict) or not {"seq", "prev", "hash", "mac", "kid"} <= record.keys():
        return "missing chain fields (seq, prev, hash, mac, kid)", "", {}
    if record["seq"] != seq:
        moved = "a record was deleted, inserted or reordered"
        return f"sequence number is {record['seq']}, expected {seq}: {moved}", "", {}
    if record["prev"] != prev:
        return "prev does not match the previous record's hash: the chain was cut or reordered", "", {}
    body = {k: v for k, v in record.items() if k not in {"hash", "mac"}}
    digest = hashlib.sha256(canonical(body)).hexdigest()
    if digest != record["hash"]:
        return "content does not match its hash: the record was edited", "", {}
    kid = record["kid"]
    if record.get("kind") == "key":
        try:
            keys[kid] = unwrap(str(record["wrapped"]))
        except Exception as exc:  # any unwrap failure is a verification failure
            return f"cannot unwrap audit key {kid}: {type(exc).__name__}", "", {}
    if kid not in keys:
        return f"signed with key {kid}, which no earlier key record introduces", "", {}
    mac = hmac.new(keys[kid], digest.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, str(record["mac"])):
        return "HMAC signature does not match: the record was forged or re-hashed", "", {}
    return None, digest, record


def verify(
    path: Path, unwrap: Callable[[str], bytes], check_head: bool = True, archived: Sequence[Segment] = ()
) -> VerifyResult:
    """Verify the whole chain — the *archived* segments, the sealed segments beside *path* and
    the active file *path* — and stop at and name the first broken record, or the first
    records that no segment holds.

    *unwrap* turns a key record's wrapped key into the HMAC key (OpenBao transit decrypt).
    With *check_head*, the signed head must name a record of the trail: a head beyond the
    last record means records were cut from the end. (A head that lags behind is accepted:
    the head is written after its record and not fsync'd, so a crash can leave it one
    behind; the records after it are chained and signed like all others.)

    The result also names, by request id, the admits that no later record of the chain
    completes (``unfinished``) and the requests completed as abandoned after a crash
    (``abandoned``), in the records verified.
    """
    admitted, abandoned = Admitted(), list[str]()
    result = _verify_chain(path, unwrap, check_head, archived, admitted, abandoned)
    result.unfinished, result.abandoned = admitted.ids(), abandoned
    return result


def _verify_chain(
    path: Path,
    unwrap: Callable[[str], bytes],
    check_head: bool,
    archived: Sequence[Segment],
    admitted: Admitted,
    abandoned: list[str],
) -> VerifyResult:
    """:func:`verify`'s chain walk; every verified record also goes to *admitted*, and the
    request ids of abandoned completions to *abandoned*."""
    head: dict[str, Any] | None = None
    head_path = path.with_name(path.name + ".head")
    if check_head:
        try:
            head = json.loads(head_path.read_bytes())
        except FileNotFoundError:
            return VerifyResult(False, 0, f"head file {head_path} is missing: cannot rule out truncation")
        except ValueError:
            head = None
        if not (
            isinstance(head, dict)
            and isinstance(head.get("seq"), int)
            and all(isinstance(head.get(k), str) for k in ("hash", "kid", "mac"))
        ):
            return VerifyResult(False, 0, f"head file {head_path} is damaged")
    pieces, conflict = _pieces(path, archived)
    if conflict is not None:
        return VerifyResult(False, 0, conflict)
    keys: dict[str, bytes] = {}
    prev = GENESIS
    count = 0
    hash_at_head: str | None = None
    previous = "the start of the chain"
    for piece in pieces:
        if piece.first_seq > count:
            return VerifyResult(
                False, count,
                f"records {count}-{piece.first_seq - 1} are missing: no segment, local or archived, holds "
                f"them (the chain jumps from {previous} to {piece.source})",
            )  # fmt: skip
        if 0 <= piece.first_seq < count:
            return VerifyResult(
                False, count, f"{piece.source} starts at seq {piece.first_seq}, inside {previous}"
            )
        for lineno, raw in enumerate(piece.read().splitlines(keepends=True), start=1):
            why, digest, record = _check(raw, count, prev, keys, unwrap)
            if why is not None:
                return VerifyResult(
                    False, count, f"{piece.source} line {lineno} (seq {count}): {why}", lineno
                )
            admitted.note(record)
            if record.get("kind") == "request" and record.get("outcome") == ABANDONED:
                abandoned.append(str(record.get("request_id")))
            if head is not None and count == head["seq"]:
                hash_at_head = digest
            prev = digest
            count += 1
        previous = piece.source

    if head is not None:
        head_key = keys.get(head["kid"])
        if head_key is None or not hmac.compare_digest(
            _head_mac(head_key, head["seq"], head["hash"]), str(head["mac"])
        ):
            return VerifyResult(False, count, f"head file {head_path} signature does not match")
        if hash_at_head is None:
            return VerifyResult(
                False,
                count,
                f"the trail ends at seq {count - 1} but the signed head records seq "
                f"{head['seq']}: records were removed from the end (truncated)",
                count + 1,
            )
        if hash_at_head != head["hash"]:
            return VerifyResult(False, count, f"record seq {head['seq']} differs from the signed head")
    return VerifyResult(True, count, f"OK: {count} records, chain and signatures intact")
