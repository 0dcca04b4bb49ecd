"""``sovereign models import``: an approved model folder into the EU model bucket, signed.

``import_model`` hashes every file of the folder into a ``SHA256SUMS`` manifest (the format the
cluster's weights Job and init container verify, infra/weights/fetch.py), signs it with an OpenBao
transit key (ed25519, ``storage.manifest_signing_key``) and uploads the files to the model's
``source`` prefix: large files in parts, resumable (``Uploader``: an interrupted import continues
with the parts that are not there yet), with a progress bar. The manifest and its signature
(``SHA256SUMS.sig``) go last, so a prefix with a manifest is always complete; then the release is
recorded in the release log (infra/weights/releases.py).

A release lives at its own prefix: an import into a prefix that holds another signed manifest is
refused, because overwriting it would destroy the release a rollback returns to.
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
from infra.weights.bucket import read_optional_object, source_url, target
from infra.weights.manifest import MIB, SIGNATURE_SUFFIX, ModelsError, build_manifest, check_signature
from infra.weights.releases import Release, ReleaseLog
from infra.weights.transit import identity, public_keys, sign

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
    there = read_optional_object(s3, where.bucket, where.prefix + where.manifest, endpoint, cfg.stack)
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
