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
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import objectstore
from infra.config import StackConfig, s3_location
from infra.k8s_platform.weights import SIGNATURE_SUFFIX, Manifest, WeightsError, sha256_file
from infra.local.openbao import TRANSIT_MOUNT

SIGNATURE_FORMAT = "sovereign-manifest-signature/1"
MIB = 1 << 20


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


def target(cfg: StackConfig, model: str) -> Target:
    for m in cfg.platform.models:
        if m.name == model:
            bucket, prefix = s3_location(m.source)
            return Target(bucket, prefix, m.manifest)
    names = ", ".join(m.name for m in cfg.platform.models) or "none"
    raise ModelsError(
        f"--model {model!r}: stack {cfg.stack!r} declares no such model (platform.models: {names})"
    )


@dataclass
class ImportResult:
    uploaded: int
    skipped: int
    bytes: int
    key_version: int
    parts_sent: int
    parts_resumed: int


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
) -> ImportResult:
    where = target(cfg, model)
    manifest, entries = build_manifest(folder, where.manifest)
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
    return ImportResult(
        len(todo), len(uploads) - len(todo), sent, version, uploader.parts_sent, uploader.parts_resumed
    )


def _read(s3: Any, bucket: str, key: str, endpoint: str, stack: str) -> bytes:
    import botocore.exceptions

    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except botocore.exceptions.ClientError as exc:
        raise objectstore.explain(exc, f"s3://{bucket}/{key}", endpoint, stack) from None


def verify_model(cfg: StackConfig, model: str, keys: dict[int, bytes]) -> int:
    """Check the signature, then every object against the manifest; return the files checked."""
    import botocore.exceptions

    where = target(cfg, model)
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
