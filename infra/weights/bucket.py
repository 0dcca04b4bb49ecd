"""A model's release in the EU model bucket: where it is (``target``: the model's configured
``source``, or another prefix of the same bucket) and its check, ``sovereign models verify``
(``verify_model``): the signature with the transit key's public half, then every object re-read
against the manifest; a file that differs, is missing or is not listed fails with its name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from infra import objectstore
from infra.config import StackConfig, s3_location
from infra.weights.manifest import MIB, SIGNATURE_SUFFIX, Manifest, ModelsError, WeightsError, check_signature


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


def read_object(s3: Any, bucket: str, key: str, endpoint: str, stack: str) -> bytes:
    import botocore.exceptions

    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except botocore.exceptions.ClientError as exc:
        raise objectstore.explain(exc, f"s3://{bucket}/{key}", endpoint, stack) from None


def read_optional_object(s3: Any, bucket: str, key: str, endpoint: str, stack: str) -> bytes | None:
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
        manifest = read_object(s3, where.bucket, where.prefix + where.manifest, endpoint, cfg.stack)
    except objectstore.StorageError as exc:
        if "does not exist" not in str(exc):
            raise
        raise ModelsError(
            f"{base}{where.manifest} does not exist: the model was never imported (or its import was "
            f"interrupted); run `sovereign models import --stack {cfg.stack} --model {model} --from DIR`"
        ) from None
    signature = read_object(
        s3, where.bucket, where.prefix + where.manifest + SIGNATURE_SUFFIX, endpoint, cfg.stack
    )
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
