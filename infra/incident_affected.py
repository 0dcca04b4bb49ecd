"""``sovereign incident affected``: which requests an incident touched, from the audit trail,
without reading any patient data (the trail holds none: docs/audit-trail.md).

The trail is verified first — the same chain, signature and head check as ``sovereign audit
verify`` (gateway.audit.verify), over the local segments, the archived ones (``--stack``) and the
active file — and the records are then selected from *the very bytes that were verified*: every
segment is read once into memory and the active file and its head are copied, so a record
appended or a segment sealed meanwhile cannot slip in unverified. A broken chain selects nothing.

A request is listed once, by ``request_id`` and ``tenant``: its admit (forwarded to the model)
and its final record are merged. What comes out — request ids, tenants, client key ids, use
cases, outcomes, policy versions, and the *counts* of PHI categories tokenised or removed — is
what the shop (the controller) maps back to its orders and patients on its side: the gateway
answers every request with ``x-request-id`` (or keeps the client's UUID), which the shop's
integration stores with the order or customer it served (docs/runbooks/incident-reporting.md,
"Finding the affected patients").
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit import Segment, VerifyResult, local_segments, verify
from gateway.errors import SovereignError

COLUMNS = (
    "first_ts", "request_id", "tenant", "key_id", "use_case", "policy_version", "model",
    "forwarded", "outcome", "status", "phi_tokenised", "phi_removed", "unrestored",
    "context_fields_dropped",
)  # fmt: skip
KINDS = ("admit", "request")


class AffectedError(SovereignError, ValueError):
    """A refused `sovereign incident affected` (the message names the option and the fix)."""


@dataclass
class Affected:
    request_id: str
    tenant: str
    first_ts: str
    key_id: str = ""
    use_case: str = ""
    policy_version: str = ""
    model: str = ""
    forwarded: bool = False  # an admit record: the request reached the model
    outcome: str = ""  # empty: no final record (in flight, or lost in a crash)
    status: str = ""
    tokenised: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    unrestored: int = 0
    dropped: list[str] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        return {
            "first_ts": self.first_ts,
            "request_id": self.request_id,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "use_case": self.use_case,
            "policy_version": self.policy_version,
            "model": self.model,
            "forwarded": "yes" if self.forwarded else "no",
            "outcome": self.outcome,
            "status": self.status,
            "phi_tokenised": _counts(self.tokenised),
            "phi_removed": _counts(self.removed),
            "unrestored": str(self.unrestored),
            "context_fields_dropped": " ".join(self.dropped),
        }


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime  # exclusive
    use_case: str | None = None
    tenant: str | None = None
    key_id: str | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if record.get("kind") not in KINDS:
            return False
        try:
            ts = datetime.fromisoformat(str(record.get("ts")))
        except ValueError:
            return False
        if not self.start <= ts < self.end:
            return False
        return all(
            want is None or record.get(name) == want
            for name, want in (("use_case", self.use_case), ("tenant", self.tenant), ("key_id", self.key_id))
        )


def parse_time(value: str, option: str) -> datetime:
    """An ISO 8601 time; a time without an offset is refused (the trail is in UTC)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise AffectedError(
            f"{option}: not an ISO 8601 time; write it like 2026-11-30T14:00:00+00:00 (value not shown)"
        ) from None
    if parsed.tzinfo is None:
        raise AffectedError(f"{option}: the time has no UTC offset; add +00:00 (or Z) so it is unambiguous")
    return parsed.astimezone(UTC)


def _memo(source: str, first_seq: int, read: Callable[[], bytes]) -> Segment:
    data = read()
    return Segment(first_seq, source, lambda: data)


@dataclass
class Snapshot:
    """The trail's bytes, read once: segments (local and archived) in chain order, then the active file."""

    folder: Path  # holds the copy of the active file and its head
    segments: list[Segment]

    @property
    def active(self) -> Path:
        return self.folder / "audit.jsonl"

    def records(self) -> Iterator[dict[str, Any]]:
        import json

        by_first: dict[int, Segment] = {}
        for segment in self.segments:
            by_first.setdefault(segment.first_seq, segment)  # verify checked that copies agree
        chunks = [by_first[k].read() for k in sorted(by_first)]
        if self.active.exists():
            chunks.append(self.active.read_bytes())
        for chunk in chunks:
            for line in chunk.splitlines():
                yield json.loads(line)


def snapshot(path: Path, archived: Sequence[Segment], folder: Path) -> Snapshot:
    """Copy the head first, then read the segments, then the active file: a head that lags is
    accepted by verify, one ahead of its file is not (a seal in between shows as a gap: run again)."""
    head = path.with_name(path.name + ".head")
    if head.exists():
        shutil.copyfile(head, folder / "audit.jsonl.head")
    segments = [_memo(str(file), first, file.read_bytes) for first, file in local_segments(path)]
    segments += [_memo(s.source, s.first_seq, s.read) for s in archived]
    if path.exists():
        shutil.copyfile(path, folder / "audit.jsonl")
    return Snapshot(folder, segments)


def find(
    path: Path,
    unwrap: Callable[[str], bytes],
    window: Window,
    archived: Sequence[Segment] = (),
    check_head: bool = True,
) -> tuple[VerifyResult, list[Affected]]:
    """Verify the trail at *path* (with its *archived* segments) and select the requests in
    *window*; no requests when the chain is broken."""
    with tempfile.TemporaryDirectory(prefix="sovereign-affected-") as tmp:
        snap = snapshot(path, archived, Path(tmp))
        result = verify(snap.active, unwrap, check_head=check_head, archived=snap.segments)
        result.message = result.message.replace(
            str(snap.folder / "audit.jsonl"), str(path)
        )  # the copy's name
        if not result.ok:
            return result, []
        found: dict[tuple[str, str], Affected] = {}
        for record in snap.records():
            if not window.matches(record):
                continue
            key = (str(record.get("request_id")), str(record.get("tenant")))
            entry = found.get(key)
            if entry is None:
                entry = found[key] = Affected(key[0], key[1], str(record["ts"]))
            _merge(entry, record)
    return result, sorted(found.values(), key=lambda a: (a.first_ts, a.request_id))


def _merge(entry: Affected, record: dict[str, Any]) -> None:
    for name in ("key_id", "use_case", "policy_version", "model"):
        if record.get(name) and not getattr(entry, name):
            setattr(entry, name, str(record[name]))
    if record.get("kind") == "admit":
        entry.forwarded = True
        return
    entry.outcome = str(record.get("outcome") or "")
    entry.status = "" if record.get("status") is None else str(record["status"])
    if record.get("admit_seq") is not None:
        entry.forwarded = True
    phi = record.get("phi") or {}
    for target, source in ((entry.tokenised, phi.get("tokenised")), (entry.removed, phi.get("removed"))):
        for category, n in (source or {}).items():
            if isinstance(n, int):
                target[str(category)] = target.get(str(category), 0) + n
    unrestored = phi.get("unrestored")
    entry.unrestored += unrestored if isinstance(unrestored, int) else 0
    dropped = phi.get("context_fields_dropped") or record.get("dropped_fields") or []
    entry.dropped = sorted({*entry.dropped, *(str(d) for d in dropped)})


def to_csv(found: Sequence[Affected]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in found:
        writer.writerow(entry.row())
    return out.getvalue()


def summary(found: Sequence[Affected]) -> list[str]:
    """Counts per tenant and use case, and the PHI categories seen (for the notification's
    "categories and approximate number of records")."""
    by: dict[tuple[str, str], list[Affected]] = {}
    for entry in found:
        by.setdefault((entry.tenant, entry.use_case), []).append(entry)
    lines = []
    for (tenant, use_case), entries in sorted(by.items()):
        forwarded = sum(e.forwarded for e in entries)
        categories: dict[str, int] = {}
        for e in entries:
            for category, n in [*e.tokenised.items(), *e.removed.items()]:
                categories[category] = categories.get(category, 0) + n
        lines.append(
            f"tenant {tenant}  use case {use_case or '-'}: {len(entries)} requests, {forwarded} forwarded to "
            f"the model; PHI found: {_counts(categories) or 'none'}"
        )
    return lines
