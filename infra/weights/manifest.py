"""The ``SHA256SUMS`` manifest of a model release and its signature: shared by every other module.

The manifest is the ``sha256sum`` format (``<hex>  <relative path>``), one line per file, kept
beside the weights; ``build_manifest`` writes it for an approved model folder (``sovereign models
import``), ``Manifest.parse`` reads it back (the weights Job, the init container, ``sovereign models
verify``). ``check_pin`` compares its own SHA-256 with the approved release's
(``platform.models[].manifest_sha256``).

The signature (``<manifest>.sig``) is OpenBao transit's ``vault:vN:<base64>`` (ed25519) over the
manifest's bytes, in a small JSON document (``SIGNATURE_FORMAT``); with the transit key's public half
(transit ``keys/<name>``, or a file for hosts without OpenBao access, ``load_public_keys``) anybody
can check it offline with ``cryptography`` (``check_signature``). Signing itself is in
``infra/weights/transit.py``.

Nothing here imports more than the standard library at import time: the weights Job and the init
container import it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.errors import SovereignError

CHUNK = 1 << 20
MIB = 1 << 20
SIGNATURE_FORMAT = "sovereign-manifest-signature/1"
SIGNATURE_SUFFIX = ".sig"  # the manifest's signature beside it (``sovereign models import``)
_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<path>\S.*)$")


class WeightsError(SovereignError, RuntimeError):
    """A refusal of ``sovereign weights`` (the weights Job, the init container)."""


class ModelsError(SovereignError, RuntimeError):
    """A refusal of ``sovereign models`` (import, verify, releases, rollback)."""


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, str]  # relative path → sha256 hex

    @classmethod
    def parse(cls, text: str, source: str) -> Manifest:
        entries: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            match = _LINE.match(line)
            if match is None:
                raise WeightsError(f"{source} line {number}: expected '<sha256 hex>  <path>'")
            path = match["path"].strip()
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts:
                raise WeightsError(f"{source} line {number}: path {path!r} leaves the model folder")
            if path in entries:
                raise WeightsError(f"{source} line {number}: {path!r} listed twice")
            entries[path] = match["digest"]
        if not entries:
            raise WeightsError(f"{source} lists no files")
        return cls(entries)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_pin(manifest: bytes, expected: str | None, where: str) -> None:
    """Raise WeightsError unless the manifest's SHA-256 is *expected* (no pin: nothing to check)."""
    if expected is None:
        return
    actual = hashlib.sha256(manifest).hexdigest()
    if actual != expected:
        raise WeightsError(
            f"{where}: the manifest's SHA-256 is {actual}, not the approved release's {expected} "
            "(platform.models[].manifest_sha256): a different release is at this source; import and "
            "approve it, or point source at the approved release (`sovereign models releases`)"
        )


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
