"""Client API keys: issued once, stored only as SHA-256 hashes, bound to one tenant.

A key reads ``sk-sov-<key_id>.<secret>``; the secret is 32 random bytes (256 bits), so a
plain SHA-256 is the right hash (slow password hashes are for low-entropy secrets).
The store is a JSON file; the gateway re-reads it when its mtime changes, so keys issued
while the gateway runs work at once and revoked keys stop working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import SovereignError
from gateway.files import write_private

PREFIX = "sk-sov-"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"  # tenant names everywhere (keys, data keys, profile)
TENANT_RE = re.compile(TENANT_PATTERN)
KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")  # secrets.token_hex(6), as create() makes them


class KeyStoreError(SovereignError, ValueError):
    pass


@dataclass(frozen=True)
class ClientKey:
    key_id: str
    tenant: str
    created: str
    revoked: bool = False


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_store(text: str, source: str) -> dict[str, dict[str, Any]]:
    """The key store's entries by key id, from its JSON *text* (*source* names it in errors;
    a JSON error names the position, never the content)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeyStoreError(f"key store {source} is not valid JSON: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(e, dict) and "key_id" in e for e in keys):
        raise KeyStoreError(
            f"key store {source} is not a key store: a JSON object with a `keys` list of entries with "
            "a key_id; write it with `sovereign gateway keys create`"
        )
    return {str(e["key_id"]): e for e in keys}


def dump_store(entries: dict[str, dict[str, Any]]) -> str:
    """The key store's JSON (what parse_store reads)."""
    return json.dumps({"keys": list(entries.values())}, indent=2)


def mark_revoked(entries: dict[str, dict[str, Any]], key_id: str) -> bool:
    """Mark *key_id* revoked in *entries*; False when it already was. The one revocation rule of
    the file store and of the cluster's Secret (infra/cluster_keys.py)."""
    if not KEY_ID_RE.match(key_id):  # a pasted full key must not reach a terminal or a log
        raise KeyStoreError(
            "no key with id like that: KEY_ID is the 12 hex digits `sovereign gateway keys list` shows "
            "(value not shown; if it was a full key, treat that key as exposed)"
        )
    if key_id not in entries:
        raise KeyStoreError(f"no key with id {key_id!r}; `sovereign gateway keys list` shows them")
    already = bool(entries[key_id].get("revoked"))
    entries[key_id]["revoked"] = True
    return not already


class ClientKeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._entries: dict[str, dict[str, Any]] = {}

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._entries, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        self._entries = parse_store(self.path.read_text(encoding="utf-8"), str(self.path))
        self._mtime = mtime

    def _save(self) -> None:
        write_private(self.path, dump_store(self._entries))
        self._mtime = None

    def create(self, tenant: str) -> tuple[ClientKey, str]:
        """Issue a key for *tenant*; returns the record and the full key (shown once)."""
        if not TENANT_RE.match(tenant):
            raise KeyStoreError(
                f"--tenant: {tenant!r} is not a valid tenant name; use lower-case letters, "
                "digits and '-' (1-63 characters, starting with a letter or digit)"
            )
        self._load()
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self._entries[key_id] = {
            "key_id": key_id,
            "tenant": tenant,
            "sha256": _hash(secret),
            "created": created,
            "revoked": False,
        }
        self._save()
        return ClientKey(key_id, tenant, created), f"{PREFIX}{key_id}.{secret}"

    def revoke(self, key_id: str) -> None:
        self._load()
        mark_revoked(self._entries, key_id)
        self._save()

    def list(self) -> list[ClientKey]:
        self._load()
        return [
            ClientKey(e["key_id"], e["tenant"], e["created"], bool(e.get("revoked")))
            for e in self._entries.values()
        ]

    def authenticate(self, presented: str) -> ClientKey | None:
        """The key's record when *presented* is a valid, unrevoked key; else None."""
        if not presented.startswith(PREFIX) or "." not in presented:
            return None
        key_id, _, secret = presented[len(PREFIX) :].partition(".")
        self._load()
        entry = self._entries.get(key_id)
        if entry is None or entry.get("revoked"):
            return None
        if not hmac.compare_digest(entry["sha256"], _hash(secret)):
            return None
        return ClientKey(key_id, entry["tenant"], entry["created"])
