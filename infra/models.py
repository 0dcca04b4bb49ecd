"""Approved model weights into the EU model bucket, with a signed manifest, and their check.

``sovereign models import --stack S --model NAME --from DIR`` hashes every file of an approved
model folder into a ``SHA256SUMS`` manifest (the ``sha256sum`` format the cluster's weights
Job and init container verify, infra/k8s_platform/weights.py), signs the manifest with an
OpenBao transit key (ed25519, ``storage.manifest_signing_key``) and uploads the files to the
model's ``source`` prefix: large files in parts, resumable (an interrupted import continues
with the parts that are not there yet), with a progress bar. The manifest and its signature
(``SHA256SUMS.sig``) go last, so a prefix with a manifest is always complete.

``sovereign models verify --stack S --model NAME`` checks the signature with the transit key's
public half, then re-reads every object in the bucket against the manifest: a file that
differs, is missing or is not listed fails with its name.

The signature is transit's ``vault:vN:<base64>`` over the manifest's bytes; with the public
key (transit ``keys/<name>``, or a file for hosts without OpenBao access) anybody can check it
offline, with ``cryptography``.

**Releases.** Every import records the approved release as its own object in the model bucket
(the bucket of ``endpoints.model_source``): ``releases/<model>/<UTC time>-<sha12>.json`` with
source, the manifest's SHA-256, its signature document, who (the OpenBao token's display name
and entity, from ``auth/token/lookup-self``; never the token) and when. One object per event
and no read-modify-write, so two operators never overwrite each other's record, and the bucket's
versioning keeps every version. A release lives at its own prefix: an import into a prefix that
holds another signed manifest is refused, because overwriting it would destroy the release a
rollback returns to. ``sovereign models releases`` lists the log; ``sovereign models rollback``
re-verifies the previous release (signature and every object), rewrites the model's ``source``
and ``manifest_sha256`` in the stack file (ruamel.yaml round-trip: comments and layout kept;
any other change to the file is refused), records who, why, from and to, and deploys with
Pulumi's Automation API.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import io
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra import objectstore
from infra.config import StackConfig, s3_location
from infra.k8s_platform.weights import SIGNATURE_SUFFIX, Manifest, WeightsError, sha256_file
from infra.local.openbao import TRANSIT_MOUNT

SIGNATURE_FORMAT = "sovereign-manifest-signature/1"
RELEASE_FORMAT = "sovereign-model-release/1"
ROLLBACK_FORMAT = "sovereign-model-rollback/1"
DEPLOY_FORMAT = "sovereign-model-deploy/1"
RELEASES_PREFIX = "releases/"
REASON_MAX = 500
MIB = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelsError(RuntimeError):
    pass


# -- the manifest and its signature -----------------------------------------------------------


def build_manifest(folder: Path, manifest_name: str = "SHA256SUMS") -> tuple[bytes, dict[str, str]]:
    """(manifest bytes, relative path → sha256) for every file in *folder*."""
    if not folder.is_dir():
        raise ModelsError(f"--from {folder}: not a folder; give the approved model's folder")
    skip = {manifest_name, manifest_name + SIGNATURE_SUFFIX}
    files = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name not in skip
    )
    if not files:
        raise ModelsError(f"--from {folder}: no files to import")
    for rel in files:
        if any(c.isspace() for c in rel):
            raise ModelsError(f"{rel!r}: file names with spaces cannot be listed in a sha256sum manifest")
    entries = {rel: sha256_file(folder / rel) for rel in files}
    text = "".join(f"{digest}  {rel}\n" for rel, digest in entries.items())
    return text.encode(), entries


def _transit(address: str, token: str) -> Any:
    import hvac

    return hvac.Client(url=address, token=token, timeout=30)


def _openbao_error(exc: Exception, key: str, address: str, action: str) -> ModelsError:
    import hvac.exceptions

    missing = isinstance(exc, hvac.exceptions.InvalidRequest) and "not found" in str(exc).lower()
    if isinstance(exc, hvac.exceptions.InvalidPath) or missing:
        return ModelsError(
            f"transit key {key!r} does not exist on OpenBao at {address}: create it with "
            f"`bao write -f {TRANSIT_MOUNT}/keys/{key} type=ed25519` (the platform layer declares it)"
        )
    if isinstance(exc, hvac.exceptions.Forbidden):
        return ModelsError(
            f"OpenBao at {address} denied {action} with key {key!r}: the token lacks the policy"
        )
    return ModelsError(f"OpenBao at {address} failed to {action}: {type(exc).__name__}")


def sign(manifest: bytes, address: str, token: str, key: str) -> dict[str, Any]:
    """Transit signs the manifest (ed25519); the signature document written beside it."""
    import hvac.exceptions
    import requests

    client = _transit(address, token)
    try:
        answer = client.secrets.transit.sign_data(
            key, hash_input=base64.b64encode(manifest).decode(), mount_point=TRANSIT_MOUNT
        )
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _openbao_error(exc, key, address, "sign") from None
    signature = str(answer["data"]["signature"])
    return {
        "format": SIGNATURE_FORMAT,
        "key": key,
        "mount": TRANSIT_MOUNT,
        "algorithm": "ed25519",
        "signature": signature,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
    }


def public_keys(address: str, token: str, key: str) -> dict[int, bytes]:
    """The transit key's public keys by version (raw ed25519 bytes)."""
    import hvac.exceptions
    import requests

    try:
        answer = _transit(address, token).secrets.transit.read_key(key, mount_point=TRANSIT_MOUNT)
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _openbao_error(exc, key, address, "read the public key") from None
    data = answer["data"]
    if data.get("type") != "ed25519":
        raise ModelsError(f"transit key {key!r} is {data.get('type')}, not ed25519: create an ed25519 key")
    return {int(v): base64.b64decode(k["public_key"]) for v, k in data["keys"].items()}


def dump_public_keys(keys: dict[int, bytes]) -> str:
    return json.dumps({str(v): base64.b64encode(k).decode() for v, k in sorted(keys.items())}, indent=2)


def load_public_keys(path: Path) -> dict[int, bytes]:
    """Public keys from a file: ``{"1": "<base64>"}`` (``sovereign models public-key`` writes it)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {int(v): base64.b64decode(k) for v, k in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelsError(f"--public-key {path}: not a public key file ({type(exc).__name__})") from None


def check_signature(manifest: bytes, document: bytes, keys: dict[int, bytes], where: str) -> int:
    """Raise ModelsError unless *document* is a valid signature of *manifest*; the key version."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        doc = json.loads(document)
        prefix, version_text, encoded = str(doc["signature"]).split(":", 2)
        version = int(version_text.removeprefix("v"))
        raw = base64.b64decode(encoded)
    except (ValueError, KeyError, TypeError):
        raise ModelsError(f"{where}: not a manifest signature document") from None
    if prefix != "vault" or doc.get("format") != SIGNATURE_FORMAT:
        raise ModelsError(f"{where}: unknown signature format")
    if version not in keys:
        raise ModelsError(f"{where}: signed with key version {version}, which the public key does not have")
    try:
        Ed25519PublicKey.from_public_bytes(keys[version]).verify(raw, manifest)
    except InvalidSignature:
        raise ModelsError(
            f"{where}: the signature does not match the manifest: the manifest (or its signature) was "
            "changed after signing; refusing these weights"
        ) from None
    return version


# -- uploads: multipart, resumable, with progress ---------------------------------------------


Progress = Callable[[int], None]


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    path: Path
    sha256: str


class Uploader:
    """Puts files into a bucket; files above *part_size* go in parts, and an interrupted
    upload resumes from the state kept under *state_dir* (upload id and the file's digest)."""

    def __init__(self, s3: Any, endpoint: str, state_dir: Path, part_size: int = 64 * MIB) -> None:
        if part_size < 5 * MIB:
            raise ModelsError(f"part size {part_size // MIB} MiB: S3 needs at least 5 MiB per part")
        self.s3, self.endpoint, self.state_dir, self.part_size = s3, endpoint, state_dir, part_size
        self.parts_sent = 0
        self.parts_resumed = 0  # parts an earlier, interrupted run had sent already

    def present(self, up: Upload) -> bool:
        import botocore.exceptions

        try:
            head = self.s3.head_object(Bucket=up.bucket, Key=up.key)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise objectstore.explain(exc, f"bucket {up.bucket!r}", self.endpoint) from None
        same_size = head.get("ContentLength") == up.path.stat().st_size
        return bool(same_size and head.get("Metadata", {}).get("sha256") == up.sha256)

    def put(self, up: Upload, progress: Progress) -> None:
        import botocore.exceptions

        try:
            if up.path.stat().st_size <= self.part_size:
                body = up.path.read_bytes()
                self.s3.put_object(
                    Bucket=up.bucket, Key=up.key, Body=body, Metadata={"sha256": up.sha256},
                    ChecksumAlgorithm="SHA256",
                )  # fmt: skip
                progress(len(body))
            else:
                self._multipart(up, progress)
        except botocore.exceptions.ClientError as exc:
            raise objectstore.explain(exc, f"bucket {up.bucket!r} (put {up.key})", self.endpoint) from None

    def _state_path(self, up: Upload) -> Path:
        name = hashlib.sha256(f"{up.bucket}/{up.key}".encode()).hexdigest()[:32]
        return self.state_dir / f"{name}.json"

    def _resume(self, up: Upload) -> tuple[str, dict[int, str]]:
        """(upload id, part number → ETag) of the upload to continue, or a new upload."""
        import botocore.exceptions

        state_path = self._state_path(up)
        if state_path.is_file():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            same = state.get("sha256") == up.sha256 and state.get("part_size") == self.part_size
            try:
                if same:
                    parts: dict[int, str] = {}
                    for page in self.s3.get_paginator("list_parts").paginate(
                        Bucket=up.bucket, Key=up.key, UploadId=state["upload_id"]
                    ):
                        parts.update({p["PartNumber"]: p["ETag"] for p in page.get("Parts", [])})
                    return str(state["upload_id"]), parts
                self.s3.abort_multipart_upload(Bucket=up.bucket, Key=up.key, UploadId=state["upload_id"])
            except botocore.exceptions.ClientError:
                pass  # the upload expired or was aborted: start again
        created = self.s3.create_multipart_upload(
            Bucket=up.bucket, Key=up.key, Metadata={"sha256": up.sha256}, ChecksumAlgorithm="SHA256"
        )
        upload_id = str(created["UploadId"])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state_path.write_text(
            json.dumps({"upload_id": upload_id, "sha256": up.sha256, "part_size": self.part_size}),
            encoding="utf-8",
        )
        return upload_id, {}

    def _multipart(self, up: Upload, progress: Progress) -> None:
        upload_id, done = self._resume(up)
        completed = []
        with up.path.open("rb") as handle:
            number = 0
            while chunk := handle.read(self.part_size):
                number += 1
                etag = f'"{hashlib.md5(chunk, usedforsecurity=False).hexdigest()}"'
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                if done.get(number) != etag:  # not there yet, or different bytes: (re)send
                    answer = self.s3.upload_part(
                        Bucket=up.bucket, Key=up.key, UploadId=upload_id, PartNumber=number, Body=chunk,
                        ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                    )  # fmt: skip
                    etag = answer["ETag"]
                    self.parts_sent += 1
                else:
                    self.parts_resumed += 1
                completed.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
                progress(len(chunk))
        self.s3.complete_multipart_upload(
            Bucket=up.bucket, Key=up.key, UploadId=upload_id, MultipartUpload={"Parts": completed}
        )
        self._state_path(up).unlink(missing_ok=True)


def _bar(total: int, label: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                disable=None, leave=True)  # fmt: skip


# -- the commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    bucket: str
    prefix: str
    manifest: str


def model_config(cfg: StackConfig, model: str) -> Any:
    for m in cfg.platform.models:
        if m.name == model:
            return m
    names = ", ".join(m.name for m in cfg.platform.models) or "none"
    raise ModelsError(
        f"--model {model!r}: stack {cfg.stack!r} declares no such model (platform.models: {names})"
    )


def target(cfg: StackConfig, model: str, source: str | None = None) -> Target:
    """Where the model's release is: its configured ``source``, or *source* (another release of it,
    which must be in the same bucket: the weights Job's read-only keys are for that bucket)."""
    m = model_config(cfg, model)
    bucket, prefix = s3_location(m.source)
    if source is not None:
        try:
            other, prefix = s3_location(source)
        except ValueError as exc:
            raise ModelsError(f"--to {source}: {exc}") from None
        if other != bucket:
            raise ModelsError(
                f"--to {source}: not in the model's bucket {bucket!r} (platform.models[{model}].source); "
                f"import into s3://{bucket}/<prefix>/"
            )
        if not prefix:
            raise ModelsError(f"--to {source}: give a prefix of its own, e.g. s3://{bucket}/{model}/v2/")
    return Target(bucket, prefix, m.manifest)


def source_url(where: Target) -> str:
    return f"s3://{where.bucket}/{where.prefix}"


@dataclass
class ImportResult:
    uploaded: int
    skipped: int
    bytes: int
    key_version: int
    parts_sent: int
    parts_resumed: int
    release: Release | None = None


def import_model(
    cfg: StackConfig,
    model: str,
    folder: Path,
    *,
    openbao_address: str,
    token: str,
    state_dir: Path,
    part_size: int = 64 * MIB,
    on_progress: Progress | None = None,
    source: str | None = None,
) -> ImportResult:
    """Sign and upload the release to the model's ``source`` (or *source*), then record it."""
    where = target(cfg, model, source)
    manifest, entries = build_manifest(folder, where.manifest)
    manifest_sha256 = hashlib.sha256(manifest).hexdigest()
    who = identity(openbao_address, token)
    signature = sign(manifest, openbao_address, token, cfg.storage.manifest_signing_key)
    version = check_signature(
        manifest, json.dumps(signature).encode(),
        public_keys(openbao_address, token, cfg.storage.manifest_signing_key), "the new signature",
    )  # fmt: skip
    s3 = objectstore.stack_client(cfg)
    endpoint = objectstore.endpoint_url(cfg.endpoints.object_storage)
    uploader = Uploader(s3, endpoint, state_dir, part_size)
    uploads = [
        Upload(where.bucket, where.prefix + rel, folder / rel, digest) for rel, digest in entries.items()
    ]
    objectstore.require_bucket(s3, where.bucket, endpoint, cfg.stack)
    log = ReleaseLog(cfg, model)
    recorded = log.releases()
    for other in recorded:
        _, other_prefix = s3_location(other.source)
        nested = other_prefix.startswith(where.prefix) or where.prefix.startswith(other_prefix)
        if other.source != source_url(where) and nested:
            raise ModelsError(
                f"{source_url(where)} and the release at {other.source} are inside one another: each "
                f"release needs a prefix of its own beside the others, e.g. --to s3://{where.bucket}/"
                f"{model}-<version>/ (verify would take one's files for the other's)"
            )
    there = _read_optional(s3, where.bucket, where.prefix + where.manifest, endpoint, cfg.stack)
    if there is not None and hashlib.sha256(there).hexdigest() != manifest_sha256:
        raise ModelsError(
            f"{source_url(where)}{where.manifest} holds another release (manifest sha256 "
            f"{hashlib.sha256(there).hexdigest()[:12]}…): overwriting it would destroy what a rollback "
            f"returns to; import the new release to a prefix of its own: --to s3://{where.bucket}/{model}-<version>/"
        )
    todo = [u for u in uploads if not uploader.present(u)]
    total = sum(u.path.stat().st_size for u in todo)
    sent = 0
    with _bar(total, f"{model} → s3://{where.bucket}/{where.prefix}") as bar:

        def progress(n: int) -> None:
            nonlocal sent
            sent += n
            bar.update(n)
            if on_progress is not None:
                on_progress(n)

        for up in todo:
            uploader.put(up, progress)
    # the manifest and its signature last: a prefix with a manifest holds every file it lists
    for name, body in (
        (where.manifest, manifest),
        (where.manifest + SIGNATURE_SUFFIX, json.dumps(signature, indent=2).encode()),
    ):
        s3.put_object(Bucket=where.bucket, Key=where.prefix + name, Body=body, ChecksumAlgorithm="SHA256")
    release = next(
        (r for r in recorded if (r.source, r.manifest_sha256) == (source_url(where), manifest_sha256)),
        None,
    )
    if release is None:  # a re-run of the same import records nothing new
        release = log.record_release(source_url(where), manifest_sha256, signature, who)
    return ImportResult(
        len(todo), len(uploads) - len(todo), sent, version, uploader.parts_sent, uploader.parts_resumed,
        release,
    )  # fmt: skip


def _read(s3: Any, bucket: str, key: str, endpoint: str, stack: str) -> bytes:
    import botocore.exceptions

    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except botocore.exceptions.ClientError as exc:
        raise objectstore.explain(exc, f"s3://{bucket}/{key}", endpoint, stack) from None


def _read_optional(s3: Any, bucket: str, key: str, endpoint: str, stack: str) -> bytes | None:
    import botocore.exceptions

    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise objectstore.explain(exc, f"s3://{bucket}/{key}", endpoint, stack) from None


def verify_model(
    cfg: StackConfig,
    model: str,
    keys: dict[int, bytes],
    *,
    source: str | None = None,
    manifest_sha256: str | None = None,
) -> int:
    """Check the signature, then every object against the manifest; return the files checked.

    *source*: another release of the model than its configured one; *manifest_sha256*: the
    manifest must be that release's (checked before any object is read)."""
    import botocore.exceptions

    where = target(cfg, model, source)
    s3 = objectstore.stack_client(cfg)
    endpoint = objectstore.endpoint_url(cfg.endpoints.object_storage)
    objectstore.require_bucket(s3, where.bucket, endpoint, cfg.stack)
    base = f"s3://{where.bucket}/{where.prefix}"
    try:
        manifest = _read(s3, where.bucket, where.prefix + where.manifest, endpoint, cfg.stack)
    except objectstore.StorageError as exc:
        if "does not exist" not in str(exc):
            raise
        raise ModelsError(
            f"{base}{where.manifest} does not exist: the model was never imported (or its import was "
            f"interrupted); run `sovereign models import --stack {cfg.stack} --model {model} --from DIR`"
        ) from None
    signature = _read(s3, where.bucket, where.prefix + where.manifest + SIGNATURE_SUFFIX, endpoint, cfg.stack)
    check_signature(manifest, signature, keys, f"{base}{where.manifest}{SIGNATURE_SUFFIX}")
    if manifest_sha256 is not None and hashlib.sha256(manifest).hexdigest() != manifest_sha256:
        raise ModelsError(
            f"{base}{where.manifest}: its SHA-256 is not the release's {manifest_sha256[:12]}…: another "
            "release was imported over this prefix; refusing it"
        )
    try:
        entries = Manifest.parse(manifest.decode("utf-8"), base + where.manifest).entries
    except (WeightsError, UnicodeDecodeError) as exc:
        raise ModelsError(str(exc)) from None
    present: set[str] = set()
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=where.prefix):
            present.update(o["Key"][len(where.prefix) :] for o in page.get("Contents", []))
    except botocore.exceptions.ClientError as exc:
        raise objectstore.explain(exc, f"bucket {where.bucket!r}", endpoint, cfg.stack) from None
    present -= {where.manifest, where.manifest + SIGNATURE_SUFFIX}
    missing = sorted(set(entries) - present)
    extra = sorted(present - set(entries))
    if missing:
        raise ModelsError(f"{base}: {len(missing)} file(s) in the manifest are missing, first: {missing[0]}")
    if extra:
        raise ModelsError(f"{base}: {len(extra)} file(s) not in the manifest, first: {extra[0]}")
    for rel, expected in sorted(entries.items()):
        digest = hashlib.sha256()
        try:
            body = s3.get_object(Bucket=where.bucket, Key=where.prefix + rel)["Body"]
            for chunk in body.iter_chunks(MIB):
                digest.update(chunk)
        except botocore.exceptions.ClientError as exc:
            raise objectstore.explain(exc, f"{base}{rel}", endpoint, cfg.stack) from None
        if digest.hexdigest() != expected:
            raise ModelsError(
                f"{base}{rel}: SHA-256 does not match the signed manifest; the file was changed"
            )
    return len(entries)


# -- the release log, rollback ------------------------------------------------------------------


def identity(address: str, token: str) -> dict[str, str]:
    """Who holds *token*: its display name and entity (``auth/token/lookup-self``), never the token
    or its accessor."""
    import hvac.exceptions
    import requests

    try:
        data = _transit(address, token).auth.token.lookup_self()["data"]
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise ModelsError(
            f"OpenBao at {address} failed to look up the token's identity ({type(exc).__name__}): "
            "the token needs the `default` policy (auth/token/lookup-self)"
        ) from None
    who = {"display_name": str(data.get("display_name") or ""), "entity_id": str(data.get("entity_id") or "")}
    meta = data.get("meta") or {}
    if isinstance(meta, dict) and meta.get("username"):
        who["username"] = str(meta["username"])
    return who


@dataclass(frozen=True)
class Release:
    key: str  # the record's object key in the model bucket
    source: str
    manifest_sha256: str
    at: str
    who: dict[str, str] = field(default_factory=dict)
    signature: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RollbackRecord:
    key: str
    from_source: str
    from_manifest_sha256: str
    to_source: str
    to_manifest_sha256: str
    reason: str
    at: str
    who: dict[str, str] = field(default_factory=dict)
    stack: str = ""


@dataclass(frozen=True)
class DeployRecord:
    """A release deployed to a stack: written after a rollback's `pulumi up` succeeded, or by
    `sovereign models record-deploy` after an operator's own `pulumi up` (their word for it)."""

    key: str
    stack: str
    source: str
    manifest_sha256: str
    at: str
    how: str  # "rollback" or "record-deploy"
    who: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ReleaseLog:
    """``releases/<model>/`` in the bucket of ``endpoints.model_source``: one object per release,
    per rollback and per deploy, named ``<UTC time>-<kind>-<sha12>.json`` so that names sort by time."""

    def __init__(self, cfg: StackConfig, model: str) -> None:
        model_config(cfg, model)
        self.cfg, self.model = cfg, model
        self.bucket, _ = s3_location(cfg.endpoints.model_source)
        self.prefix = f"{RELEASES_PREFIX}{model}/"
        self.s3 = objectstore.stack_client(cfg)
        self.endpoint = objectstore.endpoint_url(cfg.endpoints.object_storage)

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _put(self, kind: str, sha256: str, document: dict[str, Any]) -> str:
        import botocore.exceptions

        at = str(document["at"])
        stamp = at.replace("-", "").replace(":", "").replace(".", "")
        key = f"{self.prefix}{stamp}-{kind}-{sha256[:12]}.json"
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(document, indent=2, sort_keys=True).encode(),
                ContentType="application/json", ChecksumAlgorithm="SHA256",
            )  # fmt: skip
        except botocore.exceptions.ClientError as exc:
            raise objectstore.explain(
                exc, f"s3://{self.bucket}/{key}", self.endpoint, self.cfg.stack
            ) from None
        return key

    def record_release(
        self, source: str, manifest_sha256: str, signature: dict[str, Any], who: dict[str, str]
    ) -> Release:
        at = _now()
        document = {
            "format": RELEASE_FORMAT, "model": self.model, "source": source,
            "manifest_sha256": manifest_sha256, "signature": signature, "who": who, "at": at,
        }  # fmt: skip
        key = self._put("release", manifest_sha256, document)
        return Release(key, source, manifest_sha256, at, who, signature)

    def record_rollback(
        self, current: Release, to: Release, reason: str, who: dict[str, str]
    ) -> RollbackRecord:
        at = _now()
        document = {
            "format": ROLLBACK_FORMAT, "model": self.model, "stack": self.cfg.stack,
            "from": {"source": current.source, "manifest_sha256": current.manifest_sha256},
            "to": {"source": to.source, "manifest_sha256": to.manifest_sha256, "release": to.key},
            "reason": reason, "who": who, "at": at,
        }  # fmt: skip
        key = self._put("rollback", to.manifest_sha256, document)
        return RollbackRecord(
            key, current.source, current.manifest_sha256, to.source, to.manifest_sha256, reason, at, who,
            self.cfg.stack,
        )  # fmt: skip

    def record_deploy(self, deployed: Release, how: str, who: dict[str, str]) -> DeployRecord:
        """*deployed* (an approved release) now runs in this stack."""
        at = _now()
        document = {
            "format": DEPLOY_FORMAT, "model": self.model, "stack": self.cfg.stack,
            "source": deployed.source, "manifest_sha256": deployed.manifest_sha256, "release": deployed.key,
            "how": how, "who": who, "at": at,
        }  # fmt: skip
        key = self._put("deploy", deployed.manifest_sha256, document)
        return DeployRecord(key, self.cfg.stack, deployed.source, deployed.manifest_sha256, at, how, who)

    def _documents(self) -> list[tuple[str, dict[str, Any]]]:
        import botocore.exceptions

        keys: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json"))
        except botocore.exceptions.ClientError as exc:
            raise objectstore.explain(exc, f"bucket {self.bucket!r}", self.endpoint, self.cfg.stack) from None
        documents = []
        for key in sorted(keys, reverse=True):  # newest first
            body = _read(self.s3, self.bucket, key, self.endpoint, self.cfg.stack)
            try:
                documents.append((key, dict(json.loads(body))))
            except (ValueError, TypeError):
                raise ModelsError(f"s3://{self.bucket}/{key}: not a release log record") from None
        return documents

    def releases(self) -> list[Release]:
        """The approved releases, newest first."""
        found = []
        for key, doc in self._documents():
            if doc.get("format") != RELEASE_FORMAT:
                continue
            try:
                found.append(
                    Release(key, str(doc["source"]), str(doc["manifest_sha256"]), str(doc["at"]),
                            dict(doc.get("who") or {}), dict(doc.get("signature") or {}))
                )  # fmt: skip
            except KeyError as exc:
                raise ModelsError(f"s3://{self.bucket}/{key}: release record without {exc}") from None
        return found

    def rollbacks(self) -> list[RollbackRecord]:
        """The rollbacks, newest first."""
        found = []
        for key, doc in self._documents():
            if doc.get("format") != ROLLBACK_FORMAT:
                continue
            found.append(
                RollbackRecord(
                    key, doc["from"]["source"], doc["from"]["manifest_sha256"], doc["to"]["source"],
                    doc["to"]["manifest_sha256"], str(doc["reason"]), str(doc["at"]),
                    dict(doc.get("who") or {}), str(doc.get("stack") or ""),
                )
            )  # fmt: skip
        return found

    def deploys(self) -> list[DeployRecord]:
        """The deploys to this log's stack, newest first."""
        found = []
        for key, doc in self._documents():
            if doc.get("format") != DEPLOY_FORMAT or doc.get("stack") != self.cfg.stack:
                continue
            try:
                found.append(
                    DeployRecord(key, str(doc["stack"]), str(doc["source"]), str(doc["manifest_sha256"]),
                                 str(doc["at"]), str(doc.get("how") or ""), dict(doc.get("who") or {}))
                )  # fmt: skip
            except KeyError as exc:
                raise ModelsError(f"s3://{self.bucket}/{key}: deploy record without {exc}") from None
        return found


def check_reason(reason: str | None) -> str:
    """The rollback's reason: required, one short line's worth, recorded in the release log only."""
    text = (reason or "").strip()
    if not text:
        raise ModelsError(
            "--reason: required and not empty: say why, e.g. the change request id and the symptom "
            "(never patient data)"
        )
    if len(text) > REASON_MAX:
        raise ModelsError(
            f"--reason: {len(text)} characters, at most {REASON_MAX}: give the change request id and a "
            "short symptom, never patient data (the details belong in the change request)"
        )
    return text


def check_sha256(value: str, flag: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ModelsError(
            f"{flag}: give a manifest SHA-256 as 64 lowercase hex digits (`sovereign models releases`)"
        )
    return value


def current_release(cfg: StackConfig, model: str, releases: list[Release]) -> tuple[int, Release]:
    """The position (newest first) and record of the release the stack pins."""
    m = model_config(cfg, model)
    file = f"stacks/Pulumi.{cfg.stack}.yaml"
    if m.manifest_sha256 is None:
        raise ModelsError(
            f"platform.models[{model}].manifest_sha256 is not set in {file}: a rollback starts from the "
            f"pinned release; pin the deployed one (`sovereign models releases --stack {cfg.stack} --model "
            f"{model}` lists them), deploy, then roll back"
        )
    for index, release in enumerate(releases):
        if (release.source, release.manifest_sha256) == (m.source, m.manifest_sha256):
            return index, release
    raise ModelsError(
        f"platform.models[{model}] (source and manifest_sha256 in {file}) is not an approved release: the "
        f"release log has no import of it; import it with `sovereign models import`, or fix the pin"
    )


@dataclass(frozen=True)
class RollbackPlan:
    current: Release
    target: Release
    files: int
    # the stack pins the target already: an earlier rollback to it (this record) has no deploy
    # recorded after it, so its deploy failed or was not run; deploy it, do not step back again
    resume: RollbackRecord | None = None


def _ident(r: Release | DeployRecord) -> tuple[str, str]:
    return r.source, r.manifest_sha256


def pending_rollback(
    stack: str, current: Release, rollbacks: list[RollbackRecord], deploys: list[DeployRecord]
) -> RollbackRecord | None:
    """The stack's newest rollback, if it went to the pinned release and no deploy of that release
    was recorded after it (*rollbacks* and *deploys* newest first)."""
    last = next((rb for rb in rollbacks if rb.stack == stack), None)
    if last is None or (last.to_source, last.to_manifest_sha256) != _ident(current):
        return None
    if any(_ident(d) == _ident(current) and d.at > last.at for d in deploys):
        return None
    return last


def previous_deployed(
    stack: str,
    current: Release,
    releases: list[Release],
    rollbacks: list[RollbackRecord],
    deploys: list[DeployRecord],
) -> Release | None:
    """The release the stack ran before the pinned one: the newest deploy record of another approved
    release older than the pinned release's newest deploy (if it has one), skipping a release that a
    rollback left after that deploy (it was rolled back for a reason)."""
    approved = {_ident(r): r for r in releases}
    own = [d.at for d in deploys if _ident(d) == _ident(current)]
    for d in deploys:  # newest first
        if (own and d.at >= own[0]) or _ident(d) == _ident(current):
            continue
        left = any(
            rb.stack == stack and (rb.from_source, rb.from_manifest_sha256) == _ident(d) and rb.at > d.at
            for rb in rollbacks
        )
        if not left and _ident(d) in approved:
            return approved[_ident(d)]
    return None


def _candidates(releases: list[Release], current: Release, deploys: list[DeployRecord]) -> str:
    deployed = {_ident(d) for d in deploys}
    lines = [
        f"{r.manifest_sha256} (imported {r.at}{', deployed' if _ident(r) in deployed else ''}) {r.source}"
        for r in releases
        if _ident(r) != _ident(current)
    ]
    return "; ".join(lines) if lines else "(none: no other approved release)"


def plan_rollback(
    cfg: StackConfig, model: str, keys: dict[int, bytes], to: str | None = None
) -> RollbackPlan:
    """Pick the release to return to and re-verify it (the signature and every object against
    the recorded manifest digest): *to*, else the release deployed before the pinned one
    (``previous_deployed``; the release log's deploy records), else a refusal listing the
    candidates. If the stack pins the target of an earlier rollback whose deploy was never
    recorded, the plan is that rollback again (``resume``), not one more step back."""
    log = ReleaseLog(cfg, model)
    releases = log.releases()
    _, current = current_release(cfg, model, releases)
    resume = None
    if to is not None:
        check_sha256(to, "--to")
        if to == current.manifest_sha256:
            raise ModelsError(
                f"--to {to[:12]}…: that is the release the stack pins already; nothing to roll back"
            )
        chosen = next((r for r in releases if r.manifest_sha256 == to), None)
        if chosen is None:
            raise ModelsError(
                f"--to {to[:12]}…: no approved release of {model} has this manifest; "
                f"`sovereign models releases --stack {cfg.stack} --model {model}` lists them"
            )
    else:
        rollbacks, deploys = log.rollbacks(), log.deploys()
        resume = pending_rollback(cfg.stack, current, rollbacks, deploys)
        found = current if resume is not None else previous_deployed(
            cfg.stack, current, releases, rollbacks, deploys
        )  # fmt: skip
        if found is None:
            raise ModelsError(
                f"{model}: no release recorded as deployed to stack {cfg.stack} before the current one "
                f"({current.manifest_sha256[:12]}…, imported {current.at}): the release log records a "
                "deploy only when `sovereign models rollback` deployed it or an operator ran `sovereign "
                "models record-deploy` after their `pulumi up`, and the previous import need not be "
                f"what ran. Choose the release with --to SHA256; candidates, newest first: "
                f"{_candidates(releases, current, deploys)}"
            )
        chosen = found
    files = verify_model(cfg, model, keys, source=chosen.source, manifest_sha256=chosen.manifest_sha256)
    return RollbackPlan(current, chosen, files, resume)


def record_deploy(
    cfg: StackConfig, model: str, who: dict[str, str], how: str = "record-deploy"
) -> DeployRecord:
    """Record that the release the stack file pins now runs in the stack (after `pulumi up`)."""
    log = ReleaseLog(cfg, model)
    _, current = current_release(cfg, model, log.releases())
    return log.record_deploy(current, how, who)


# -- the stack file, rewritten in place ----------------------------------------------------------


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)  # the layout of stacks/*.yaml
    return y


def pinned_text(text: str, model: str, source: str, manifest_sha256: str, where: str) -> str:
    """*text* (a stack file) with the model's ``source`` and ``manifest_sha256`` set, comments and
    layout kept; refused if any other line would change."""
    y = _yaml()
    document = y.load(text)
    try:
        entries = document["config"]["sovereign-llm:platform"]["models"]
        (entry,) = [e for e in entries if e.get("name") == model]
    except (KeyError, TypeError, ValueError):
        raise ModelsError(f"{where}: no single platform.models entry named {model!r} to rewrite") from None
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    entry["source"] = source
    digest = DoubleQuotedScalarString(manifest_sha256)  # quoted: YAML reads "1e5…" or all digits as numbers
    if "manifest_sha256" in entry:
        entry["manifest_sha256"] = digest
    else:
        keys = list(entry)
        after = "manifest" if "manifest" in entry else "source"
        entry.insert(keys.index(after) + 1, "manifest_sha256", digest)
    out = io.StringIO()
    y.dump(document, out)
    new = out.getvalue()
    for line in difflib.unified_diff(text.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        if not re.match(r"^[-+]\s+(source|manifest_sha256):", line):
            raise ModelsError(
                f"{where}: rewriting it would change more than {model}'s source and manifest_sha256 "
                "(its layout is not one ruamel.yaml keeps): set them by hand"
            )
    return new


def pin(stacks_dir: Path, stack: str, model: str, source: str, manifest_sha256: str) -> Path:
    """Set the model's ``source`` and ``manifest_sha256`` in stacks/Pulumi.<stack>.yaml, after
    checking that the result is a valid stack config."""
    from infra import config

    path = config.stack_file(stacks_dir, stack)
    new = _pinned_and_checked(path, stack, model, source, manifest_sha256)
    path.write_text(new, encoding="utf-8")
    return path


def _pinned_and_checked(path: Path, stack: str, model: str, source: str, manifest_sha256: str) -> str:
    import yaml

    from infra import config

    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ModelsError(f"{path}: cannot be read") from None
    new = pinned_text(text, model, source, manifest_sha256, str(path))
    document = yaml.safe_load(new) or {}
    sections = {
        str(k).partition(":")[2]: v
        for k, v in (document.get("config") or {}).items()
        if str(k).partition(":")[0] == config.PROJECT
    }
    config.parse(stack, sections, str(path))  # StackConfigError names the bad key
    return new


@dataclass(frozen=True)
class RollbackResult:
    plan: RollbackPlan
    record: RollbackRecord
    stack_file: Path


def rollback(
    cfg: StackConfig,
    stacks_dir: Path,
    model: str,
    *,
    reason: str,
    keys: dict[int, bytes],
    who: dict[str, str],
    to: str | None = None,
) -> RollbackResult:
    """Re-verify the previously deployed release (or *to*), record the rollback, pin it in the
    stack file.

    Nothing is written unless the release verifies and the rewritten stack file is valid; the
    record goes before the file, so a pin in the file is never unaudited. If an earlier rollback
    to the pinned release was never recorded as deployed (``plan.resume``), nothing is written:
    the caller deploys it (again) instead of stepping back one more release."""
    from infra import config

    reason = check_reason(reason)
    plan = plan_rollback(cfg, model, keys, to)
    path = config.stack_file(stacks_dir, cfg.stack)
    if plan.resume is not None:  # pinned and recorded already: only the deploy is left
        return RollbackResult(plan, plan.resume, path)
    new = _pinned_and_checked(path, cfg.stack, model, plan.target.source, plan.target.manifest_sha256)
    record = ReleaseLog(cfg, model).record_rollback(plan.current, plan.target, reason, who)
    path.write_text(new, encoding="utf-8")
    return RollbackResult(plan, record, path)


# -- the deploy ------------------------------------------------------------------------------------


def deploy_command(stacks_dir: Path, stack: str) -> str:
    return f"cd {stacks_dir.resolve().parent} && pulumi up --stack {stack}"


def require_pulumi_cli(stacks_dir: Path, stack: str) -> Path:
    """The project folder (Pulumi.yaml) the Automation API runs in; refuse clearly without the CLI."""
    work_dir = stacks_dir.resolve().parent
    if shutil.which("pulumi") is None:
        raise ModelsError(
            "the Pulumi CLI is not installed here (no `pulumi` on PATH): the deploy runs `pulumi up` "
            "through Pulumi's Automation API, which drives the CLI. Install it "
            "(https://www.pulumi.com/docs/iac/download-install/) and log in to the stack's EU backend "
            f"(`sovereign bootstrap-backend --stack {stack}` prints the login lines), or pass "
            "--no-deploy and run the printed command where the CLI is; nothing was changed"
        )
    if not (work_dir / "Pulumi.yaml").is_file():
        raise ModelsError(
            f"--stacks-dir {stacks_dir}: its parent {work_dir} holds no Pulumi.yaml, so there is no project "
            "to deploy; use the repository's stacks/ or pass --no-deploy"
        )
    return work_dir


def deploy(work_dir: Path, stack: str, on_output: Callable[[str], None]) -> str:
    """``pulumi up`` of *stack* through the Automation API (the CLI, the program in infra/)."""
    from pulumi import automation as auto

    try:
        selected = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        result = selected.up(on_output=on_output)
    except FileNotFoundError:
        raise ModelsError(
            "the Pulumi CLI disappeared from PATH during the deploy: install it and rerun"
        ) from None
    except auto.errors.CommandError as exc:
        last = str(exc).strip().splitlines()[-1:] or ["(no output)"]
        raise ModelsError(
            f"`pulumi up --stack {stack}` failed: {last[0][:300]}; the stack file is pinned and the rollback "
            f"recorded, no deploy recorded: fix the cause and run the same `sovereign models rollback` "
            f"again (it deploys the pinned release, it does not step back further), or run "
            f"`{deploy_command(work_dir / 'stacks', stack)}` and then `sovereign models record-deploy`"
        ) from None
    return str(result.summary.result)
