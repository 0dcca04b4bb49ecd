"""Sign an evidence folder and verify it, online or offline.

``MANIFEST.json`` lists every file of the folder (relative path, size, SHA-256) and the
provenance of the run (``infra.evidence.provenance``). ``sign`` has OpenBao's transit engine
sign the manifest's exact bytes with an ed25519 key (created on first use), writes the
signature document ``MANIFEST.sig`` (transit's ``vault:vN:<base64>``, the key's name and
version) and the key's public half as ``evidence-signing-key.pem`` (SubjectPublicKeyInfo), so
that an auditor can check the folder without access to OpenBao::

    sovereign evidence verify reports/evidence/eu-central-prod --public-key evidence-signing-key.pem
    # or without this program: the signature is plain ed25519 over MANIFEST.json's bytes
    cut -d: -f3 <<<"$(jq -r .signature MANIFEST.sig)" | base64 -d > sig.bin
    openssl pkeyutl -verify -pubin -inkey evidence-signing-key.pem -rawin -in MANIFEST.json -sigfile sig.bin

The key inside the folder proves integrity only against itself (whoever rewrites the folder
can replace it too): verify always prints the fingerprint of the key it actually used (never
the one recorded in ``MANIFEST.sig``, which is not signed and is only compared with it), and an
auditor compares that with the one the operator publishes (``--expect-fingerprint SHA256:<hex>``
fails on a mismatch), or passes a key obtained separately (``--public-key``), or checks online
against transit.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import BadInput
from infra.evidence.provenance import sha256_file

if TYPE_CHECKING:
    import hvac

MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.sig"
PUBLIC_KEY = "evidence-signing-key.pem"
NOT_LISTED = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY})  # the signing material, not evidence
MANIFEST_FORMAT = "sovereign-evidence-manifest/1"
SIGNATURE_FORMAT = "sovereign-evidence-signature/1"
DEFAULT_KEY = "sovereign-evidence"
DEFAULT_MOUNT = "transit"


class BundleError(BadInput, RuntimeError):
    """The folder, its manifest or signature, a key or OpenBao cannot be used (exit 2)."""


# -- the manifest ------------------------------------------------------------------------------


_sha256 = sha256_file  # one streaming SHA-256 of a file (provenance.py)


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """(plain files, other entries such as symbolic links), relative POSIX paths, sorted."""
    files, other = [], []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            other.append(rel)
        elif path.is_file() and rel not in NOT_LISTED:
            files.append(rel)
    return sorted(files), sorted(other)


def _folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise BundleError(
            f"{folder}: not a folder; give the evidence output folder (--out of sovereign evidence)"
        )
    return folder


def entries(folder: Path) -> list[dict[str, Any]]:
    """Every file of *folder* but the signing material: path, size, sha256."""
    files, other = _walk(_folder(folder))
    if other:
        raise BundleError(
            f"{folder}: {', '.join(other)} is a symbolic link; an evidence folder holds plain files only "
            "(copy the target in, or remove the link)"
        )
    return [
        {"path": rel, "size": (folder / rel).stat().st_size, "sha256": _sha256(folder / rel)} for rel in files
    ]


def manifest_bytes(files: list[dict[str, Any]], provenance: Mapping[str, Any] | None) -> bytes:
    document = {"format": MANIFEST_FORMAT, "files": files, "provenance": dict(provenance or {})}
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_manifest(folder: Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``MANIFEST.json`` for *folder*; an old signature (now stale) is removed."""
    data = manifest_bytes(entries(folder), provenance)
    (folder / SIGNATURE).unlink(missing_ok=True)
    path = folder / MANIFEST
    path.write_bytes(data)
    return path


# -- transit: the key, signing, the public key --------------------------------------------------


def _openbao_error(exc: Exception, client: hvac.Client, key: str, mount: str, action: str) -> BundleError:
    import hvac.exceptions

    where = f"OpenBao at {client.url}"
    if isinstance(exc, hvac.exceptions.Forbidden):
        return BundleError(
            f"{where} denied {action} with transit key {mount}/keys/{key}: the token needs a policy "
            f'with "update" on {mount}/sign/{key} and "read" (and "create" for the first signature) '
            f"on {mount}/keys/{key}"
        )
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return BundleError(f"{where}: no transit engine at {mount}/ (enable it, or pass --transit-mount)")
    if isinstance(exc, hvac.exceptions.VaultError):
        return BundleError(
            f"{where} refused to {action} with transit key {mount}/keys/{key}: {type(exc).__name__}"
        )
    return BundleError(f"cannot reach {where} to {action}: {type(exc).__name__}; check --openbao-address")


def _transit(client: hvac.Client) -> Any:
    """hvac's transit API (its stubs leave these calls untyped)."""
    return client.secrets.transit


def _read_key(client: hvac.Client, key: str, mount: str, create: bool) -> dict[str, Any]:
    import hvac.exceptions
    import requests

    try:
        try:
            data: dict[str, Any] = _transit(client).read_key(key, mount_point=mount)["data"]
        except hvac.exceptions.InvalidPath:
            if not create:
                raise BundleError(f"OpenBao at {client.url} has no transit key {mount}/keys/{key}") from None
            _transit(client).create_key(key, key_type="ed25519", mount_point=mount)
            data = _transit(client).read_key(key, mount_point=mount)["data"]
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _openbao_error(exc, client, key, mount, "read") from None
    if data.get("type") != "ed25519":
        raise BundleError(
            f"transit key {mount}/keys/{key} is {data.get('type')}, not ed25519: evidence is signed with an "
            "ed25519 key; pass another key name (--signing-key) or create one with type=ed25519"
        )
    return data


def _public_bytes(data: Mapping[str, Any], key: str, version: int) -> bytes:
    entry = (data.get("keys") or {}).get(str(version))
    if not isinstance(entry, Mapping) or "public_key" not in entry:
        raise BundleError(f"transit key {key} has no public key for version {version}")
    return base64.b64decode(str(entry["public_key"]))


def _pem(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(raw: bytes) -> str:
    """SHA-256 of the raw 32-byte public key, as an operator publishes it for auditors."""
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def _parse_signature(text: str, where: str) -> tuple[int, bytes]:
    """(key version, raw signature) from transit's ``vault:vN:<base64>``."""
    try:
        prefix, version_text, encoded = text.split(":", 2)
        if prefix != "vault" or not version_text.startswith("v"):
            raise ValueError(prefix)
        return int(version_text[1:]), base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise BundleError(f"{where}: signature is not transit's vault:v<version>:<base64> format") from None


def sign(folder: Path, client: hvac.Client, key: str = DEFAULT_KEY, mount: str = DEFAULT_MOUNT) -> Path:
    """Sign ``MANIFEST.json`` (written by ``write_manifest``) with transit; write the signature
    document and the public key beside it. Returns the signature document's path."""
    import hvac.exceptions
    import requests

    manifest_path = _folder(folder) / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: no manifest to sign; write it first (bundle.write_manifest)")
    manifest = manifest_path.read_bytes()
    _read_key(client, key, mount, create=True)
    try:
        answer = _transit(client).sign_data(
            key, hash_input=base64.b64encode(manifest).decode(), mount_point=mount
        )
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _openbao_error(exc, client, key, mount, "sign") from None
    signature = str(answer["data"]["signature"])
    version, raw_signature = _parse_signature(signature, "transit's answer")
    raw_key = _public_bytes(_read_key(client, key, mount, create=False), key, version)
    _check(manifest, raw_signature, raw_key)  # a signature that does not verify is never written
    document = {
        "format": SIGNATURE_FORMAT,
        "manifest": MANIFEST,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "algorithm": "ed25519",
        "signature": signature,
        "key": key,
        "key_version": version,
        "mount": mount,
        "public_key": PUBLIC_KEY,
        "public_key_fingerprint": fingerprint(raw_key),
    }
    (folder / PUBLIC_KEY).write_bytes(_pem(raw_key))
    path = folder / SIGNATURE
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


# -- verification ------------------------------------------------------------------------------


def _check(manifest: bytes, raw_signature: bytes, raw_key: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(raw_signature, manifest)
    except InvalidSignature:
        return False
    return True


def load_public_key(path: Path) -> bytes:
    """The raw ed25519 public key from a PEM file (``evidence-signing-key.pem``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except OSError:
        raise BundleError(
            f"--public-key {path}: cannot be read; give the exported evidence-signing-key.pem"
        ) from None
    except ValueError:
        raise BundleError(
            f"--public-key {path}: not a PEM public key; give the exported {PUBLIC_KEY}"
        ) from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise BundleError(f"--public-key {path}: not an ed25519 key; evidence is signed with ed25519")
    return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Signed:
    manifest: bytes
    document: dict[str, Any]
    version: int
    signature: bytes
    files: list[dict[str, Any]]


def _read_signed(folder: Path) -> Signed:
    manifest_path, signature_path = folder / MANIFEST, folder / SIGNATURE
    for path in (manifest_path, signature_path):
        if not path.is_file():
            raise BundleError(
                f"{path}: missing; this is not a signed evidence folder (sovereign evidence --sign)"
            )
    manifest = manifest_path.read_bytes()
    try:
        document = json.loads(signature_path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != SIGNATURE_FORMAT:
            raise ValueError("format")
        text = str(document["signature"])
    except (ValueError, KeyError, UnicodeDecodeError):
        raise BundleError(f"{signature_path}: not a {SIGNATURE_FORMAT} document") from None
    version, raw = _parse_signature(text, str(signature_path))
    try:
        parsed = json.loads(manifest)
        files = parsed["files"]
        if parsed.get("format") != MANIFEST_FORMAT or not isinstance(files, list):
            raise ValueError("format")
        files = [{"path": str(e["path"]), "size": int(e["size"]), "sha256": str(e["sha256"])} for e in files]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        files = None
    if files is None:
        raise BundleError(f"{manifest_path}: not a {MANIFEST_FORMAT} document (file list unreadable)")
    return Signed(manifest, document, version, raw, files)


def _online(signed: Signed, client: hvac.Client, key: str, mount: str) -> bool:
    import hvac.exceptions
    import requests

    try:
        answer = _transit(client).verify_signed_data(
            key,
            hash_input=base64.b64encode(signed.manifest).decode(),
            signature=str(signed.document["signature"]),
            mount_point=mount,
        )
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise _openbao_error(exc, client, key, mount, "verify") from None
    return bool(answer["data"]["valid"])


_FINGERPRINT_HEX = frozenset("0123456789abcdef")


def _is_fingerprint(text: str) -> bool:
    return text.startswith("SHA256:") and len(text) == 71 and set(text[7:]) <= _FINGERPRINT_HEX


def normalize_fingerprint(text: str) -> str:
    """``SHA256:<64 hex>`` from what an operator publishes (the prefix optional, any case)."""
    value = text.strip().lower()
    value = value.removeprefix("sha256:")
    if len(value) != 64 or not set(value) <= _FINGERPRINT_HEX:
        raise BundleError(
            "--expect-fingerprint: not a key fingerprint; give SHA256: followed by 64 hex digits, as "
            "printed by sovereign evidence verify and published by the operator"
        )
    return "SHA256:" + value


@dataclass(frozen=True)
class Verification:
    """The problems of a folder (empty: intact) and the keys its signature was checked with:
    (where the key came from, its fingerprint)."""

    problems: list[str]
    keys: list[tuple[str, str]]


def check(
    folder: Path,
    public_key: Path | None = None,
    client: hvac.Client | None = None,
    key: str | None = None,
    mount: str | None = None,
    expect_fingerprint: str | None = None,
) -> Verification:
    """``verify``, also naming the fingerprint of every key the signature was checked with.

    The fingerprint recorded in ``MANIFEST.sig`` is not signed: it is compared with the key
    actually used (a mismatch is a problem), never shown in its place. *expect_fingerprint*
    (the one the operator publishes) must match every key used.
    """
    expected = normalize_fingerprint(expect_fingerprint) if expect_fingerprint is not None else None
    signed = _read_signed(_folder(folder))
    problems = []
    if signed.document.get("manifest_sha256") not in (None, hashlib.sha256(signed.manifest).hexdigest()):
        problems.append(
            f"{SIGNATURE}: manifest_sha256 differs from {MANIFEST}'s SHA-256: the manifest was changed"
        )
    if str(signed.document.get("key_version", signed.version)) != str(signed.version):
        problems.append(f"{SIGNATURE}: key_version differs from the signature's v{signed.version}")
    offline: list[tuple[str, bytes]] = []
    if public_key is not None:
        offline.append((f"--public-key {public_key}", load_public_key(public_key)))
    elif client is None:
        shipped = folder / PUBLIC_KEY
        if not shipped.is_file():
            raise BundleError(f"{shipped}: missing; pass --public-key FILE (the exported {PUBLIC_KEY})")
        offline.append((f"the key shipped in the folder ({PUBLIC_KEY})", load_public_key(shipped)))
    keys: list[tuple[str, bytes, bool]] = []  # (where, raw key, the signature verifies with it)
    for where, raw_key in offline:
        valid = _check(signed.manifest, signed.signature, raw_key)
        keys.append((where, raw_key, valid))
        if not valid:
            problems.append(
                f"{SIGNATURE}: the signature does not verify with {where} ({fingerprint(raw_key)}): the "
                "manifest or its signature was changed after signing, or it was signed with another key"
            )
    if client is not None:
        name, where = (
            key or str(signed.document.get("key", DEFAULT_KEY)),
            mount or str(signed.document.get("mount", DEFAULT_MOUNT)),
        )
        valid = _online(signed, client, name, where)
        if not valid:
            problems.append(
                f"{SIGNATURE}: OpenBao transit key {where}/keys/{name} says the signature is not valid"
            )
        data = _read_key(client, name, where, create=False)
        keys.append(
            (
                f"OpenBao transit key {where}/keys/{name} v{signed.version}",
                _public_bytes(data, name, signed.version),
                valid,
            )
        )
    recorded = signed.document.get("public_key_fingerprint")
    shown = recorded if isinstance(recorded, str) and _is_fingerprint(recorded) else "(not a fingerprint)"
    used = [(where, fingerprint(raw_key)) for where, raw_key, _ in keys]
    for (where, actual), (_, _, valid) in zip(used, keys, strict=True):
        # a signature that does not verify is a problem already; one that does, by a key other
        # than the one recorded, means the key (and the signature) were replaced
        if valid and recorded is not None and str(recorded) != actual:
            problems.append(
                f"{SIGNATURE}: public_key_fingerprint {shown} is not the fingerprint of {where} "
                f"({actual}): the signing key or the signature document was replaced"
            )
        if expected is not None and actual != expected:
            problems.append(
                f"{where} has fingerprint {actual}, not {expected} given by --expect-fingerprint: the "
                "folder was not signed with the operator's key"
            )
    listed = {str(e["path"]): e for e in signed.files}
    present, other = _walk(folder)
    for rel in other:
        problems.append(f"{rel}: a symbolic link in the evidence folder; the manifest lists plain files only")
    for rel in present:
        entry = listed.get(rel)
        if entry is None:
            problems.append(f"{rel}: added after signing (not in {MANIFEST})")
            continue
        path = folder / rel
        actual = _sha256(path)
        if actual != entry["sha256"]:
            problems.append(
                f"{rel}: changed after signing: SHA-256 {actual} differs from {entry['sha256']} in {MANIFEST}"
            )
        elif path.stat().st_size != int(entry["size"]):
            problems.append(f"{rel}: size {path.stat().st_size} differs from {entry['size']} in {MANIFEST}")
    for rel in sorted(set(listed) - set(present) - set(other)):
        problems.append(f"{rel}: missing (listed in {MANIFEST}, not in the folder)")
    return Verification(problems, used)


def verify(
    folder: Path,
    public_key: Path | None = None,
    client: hvac.Client | None = None,
    key: str | None = None,
    mount: str | None = None,
    expect_fingerprint: str | None = None,
) -> list[str]:
    """The problems of a signed evidence folder; empty when it is intact.

    The signature is checked offline against *public_key* (a PEM file), online with transit
    when *client* is given (key and mount from the signature document unless named), or, when
    neither is, against the key shipped in the folder (which proves integrity against that key
    only, not origin: compare its fingerprint, or pass *expect_fingerprint*).
    Raises BundleError when the folder cannot be checked at all.
    """
    return check(folder, public_key, client, key, mount, expect_fingerprint).problems


# -- the command line --------------------------------------------------------------------------


def add_openbao_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--openbao-address", help="OpenBao URL (default: VAULT_ADDR, else BAO_ADDR)")
    parser.add_argument(
        "--token-file", help="file with an OpenBao token (default: VAULT_TOKEN, else BAO_TOKEN)"
    )
    parser.add_argument(
        "--ca-file", type=Path, help="CA certificate of OpenBao's TLS (default: VAULT_CACERT)"
    )
    parser.add_argument(
        "--signing-key",
        help=f"transit key (ed25519); default: when signing {DEFAULT_KEY}, when verifying online the key "
        "MANIFEST.sig names",
    )
    parser.add_argument("--transit-mount", default=DEFAULT_MOUNT, help=f"default {DEFAULT_MOUNT}")


def add_expect_fingerprint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect-fingerprint",
        metavar="FP",
        help="with verify: the signing key's fingerprint the operator publishes (SHA256:<hex>); "
        "verification fails when the key used has another",
    )


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def openbao_client(args: argparse.Namespace) -> hvac.Client:
    """A client from --openbao-address/--token-file/--ca-file, else VAULT_* (then BAO_*), as the
    bao CLI reads them."""
    from gateway.kms import make_client

    address = getattr(args, "openbao_address", None) or _env("VAULT_ADDR", "BAO_ADDR")
    if not address:
        raise BundleError("no OpenBao address: pass --openbao-address URL or set VAULT_ADDR")
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError:
            raise BundleError(f"--token-file {token_file}: cannot be read") from None
        if not token:
            raise BundleError(f"--token-file {token_file}: is empty; put an OpenBao token in it")
    else:
        token = _env("VAULT_TOKEN", "BAO_TOKEN") or ""
        if not token:
            raise BundleError("no OpenBao token: pass --token-file FILE or set VAULT_TOKEN")
    ca = getattr(args, "ca_file", None) or _env("VAULT_CACERT", "BAO_CACERT")
    return make_client(address, token, 30.0, Path(ca) if ca else None)


def sign_evidence(folder: Path, args: argparse.Namespace, provenance: Mapping[str, Any] | None) -> Path:
    """For ``sovereign evidence --sign``: the manifest (with *provenance*), then transit's
    signature and the public key. Raises BundleError."""
    client = openbao_client(args)
    write_manifest(folder, provenance)
    return sign(
        folder,
        client,
        getattr(args, "signing_key", None) or DEFAULT_KEY,
        getattr(args, "transit_mount", None) or DEFAULT_MOUNT,
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the folder is intact, 1 with each problem on stderr; a folder that cannot be
    checked is a ``BundleError`` (infra/cli.py's handler: exit 2)."""
    folder = Path(args.folder)
    expected = getattr(args, "expect_fingerprint", None)
    client = openbao_client(args) if getattr(args, "online", False) else None
    result = check(
        folder,
        public_key=getattr(args, "public_key", None),
        client=client,
        key=getattr(args, "signing_key", None) if client is not None else None,
        mount=getattr(args, "transit_mount", None) if client is not None else None,
        expect_fingerprint=expected,
    )
    used = "; ".join(f"{where}, {fp}" for where, fp in result.keys)
    if result.problems:
        print(
            f"sovereign evidence verify: {folder}: NOT INTACT ({len(result.problems)} problem(s))",
            file=sys.stderr,
        )
        for problem in result.problems:
            print(f"  {problem}", file=sys.stderr)
        print(f"  signature checked with {used}", file=sys.stderr)
        return 1
    files = len(json.loads((folder / MANIFEST).read_bytes())["files"])
    print(f"{folder}: intact: {files} files match the signed manifest; signature checked with {used}")
    if expected is not None:
        print("the key's fingerprint matches --expect-fingerprint")
    elif getattr(args, "public_key", None) is None and client is None:
        print(
            "this proves integrity against the key shipped in the folder only, not who signed: whoever "
            "rewrites the folder can replace that key too; compare the fingerprint above with the one the "
            "operator publishes, or pass --expect-fingerprint FP or --public-key FILE"
        )
    return 0
