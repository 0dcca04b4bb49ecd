"""Model weights on the cluster: fetch from EU object storage, verify against the SHA-256 manifest.

``sovereign weights fetch`` runs in the weights Job (the only pods allowed to reach object
storage); ``sovereign weights verify`` runs as the vLLM pods' init container, with no network,
before the server starts. The manifest is the ``sha256sum`` format (``<hex>  <relative path>``),
one line per file, kept beside the weights (``SHA256SUMS``).

A file missing from the manifest, a file the manifest lists but the folder lacks, a digest
mismatch, or a path that escapes the folder fails the step: vLLM never loads weights that
are not exactly the reviewed ones.

With ``--manifest-sha256`` (the stack's ``platform.models[].manifest_sha256``, the approved
release) both steps also refuse a manifest whose own SHA-256 differs: fetch before it downloads
any weight file, verify before it hashes any. The fetch puts the manifest in place last, so an
interrupted fetch leaves no manifest that claims files the folder does not hold.

Release folders: with a pin, ``fetch --dest /models/<model>`` writes the release into a folder of
its own, ``/models/<model>/<manifest_sha256>/``, which the vLLM pods of that release mount and
verify (``--dir``). A fetch never writes into another release's folder, so the pods still serving
the previous release (and any of them restarting during the rollout) keep verifying, whether the
new fetch runs, fails half-way or succeeds. A release folder that is already complete (its
manifest is the pin, its signature valid, every file verifies) is not downloaded again: a
rollback to a release still on the volume copies nothing. After a successful fetch, the
``KEEP_RELEASES`` complete release folders most recently fetched (by mtime; each fetch of a
release, download or not, touches its folder) are kept besides the new one and every other
release folder is removed: the Job cannot know which release the running Deployment serves, so it
keeps the last ones the Jobs fetched (the release being replaced, and one more in case that one
never rolled out), and the volume (``volume_gi``) must hold ``KEEP_RELEASES + 1`` releases.
Without a pin the folder ``/models/<model>`` itself holds the one release, as before; its
fetch and verify leave the release folders below it alone.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from infra.weights.manifest import (
    SIGNATURE_SUFFIX,
    Manifest,
    ModelsError,
    WeightsError,
    check_pin,
    check_signature,
    sha256_file,
)

_RELEASE_DIR = re.compile(r"[0-9a-f]{64}")  # /models/<model>/<manifest_sha256>/
KEEP_RELEASES = 2  # complete release folders kept besides the one just fetched (see the docstring)


def verify(folder: Path, manifest_name: str = "SHA256SUMS", manifest_sha256: str | None = None) -> int:
    """Check every file in *folder* against its manifest; return the number of files checked.

    With *manifest_sha256* the manifest itself must be that approved release's."""
    manifest_path = folder / manifest_name
    if not manifest_path.is_file():
        raise WeightsError(f"no manifest {manifest_path}; the weights Job writes it with the weights")
    check_pin(manifest_path.read_bytes(), manifest_sha256, str(manifest_path))
    manifest = Manifest.parse(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
    signature_path = folder / (manifest_name + SIGNATURE_SUFFIX)
    present = {
        p.relative_to(folder).as_posix()
        for p in _files(folder, releases_below=manifest_sha256 is None)
        if p not in {manifest_path, signature_path}
    }
    missing = sorted(set(manifest.entries) - present)
    extra = sorted(present - set(manifest.entries))
    if missing:
        raise WeightsError(f"{len(missing)} file(s) in the manifest are missing, first: {missing[0]}")
    if extra:
        raise WeightsError(f"{len(extra)} file(s) not in the manifest, first: {extra[0]}")
    for rel, expected in sorted(manifest.entries.items()):
        if sha256_file(folder / rel) != expected:
            raise WeightsError(f"{rel}: SHA-256 does not match the manifest; refusing to serve these weights")
    return len(manifest.entries)


def _files(folder: Path, releases_below: bool) -> list[Path]:
    """Every file in *folder*; with *releases_below* (an unpinned model's folder) not those in the
    pinned release folders below it (``<manifest_sha256>/``), which are other releases."""
    found = []
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        top = p.relative_to(folder).parts[0]
        if releases_below and top != p.name and _RELEASE_DIR.fullmatch(top):
            continue
        found.append(p)
    return found


def release_folder(model_dir: Path, manifest_sha256: str | None) -> Path:
    """Where a release lives: ``<model_dir>/<manifest_sha256>/`` with a pin, else *model_dir*."""
    return model_dir if manifest_sha256 is None else model_dir / manifest_sha256


def prune(
    model_dir: Path, current: str, manifest_name: str = "SHA256SUMS", keep: int = KEEP_RELEASES
) -> list[str]:
    """Remove the release folders in *model_dir* other than *current* and the *keep* complete ones
    fetched most recently (by mtime); return the removed folders' names. Files of an unpinned
    release at the top of *model_dir* are not touched."""
    others = [
        p for p in model_dir.iterdir()
        if p.is_dir() and _RELEASE_DIR.fullmatch(p.name) and p.name != current
    ]  # fmt: skip
    complete = sorted(
        (p for p in others if (p / manifest_name).is_file()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    kept = set(complete[:keep])
    removed = sorted(p.name for p in others if p not in kept)
    for name in removed:
        shutil.rmtree(model_dir / name)
    return removed


def _complete(folder: Path, manifest_name: str, public_keys: dict[int, bytes] | None, pin: str) -> int | None:
    """The file count if *folder* already holds the pinned release, complete and verified (and its
    signature valid with *public_keys*); None if it must be fetched (again)."""
    if not (folder / manifest_name).is_file():
        return None
    try:
        if public_keys is not None:
            signature = folder / (manifest_name + SIGNATURE_SUFFIX)
            if not signature.is_file():
                return None
            try:
                check_signature(
                    (folder / manifest_name).read_bytes(), signature.read_bytes(), public_keys, str(signature)
                )
            except ModelsError:
                return None
        return verify(folder, manifest_name, pin)
    except WeightsError:
        return None


def _bucket_and_prefix(source: str) -> tuple[str, str]:
    parts = urlsplit(source)
    if parts.scheme != "s3" or not parts.netloc:
        raise WeightsError(f"source {source!r} must be s3://bucket/prefix/")
    prefix = parts.path.lstrip("/")
    return parts.netloc, prefix if not prefix or prefix.endswith("/") else prefix + "/"


def fetch(
    source: str,
    endpoint: str,
    dest: Path,
    manifest_name: str = "SHA256SUMS",
    public_keys: dict[int, bytes] | None = None,
    manifest_sha256: str | None = None,
) -> int:
    """Download the manifest and exactly the files it lists, then verify them; return the count.

    With *public_keys* (the signing key's public halves, ``sovereign models public-key``) the
    manifest's signature (``<manifest>.sig``, written by ``sovereign models import``) must be
    valid, and with *manifest_sha256* (the approved release) the manifest must be that one,
    before any weight file is downloaded.

    *dest* is the model's folder. With *manifest_sha256* the release goes into
    ``dest/<manifest_sha256>/`` and no other release folder is written to; if that folder already
    holds the release, complete and verified, nothing is downloaded; after success the older
    release folders are pruned (``prune``, ``KEEP_RELEASES``). Without it *dest* holds the
    release. Either way a file already in the release's folder with the listed digest is kept (a
    resumed fetch copies only what is missing) and files the manifest does not list are removed.

    Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, from a
    read-only Secret); the endpoint is the stack's EU object storage.
    """
    import boto3
    import botocore.exceptions

    bucket, prefix = _bucket_and_prefix(source)
    client = boto3.session.Session().client("s3", endpoint_url=endpoint)

    def download(key: str, target: Path) -> None:
        try:
            client.download_file(bucket, key, str(target))
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise WeightsError(f"object storage refused s3://{bucket}/{key}: {code}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise WeightsError(f"object storage at {endpoint} failed: {type(exc).__name__}") from None

    model_dir = dest
    dest = release_folder(model_dir, manifest_sha256)
    if manifest_sha256 is not None:
        already = _complete(dest, manifest_name, public_keys, manifest_sha256)
        if already is not None:  # on the volume already (a rollback): nothing to download
            os.utime(dest)  # fetched now, for prune's order
            prune(model_dir, manifest_sha256, manifest_name)
            return already
    dest.mkdir(parents=True, exist_ok=True)
    where = f"s3://{bucket}/{prefix}{manifest_name}"
    # the new manifest (and signature) beside the old one until every file it lists is in place
    incoming = dest / (manifest_name + ".partial")
    incoming_signature: Path | None = None
    try:
        download(prefix + manifest_name, incoming)
        if public_keys is not None:
            incoming_signature = dest / (manifest_name + SIGNATURE_SUFFIX + ".partial")
            download(prefix + manifest_name + SIGNATURE_SUFFIX, incoming_signature)
            try:
                check_signature(
                    incoming.read_bytes(), incoming_signature.read_bytes(), public_keys,
                    f"{where}{SIGNATURE_SUFFIX}",
                )  # fmt: skip
            except ModelsError as exc:
                raise WeightsError(str(exc)) from None
        check_pin(incoming.read_bytes(), manifest_sha256, where)
        manifest = Manifest.parse(incoming.read_text(encoding="utf-8"), where)
    except WeightsError:
        # refused before any weight file: the folder keeps what it held (unpinned: the release)
        incoming.unlink(missing_ok=True)
        if incoming_signature is not None:
            incoming_signature.unlink(missing_ok=True)
        if manifest_sha256 is not None and not any(dest.iterdir()):
            dest.rmdir()  # the release folder this fetch created, empty
        raise
    for rel, expected in sorted(manifest.entries.items()):
        target = dest / rel
        if target.is_file() and sha256_file(target) == expected:
            continue  # already on the volume (an earlier fetch of this release, or a rollback)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        download(prefix + rel, partial)
        partial.replace(target)
    manifest_path = dest / manifest_name
    signature_path = dest / (manifest_name + SIGNATURE_SUFFIX)
    keep = {incoming, manifest_path, *(dest / rel for rel in manifest.entries)}
    if incoming_signature is not None:
        keep |= {incoming_signature, signature_path}
    for stale in [p for p in _files(dest, releases_below=manifest_sha256 is None) if p not in keep]:
        stale.unlink()  # an earlier (unpinned) release's file, or a partial download
    incoming.replace(manifest_path)
    if incoming_signature is not None:
        incoming_signature.replace(signature_path)
    count = verify(dest, manifest_name, manifest_sha256)
    if manifest_sha256 is not None:
        os.utime(dest)
        prune(model_dir, manifest_sha256, manifest_name)
    return count
