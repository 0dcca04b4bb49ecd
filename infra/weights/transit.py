"""OpenBao for model releases: transit signs a manifest (ed25519, ``storage.manifest_signing_key``),
gives the key's public halves by version, and names who holds a token (``auth/token/lookup-self``:
its display name and entity, never the token) for the release log.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from infra.openbao_contract import TRANSIT_MOUNT
from infra.weights.manifest import SIGNATURE_FORMAT, ModelsError


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
