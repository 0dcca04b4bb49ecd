"""OpenBao Raft snapshots in the stack's Object Lock bucket, and the restore that brings them back.

OpenBao's Raft storage holds the only copy of every tenant's data-key wrapping key and of the audit
HMAC key (transit), the policies and the tokens. A snapshot (``GET sys/storage/raft/snapshot``) is
that whole state, still encrypted by OpenBao's barrier: whoever holds it learns nothing without
the custodians' unseal keys, and a server that restores it needs those keys to unseal.

- **snapshot**: streamed from OpenBao to a temporary file while its SHA-256 is computed, then put
  in the bucket of ``storage.audit_archive`` (the stack's Object Lock bucket) under
  ``SNAPSHOT_PREFIX`` as ``<UTC time>.snap``, with a SHA-256 checksum the server verifies and an
  Object Lock retention of ``storage.openbao_snapshot_retention_days`` (in ``storage.audit_lock_mode``);
  then, with ``storage.openbao_snapshot_copy`` set, the same file under the same name, checksum and
  lock to the copy location (another EU location's object storage, e.g. the DR region's). A failed
  copy fails the run after the primary object is safe, naming the location that failed.
- **restore**: download a snapshot from either location (the DR takeover reads the copy; its SHA-256
  checked against the one recorded at upload), then ``POST sys/storage/raft/snapshot-force`` into a
  fresh, initialised and unsealed server (force: the fresh server's own unseal keys differ from the
  snapshot's). OpenBao checks the snapshot's
  own SHA256SUMS before it installs anything, then seals itself; it unseals with the *original*
  unseal keys, and every token, policy and key of the snapshot is back.

Errors are :class:`BackupError` (and :class:`infra.objectstore.StorageError` for the bucket): one
line naming what failed; never a token, an unseal key or a credential.
docs/backup-restore.md has the procedure; tests/storage/test_openbao_restore.py is the drill.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import hvac
import hvac.exceptions
import requests
from pydantic import BaseModel, Field, model_validator

from gateway import validation
from gateway.errors import SovereignError
from infra import objectstore, residency
from infra.config import OPENBAO_SNAPSHOT_RETENTION_DAYS, StackConfig, s3_location

# in the stack's Object Lock bucket (the bucket of storage.audit_archive), beside the audit archive
SNAPSHOT_PREFIX = "openbao-snapshots/"
# Snapshots stay locked storage.openbao_snapshot_retention_days (default 35), not the audit archive's
# ten years: a snapshot holds every tenant's wrapping key, so erasing a tenant by destroying its key
# (crypto-shredding) is complete only once the last snapshot holding the key has expired. Five weeks:
# a monthly restore drill always has four weeks of hourly snapshots to choose from.
RETENTION_DAYS = OPENBAO_SNAPSHOT_RETENTION_DAYS  # the default; the stack's value is in its config
# the primary location (the stack's Object Lock bucket) and the copy (storage.openbao_snapshot_copy)
Location = Literal["primary", "copy"]
LOCATIONS: tuple[Location, ...] = get_args(Location)
COPY_KEY = "storage.openbao_snapshot_copy"
SNAPSHOT_PATH = "sys/storage/raft/snapshot"
SNAPSHOT_POLICY = f"""
# sovereign-openbao-snapshot: read Raft snapshots (the backup CronJob); nothing else.
path "{SNAPSHOT_PATH}" {{ capabilities = ["read"] }}
"""
_NAME = re.compile(r"^\d{8}T\d{6}Z(-\d+)?\.snap$")
_CHUNK = 1 << 20


class BackupError(SovereignError, RuntimeError):
    """A snapshot could not be taken, stored, read or restored (the reason, never a secret)."""


@dataclass(frozen=True)
class SnapshotStore:
    s3: Any
    bucket: str
    prefix: str  # ends with "/"
    endpoint: str
    retention_days: int
    lock_mode: str
    stack: str | None = None
    location: Location = "primary"

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def describe(self) -> str:
        """The location for a message: which one, its endpoint and bucket (never a credential)."""
        return f"the {self.location} location ({self.endpoint}, bucket {self.bucket!r})"


class SnapshotTarget(BaseModel):
    """Where the CronJob puts snapshots (rendered from the stack by infra/k8s_platform/openbao.py)."""

    bucket: str = Field(description="The Object Lock bucket (that of storage.audit_archive).")
    prefix: str = Field(default=SNAPSHOT_PREFIX, description="Key prefix of the snapshots.")
    endpoint: str = Field(description="S3 endpoint URL (endpoints.object_storage).")
    region: str | None = Field(default=None, description="S3 region of the endpoint.")
    retention_days: int = Field(default=RETENTION_DAYS, ge=1, description="Object Lock retention.")
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = Field(default="COMPLIANCE")
    reviewed_hosts: list[residency.ReviewedEndpoint] = Field(default_factory=list)
    credentials_file: Path | None = Field(
        default=None,
        description="AWS shared-credentials file (default profile) with this location's key; "
        "None: boto3's usual chain (the pod's AWS_SHARED_CREDENTIALS_FILE).",
    )

    @model_validator(mode="after")
    def _endpoint_in_boundary(self) -> SnapshotTarget:
        problem = residency.endpoint_problem(self.endpoint, [h.entry() for h in self.reviewed_hosts])
        if problem:
            raise ValueError(f"endpoint: {problem}")
        return self


class SnapshotSettings(BaseModel):
    """The CronJob's settings file: OpenBao by Kubernetes auth, and the snapshot target."""

    openbao_address: str
    ca_file: Path | None = None
    kubernetes_role: str
    kubernetes_mount: str = "kubernetes"
    kubernetes_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    target: SnapshotTarget
    copy_target: SnapshotTarget | None = Field(
        default=None, description="The copy location (storage.openbao_snapshot_copy), if the stack has one."
    )


def store_from_stack(
    cfg: StackConfig, location: Location = "primary", profile: str | None = None
) -> SnapshotStore:
    """The stack's snapshot store in *location*: the Object Lock bucket of storage.audit_archive
    (primary), or storage.openbao_snapshot_copy's bucket (copy; its key from the AWS *profile*
    when given, else boto3's usual chain)."""
    t = target(cfg, location)
    client = objectstore.client(t.endpoint, cfg.residency.entries(), t.region, profile=profile)
    return SnapshotStore(
        client, t.bucket, SNAPSHOT_PREFIX, objectstore.endpoint_url(t.endpoint), t.retention_days,
        t.lock_mode, cfg.stack, location,
    )  # fmt: skip


def stores_from_stack(cfg: StackConfig, copy_profile: str | None = None) -> list[SnapshotStore]:
    """The primary store, then the copy's where the stack has one."""
    stores = [store_from_stack(cfg)]
    if cfg.storage.openbao_snapshot_copy is not None:
        stores.append(store_from_stack(cfg, "copy", copy_profile))
    return stores


def target(cfg: StackConfig, location: Location = "primary") -> SnapshotTarget:
    """The stack's snapshot target in *location* as the CronJob's settings file holds it."""
    if cfg.storage.audit_archive is None:
        raise objectstore.StorageError(
            f"stack {cfg.stack!r}: storage.audit_archive is not set; OpenBao snapshots go to its Object "
            "Lock bucket: name it and run `sovereign bootstrap-backend`"
        )
    if location == "primary":
        bucket, _ = s3_location(cfg.storage.audit_archive)
        endpoint, region = cfg.endpoints.object_storage, objectstore.stack_region(cfg)
    else:
        copy = cfg.storage.openbao_snapshot_copy
        if copy is None:
            raise objectstore.StorageError(
                f"stack {cfg.stack!r}: {COPY_KEY} is not set, so there is no copy location: name another EU "
                "location's endpoint and bucket there (docs/backup-restore.md)"
            )
        bucket, endpoint, region = copy.bucket, copy.endpoint, copy.region
    host = residency.host_of(endpoint)
    reviewed = [
        e for e in cfg.residency.extra_hosts if host == e.host.lower() or host.endswith("." + e.host.lower())
    ]
    return SnapshotTarget(
        bucket=bucket, endpoint=endpoint, region=region, lock_mode=cfg.storage.audit_lock_mode,
        retention_days=cfg.storage.openbao_snapshot_retention_days, reviewed_hosts=reviewed,
    )  # fmt: skip


def store_from_target(t: SnapshotTarget, location: Location = "primary") -> SnapshotStore:
    client = objectstore.client(
        t.endpoint, [h.entry() for h in t.reviewed_hosts], t.region, credentials_file=t.credentials_file
    )
    prefix = t.prefix if t.prefix.endswith("/") else t.prefix + "/"
    return SnapshotStore(
        client, t.bucket, prefix, objectstore.endpoint_url(t.endpoint), t.retention_days, t.lock_mode,
        location=location,
    )  # fmt: skip


def stores_from_settings(settings: SnapshotSettings) -> list[SnapshotStore]:
    """The CronJob's stores: the primary, then the copy where its settings name one."""
    stores = [store_from_target(settings.target)]
    if settings.copy_target is not None:
        stores.append(store_from_target(settings.copy_target, "copy"))
    return stores


def load_settings(path: Path) -> SnapshotSettings:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        raise BackupError(f"--config {path}: cannot be read") from None
    except yaml.YAMLError as exc:  # PyYAML's own message quotes the offending line
        raise BackupError(f"--config {path}: {validation.not_yaml(exc)}") from None
    return SnapshotSettings.model_validate(data)


# -- OpenBao ---------------------------------------------------------------------------------------
def _why(exc: BaseException) -> str:
    """OpenBao's own error messages (they name no token), else the exception's type."""
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(" ".join(str(e).split()) for e in errors)
    return type(exc).__name__


def client(
    address: str, token: str | None, ca_file: Path | None = None, timeout_s: float = 60
) -> hvac.Client:
    verify: str | bool = str(ca_file) if ca_file is not None else True
    return hvac.Client(url=address, token=token, timeout=timeout_s, verify=verify)  # type: ignore[arg-type]


def kubernetes_login(settings: SnapshotSettings) -> hvac.Client:
    """A client logged in through OpenBao's Kubernetes auth as the CronJob's role."""
    try:
        jwt = settings.kubernetes_token_file.read_text(encoding="utf-8").strip()
    except OSError:
        raise BackupError(f"no service-account token at {settings.kubernetes_token_file}") from None
    bao = client(settings.openbao_address, None, settings.ca_file)
    try:
        bao.auth.kubernetes.login(settings.kubernetes_role, jwt, mount_point=settings.kubernetes_mount)
    except hvac.exceptions.VaultError as exc:
        raise BackupError(
            f"OpenBao refused the Kubernetes login as role {settings.kubernetes_role!r}: {_why(exc)}"
        ) from None
    except requests.RequestException:
        raise BackupError(
            f"OpenBao at {settings.openbao_address} is unreachable (Kubernetes login)"
        ) from None
    return bao


@dataclass(frozen=True)
class Snapshot:
    path: Path
    sha256: str
    size: int


def take(bao: hvac.Client, dest: Path) -> Snapshot:
    """Stream a Raft snapshot from OpenBao into *dest* (mode 0600), hashing it on the way."""
    try:
        answer = bao.sys.take_raft_snapshot()  # type: ignore[no-untyped-call]
    except hvac.exceptions.Forbidden:
        raise BackupError(
            f"OpenBao refused the snapshot: the token lacks read on {SNAPSHOT_PATH} "
            "(policy sovereign-openbao-snapshot)"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise BackupError(f"OpenBao could not take a snapshot: {_why(exc)}") from None
    except requests.RequestException:
        raise BackupError(f"OpenBao at {bao.url} is unreachable (snapshot)") from None
    digest, size = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.touch(mode=0o600)
    try:
        with answer, dest.open("wb") as out:
            for chunk in answer.iter_content(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except requests.RequestException:
        raise BackupError(f"OpenBao at {bao.url} broke off the snapshot") from None
    if size == 0:
        raise BackupError("OpenBao sent an empty snapshot")
    return Snapshot(dest, digest.hexdigest(), size)


def restore(bao: hvac.Client, snapshot: Path) -> None:
    """Force-restore *snapshot* into the (initialised, unsealed) server of *bao*. OpenBao checks the
    snapshot's SHA256SUMS first and refuses an altered one; afterwards it is sealed with the
    snapshot's keys (see :func:`unseal`)."""
    try:
        with snapshot.open("rb") as data:
            bao.sys.force_restore_raft_snapshot(data)  # type: ignore[no-untyped-call]
    except hvac.exceptions.Forbidden:
        raise BackupError(
            "OpenBao refused the restore: the token lacks update on sys/storage/raft/snapshot-force "
            "(use the fresh server's root token)"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise BackupError(f"OpenBao refused the snapshot {snapshot.name}: {_why(exc)}") from None
    except requests.RequestException:
        raise BackupError(f"OpenBao at {bao.url} is unreachable (restore)") from None


def after_restore(
    address: str, ca_file: Path | None = None, timeout_s: float = 120, settle_s: float = 15
) -> bool:
    """Whether the server sealed itself after a restore: it does when the snapshot's keys are not
    its own (a fresh server; health turns 500, then 503 sealed). A snapshot of the same cluster
    (a roll-back) keeps it active: True once sealed, False after *settle_s* of active answers only."""
    import httpx

    verify: str | bool = str(ca_file) if ca_file is not None else True
    start = time.monotonic()
    changing = False
    while True:
        try:
            status = httpx.get(f"{address}/v1/sys/health", timeout=5, verify=verify).status_code
        except httpx.HTTPError:
            status = 0  # restarting its backend; ask again
        if status == 503:
            return True
        changing = changing or status != 200
        elapsed = time.monotonic() - start
        if not changing and elapsed > settle_s:
            return False
        if elapsed > timeout_s:
            raise BackupError(f"OpenBao at {address} neither sealed nor stayed active after the restore")
        time.sleep(0.2)


def unseal(address: str, keys: Iterable[str], ca_file: Path | None = None, timeout_s: float = 120) -> None:
    """Submit unseal keys (the custodians' original ones) until the server is unsealed, then wait
    until it is the active node. A wrong key is named by its position, never shown."""
    bao = client(address, None, ca_file)
    status: dict[str, Any] = {}
    for number, key in enumerate(keys, start=1):
        try:
            status = bao.sys.submit_unseal_key(key)
        except hvac.exceptions.VaultError as exc:
            raise BackupError(f"OpenBao refused unseal key #{number}: {_why(exc)}") from None
        except requests.RequestException:
            raise BackupError(f"OpenBao at {address} is unreachable (unseal)") from None
        if not status.get("sealed", True):
            break
    if status.get("sealed", True):
        raise BackupError(
            f"OpenBao is still sealed: {status.get('progress', 0)} of {status.get('t', '?')} unseal keys "
            "given; the custodians enter the rest (`bao operator unseal`)"
        )
    # unsealed is not yet serving: Raft elects this node leader first (health 200 = active)
    _wait(address, ca_file, timeout_s, lambda h: h.status_code == 200, "become active after unsealing")


def _wait(
    address: str, ca_file: Path | None, timeout_s: float, done: Callable[[Any], bool], what: str
) -> None:
    import httpx

    verify: str | bool = str(ca_file) if ca_file is not None else True
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if done(httpx.get(f"{address}/v1/sys/health", timeout=5, verify=verify)):
                return
        except httpx.HTTPError:
            pass  # restarting its listener's backend; ask again
        if time.monotonic() > deadline:
            raise BackupError(f"OpenBao at {address} did not {what} within {timeout_s:g} s")
        time.sleep(0.2)


# -- the bucket ------------------------------------------------------------------------------------
def _call(store: SnapshotStore, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    import botocore.exceptions

    try:
        return fn(**kwargs)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise objectstore.explain(exc, what, store.endpoint, store.stack) from None


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BackupError(
            f"{name!r} is not a snapshot name (<UTC time>.snap, as `sovereign openbao snapshots` lists)"
        )
    return name


def upload(store: SnapshotStore, snapshot: Snapshot, now: datetime | None = None) -> str:
    """Put *snapshot* in the bucket under Object Lock; returns its name (``<UTC time>.snap``)."""
    now = now or datetime.now(UTC)
    name = now.strftime("%Y%m%dT%H%M%SZ") + ".snap"
    md5 = hashlib.md5(usedforsecurity=False)
    with snapshot.path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            md5.update(chunk)
    with snapshot.path.open("rb") as body:
        _call(
            store, store.url(name), store.s3.put_object,
            Bucket=store.bucket, Key=store.prefix + name, Body=body, ContentType="application/gzip",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(snapshot.sha256)).decode(),
            # Object Lock uploads need an integrity header S3 servers check before they lock it
            ContentMD5=base64.b64encode(md5.digest()).decode(),
            Metadata={"sha256": snapshot.sha256, "size": str(snapshot.size)},
            ObjectLockMode=store.lock_mode,
            ObjectLockRetainUntilDate=now + timedelta(days=store.retention_days),
        )  # fmt: skip
    return name


def take_and_upload(bao: hvac.Client, store: SnapshotStore, *copies: SnapshotStore) -> tuple[str, Snapshot]:
    """A snapshot into the primary bucket, then under the same name into each copy location; the
    local file lives only in a private temporary folder. A failed copy raises BackupError once the
    primary object is safe, naming the location that failed (never a credential)."""
    with tempfile.TemporaryDirectory(prefix="openbao-snapshot-") as tmp:
        snap = take(bao, Path(tmp) / "raft.snap")
        now = datetime.now(UTC)
        name = upload(store, snap, now)
        for copy in copies:
            try:
                upload(copy, snap, now)
            except objectstore.StorageError as exc:
                raise BackupError(
                    f"snapshot {name} is safe in {store.describe()}, but its copy to {copy.describe()} "
                    f"failed: {exc}"
                ) from None
        return name, snap


@dataclass(frozen=True)
class Stored:
    name: str
    size: int
    modified: datetime


def snapshots(store: SnapshotStore) -> list[Stored]:
    """The bucket's snapshots, oldest first (other objects under the prefix are ignored)."""
    objectstore.require_bucket(store.s3, store.bucket, store.endpoint, store.stack)
    pages = store.s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.prefix)
    found = []
    for page in _call(store, f"bucket {store.bucket!r}", lambda: list(pages)):
        for item in page.get("Contents", []):
            name = item["Key"][len(store.prefix) :]
            if _NAME.match(name):
                found.append(Stored(name, int(item["Size"]), item["LastModified"]))
    return sorted(found, key=lambda s: s.name)


def download(store: SnapshotStore, name: str, dest: Path) -> Snapshot:
    """Fetch snapshot *name* (``latest``: the newest) into *dest*; its SHA-256 must match the one
    recorded at upload."""
    if name == "latest":
        stored = snapshots(store)
        if not stored:
            raise BackupError(f"no snapshot under {store.url()}")
        name = stored[-1].name
    key = store.prefix + _check_name(name)
    answer = _call(store, store.url(name), store.s3.get_object, Bucket=store.bucket, Key=key)
    recorded = answer.get("Metadata", {}).get("sha256")
    digest, size = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.touch(mode=0o600)
    with dest.open("wb") as out:
        for chunk in answer["Body"].iter_chunks(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if recorded != digest.hexdigest():
        raise BackupError(
            f"{store.url(name)}: its SHA-256 differs from the one recorded at upload "
            f"({'none recorded' if recorded is None else recorded[:12] + '…'}): not restoring it"
        )
    return Snapshot(dest, digest.hexdigest(), size)
