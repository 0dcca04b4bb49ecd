"""Ship the gateway's sealed audit segments to the Object Lock archive, in order, and read them
back for ``sovereign audit verify``.

Each trail (one per gateway pod: one writer per chain) has its own prefix in the archive,
``<storage.audit_archive><chain>/``, and each sealed segment becomes one object named by the
records it holds, ``<first seq>-<last seq>.jsonl`` (12 digits each), so the archive's listing
alone shows whether it is contiguous. Every object is written with a SHA-256 checksum the
server verifies, and with an Object Lock retention (``storage.audit_retention_days``,
``storage.audit_lock_mode``): nobody deletes it before the retention ends.

Shipping keeps the archive contiguous: a segment goes up only when it starts right after the
archive's last record; otherwise the command stops and names the missing records. A segment
that is already archived is compared byte for byte; a difference is reported as tampering.
``--prune`` removes local segments that the archive holds identically, except the newest (the
gateway continues its chain from it after a restart). A complete round rewrites the trail's
``<file>.shipped`` marker (gateway/audit.py ``write_shipped``: the first seq the archive lacks),
from which the gateway exports, at scrape time, how long sealed segments have waited and when
the last round succeeded (docs/operations.md, "Audit shipping").
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit import AuditWriteError, Segment, local_segments, write_shipped
from gateway.settings import AuditArchiveSettings
from infra import objectstore
from infra.config import StackConfig, s3_location

_NAME = re.compile(r"^(\d{12})-(\d{12})\.jsonl$")


@dataclass(frozen=True)
class Archive:
    s3: Any
    bucket: str
    prefix: str  # ends with "<chain>/"
    endpoint: str
    retention_days: int
    lock_mode: str
    stack: str | None = None

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


def default_chain() -> str:
    return socket.gethostname()


def from_stack(cfg: StackConfig, chain: str) -> Archive:
    if cfg.storage.audit_archive is None:
        raise objectstore.StorageError(
            f"stack {cfg.stack!r}: storage.audit_archive is not set; name the Object Lock bucket, e.g. "
            "s3://sovereign-audit-eu-central/gateway/, and run `sovereign bootstrap-backend`"
        )
    bucket, prefix = s3_location(cfg.storage.audit_archive)
    return Archive(
        objectstore.stack_client(cfg), bucket, f"{prefix}{_chain(chain)}/",
        objectstore.endpoint_url(cfg.endpoints.object_storage), cfg.storage.audit_retention_days,
        cfg.storage.audit_lock_mode, cfg.stack,
    )  # fmt: skip


def from_settings(settings: AuditArchiveSettings, chain: str | None) -> Archive:
    """The archive named in the gateway's settings (rendered from the stack by the platform)."""
    reviewed = [h.entry() for h in settings.reviewed_hosts]
    try:
        bucket, prefix = s3_location(settings.url)
    except ValueError as exc:
        raise objectstore.StorageError(f"audit.archive.url {settings.url!r}: {exc}") from None
    return Archive(
        objectstore.client(settings.endpoint, reviewed, settings.region), bucket,
        f"{prefix}{_chain(chain or settings.chain or default_chain())}/",
        objectstore.endpoint_url(settings.endpoint), settings.retention_days, settings.lock_mode,
    )  # fmt: skip


def _chain(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
        raise objectstore.StorageError(
            f"chain {name!r}: use letters, digits, '.', '_' or '-' (the trail's name in the archive, "
            "e.g. the gateway pod's name)"
        )
    return name


@dataclass(frozen=True)
class Archived:
    first: int
    last: int
    key: str


def _call(archive: Archive, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    import botocore.exceptions

    try:
        return fn(**kwargs)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise objectstore.explain(exc, what, archive.endpoint, archive.stack) from None


def archived(archive: Archive) -> list[Archived]:
    """The archive's segments of this chain, in order; other objects under the prefix are named."""
    objectstore.require_bucket(archive.s3, archive.bucket, archive.endpoint, archive.stack)
    found = []
    pages = archive.s3.get_paginator("list_objects_v2").paginate(Bucket=archive.bucket, Prefix=archive.prefix)
    for page in _call(archive, f"bucket {archive.bucket!r}", lambda: list(pages)):
        for item in page.get("Contents", []):
            name = item["Key"][len(archive.prefix) :]
            match = _NAME.match(name)
            if match is None:
                raise objectstore.StorageError(
                    f"{archive.url(name)}: not an audit segment name (<first>-<last>.jsonl); the archive "
                    "holds only sealed segments"
                )
            found.append(Archived(int(match[1]), int(match[2]), item["Key"]))
    return sorted(found, key=lambda a: a.first)


def _name(archive: Archive, key: str) -> str:
    return key[len(archive.prefix) :]


def _read(archive: Archive, key: str) -> bytes:
    answer = _call(archive, archive.url(_name(archive, key)), archive.s3.get_object,
                   Bucket=archive.bucket, Key=key)  # fmt: skip
    return bytes(answer["Body"].read())


def segments(archive: Archive) -> list[Segment]:
    """The archived segments as :class:`gateway.audit.Segment` for ``verify`` (read lazily)."""
    return [
        Segment(a.first, archive.url(_name(archive, a.key)), functools.partial(_read, archive, a.key))
        for a in archived(archive)
    ]


def _bounds(file: Path, data: bytes) -> tuple[int, int]:
    import json

    lines = data.splitlines()
    try:
        return int(json.loads(lines[0])["seq"]), int(json.loads(lines[-1])["seq"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise AuditWriteError(f"{file}: not a sealed audit segment (empty or damaged)") from None


@dataclass
class ShipResult:
    shipped: list[str] = field(default_factory=list)
    already: int = 0
    pruned: list[str] = field(default_factory=list)


def ship(trail: Path, archive: Archive, prune: bool = False) -> ShipResult:
    """Ship every sealed local segment the archive lacks, oldest first; see the module doc."""
    remote = {a.first: a for a in archived(archive)}
    next_seq = max((a.last for a in remote.values()), default=-1) + 1
    result = ShipResult()
    identical: list[Path] = []
    local = local_segments(trail)
    for first, file in local:
        data = file.read_bytes()
        start, last = _bounds(file, data)
        if start != first:
            raise AuditWriteError(f"{file}: named for seq {first} but starts at seq {start}; it was renamed")
        copy = remote.get(first)
        if copy is not None:
            same = copy.last == last and _read(archive, copy.key) == data
            if not same:
                raise objectstore.StorageError(
                    f"{file} differs from its archived copy {archive.url(_name(archive, copy.key))}: one "
                    "of them was altered; nothing shipped — run `sovereign audit verify` to see which"
                )
            result.already += 1
            identical.append(file)
            continue
        if first > next_seq:
            where = "after the archive's last record" if remote or result.shipped else "at the chain's start"
            raise objectstore.StorageError(
                f"records {next_seq}-{first - 1} are missing {where}: neither {archive.url()} nor a local "
                f"segment holds them, so {file.name} is not shipped (the archive stays contiguous); "
                "find the missing segment or record the loss"
            )
        if first < next_seq:
            raise objectstore.StorageError(
                f"{file} (from seq {first}) overlaps the archive, which holds records up to {next_seq - 1}"
            )
        digest = hashlib.sha256(data)
        name = f"{first:012d}-{last:012d}.jsonl"
        _call(
            archive, archive.url(name), archive.s3.put_object,
            Bucket=archive.bucket, Key=archive.prefix + name, Body=data,
            ContentType="application/x-ndjson",
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
            # Object Lock uploads need an integrity header S3 servers check before they lock it
            ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            Metadata={"sha256": digest.hexdigest(), "first-seq": str(first), "last-seq": str(last)},
            ObjectLockMode=archive.lock_mode,
            ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=archive.retention_days),
        )  # fmt: skip
        result.shipped.append(archive.url(name))
        identical.append(file)
        next_seq = last + 1
    if prune:
        newest = local[-1][1] if local else None
        for file in identical:
            if file != newest:  # the gateway continues its chain from the newest after a restart
                file.chmod(0o600)
                file.unlink()
                result.pruned.append(file.name)
    try:
        if trail.parent.is_dir():  # no trail folder, nothing to say about it
            write_shipped(trail, next_seq)
    except OSError as exc:
        raise AuditWriteError(f"cannot record the shipped state beside {trail}: {exc.strerror}") from None
    return result


def ship_every(
    trail: Path,
    archive: Archive,
    interval_s: float,
    prune: bool,
    report: Callable[[str], None],
    heartbeat: Path | None = None,
) -> None:
    """Ship, then again every *interval_s* seconds (the gateway pod's sidecar); a failure is
    reported and retried at the next round, never fatal. *heartbeat* is touched after every
    round, for the container's liveness probe (a hung round stops the touches)."""
    while True:
        try:
            result = ship(trail, archive, prune)
            if result.shipped or result.pruned:
                report(f"shipped {len(result.shipped)}, pruned {len(result.pruned)}")
        except (objectstore.StorageError, AuditWriteError) as exc:
            report(f"error: {exc}")
        if heartbeat is not None:
            heartbeat.touch()
        time.sleep(interval_s)
