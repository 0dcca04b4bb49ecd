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

from gateway.files import write_private

PREFIX = "sk-sov-"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"  # tenant names everywhere (keys, data keys, profile)
TENANT_RE = re.compile(TENANT_PATTERN)


class KeyStoreError(ValueError):
    pass


@dataclass(frozen=True)
class ClientKey:
    key_id: str
    tenant: str
    created: str
    revoked: bool = False


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise KeyStoreError(f"key store {self.path} is not valid JSON: {exc}") from None
        self._entries = {e["key_id"]: e for e in data.get("keys", [])}
        self._mtime = mtime

    def _save(self) -> None:
        write_private(self.path, json.dumps({"keys": list(self._entries.values())}, indent=2))
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
        if key_id not in self._entries:
            raise KeyStoreError(f"no key with id {key_id!r}; `sovereign gateway keys list` shows them")
        self._entries[key_id]["revoked"] = True
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
