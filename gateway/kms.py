"""Keys from OpenBao transit (envelope encryption), cached in memory with a TTL.

- Per-tenant data keys: ``transit/datakey/plaintext/<tenant_key>`` with the tenant as the
  derivation context (one derived transit key, a distinct key per tenant). The wrapped copy
  is kept on disk; the plaintext lives only in this process's memory for ``key_ttl_s``.
- Audit HMAC keys: a fresh data key of ``<audit_key>`` per TTL period; its wrapped form goes
  into the audit trail so a verifier with decrypt rights can check the signatures.

Any failure raises :class:`KeyUnavailable`; the gateway answers 503 and forwards nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from gateway.audit import AuditKey
from gateway.clientkeys import TENANT_RE
from gateway.files import write_private
from gateway.settings import OpenBaoSettings

log = logging.getLogger("sovereign.kms")


class KeyUnavailable(RuntimeError):
    """OpenBao could not provide a key: fail closed."""


@dataclass
class _Cached:
    key: bytes
    expires: float


def make_client(
    address: str, token: str | None, timeout_s: float, ca_file: Path | None = None
) -> hvac.Client:
    verify: str | bool = str(ca_file) if ca_file is not None else True
    # requests (under hvac) takes a float timeout; the stubs say int
    return hvac.Client(url=address, token=token, timeout=timeout_s, verify=verify)  # type: ignore[arg-type]


class KeyProvider:
    def __init__(self, settings: OpenBaoSettings, wrapped_dir: Path) -> None:
        self._settings = settings
        self._wrapped_dir = wrapped_dir
        self._tenants: dict[str, _Cached] = {}
        self._audit: tuple[AuditKey, float] | None = None
        self._lock = asyncio.Lock()
        self._login: tuple[str, float] | None = None
        self._login_lock = threading.Lock()  # key fetches run in threads: one login serves them all

    def _client(self) -> hvac.Client:
        s = self._settings
        token = self._kubernetes_login() if s.kubernetes_role else s.resolved_token()
        if not token:
            raise KeyUnavailable("no OpenBao token configured (openbao.token_file or openbao.token)")
        return make_client(s.address, token, s.timeout_s, s.ca_file)

    def _kubernetes_login(self) -> str:
        """A token from OpenBao's Kubernetes auth for the pod's service account, renewed by a new
        login at half its lifetime (the projected service-account token rotates too)."""
        with self._login_lock:
            if self._login and self._login[1] > time.monotonic():
                return self._login[0]
            self._login = self._kubernetes_login_now()
            return self._login[0]

    def _kubernetes_login_now(self) -> tuple[str, float]:
        s = self._settings
        try:
            jwt = s.kubernetes_token_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise KeyUnavailable(
                f"no service-account token at {s.kubernetes_token_file} (openbao.kubernetes_token_file)"
            ) from None
        client = make_client(s.address, None, s.timeout_s, s.ca_file)
        try:
            response = client.auth.kubernetes.login(s.kubernetes_role, jwt, mount_point=s.kubernetes_mount)
        except hvac.exceptions.VaultError as exc:
            raise KeyUnavailable(
                f"OpenBao refused the Kubernetes login as role {s.kubernetes_role!r}: {type(exc).__name__}"
            ) from None
        except requests.RequestException:
            raise KeyUnavailable(f"OpenBao at {s.address} is unreachable (Kubernetes login)") from None
        auth = response["auth"]
        return str(auth["client_token"]), time.monotonic() + float(auth["lease_duration"]) / 2

    def _call(self, what: str, fn: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = fn(mount_point=self._settings.transit_mount, **kwargs)
        except hvac.exceptions.Forbidden:
            raise KeyUnavailable(f"OpenBao refused {what}: the gateway token lacks permission") from None
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest) as exc:
            if isinstance(exc, hvac.exceptions.InvalidPath) or "not found" in str(exc):
                raise KeyUnavailable(
                    f"OpenBao has no transit key {kwargs.get('name')!r} for {what}; create it or "
                    "correct openbao.tenant_key / openbao.audit_key"
                ) from None
            raise KeyUnavailable(f"OpenBao refused {what}: invalid request") from None
        except hvac.exceptions.VaultError as exc:
            raise KeyUnavailable(f"OpenBao error during {what}: {type(exc).__name__}") from None
        except requests.RequestException:
            raise KeyUnavailable(f"OpenBao at {self._settings.address} is unreachable ({what})") from None
        return result

    # -- tenant data keys ---------------------------------------------------------------
    def _new_tenant_key(self, client: hvac.Client, tenant: str) -> bytes:
        """A fresh data key for *tenant*: its wrapped copy replaces the one on disk (one
        rename); the plaintext is returned, never written."""
        data = self._call(
            f"a data key for tenant {tenant!r}",
            client.secrets.transit.generate_data_key,
            name=self._settings.tenant_key,
            key_type="plaintext",
            context=base64.b64encode(tenant.encode()).decode(),
        )
        write_private(self._wrapped_dir / f"{tenant}.wrapped", data["data"]["ciphertext"])
        return base64.b64decode(data["data"]["plaintext"])

    def _tenant_key_blocking(self, tenant: str) -> bytes:
        client = self._client()
        wrapped_file = self._wrapped_dir / f"{tenant}.wrapped"
        if not wrapped_file.exists():
            return self._new_tenant_key(client, tenant)
        data = self._call(
            f"unwrapping the data key of tenant {tenant!r}",
            client.secrets.transit.decrypt_data,
            name=self._settings.tenant_key,
            ciphertext=wrapped_file.read_text(encoding="utf-8").strip(),
            context=base64.b64encode(tenant.encode()).decode(),
        )
        return base64.b64decode(data["data"]["plaintext"])

    def rotate_tenant_key(self, tenant: str) -> None:
        """Give *tenant* a new data key. Gateways pick it up when their cached copy expires
        (key_ttl_s); requests in flight keep restoring with the token map they hold, so
        nothing breaks mid-answer."""
        if not TENANT_RE.match(tenant):
            raise ValueError("tenant must be lower-case letters, digits and '-', 1-63 characters")
        self._new_tenant_key(self._client(), tenant)  # the plaintext is dropped here
        self._tenants.pop(tenant, None)

    async def tenant_key(self, tenant: str) -> bytes:
        if not TENANT_RE.match(tenant):
            raise ValueError("tenant must be lower-case letters, digits and '-', 1-63 characters")
        now = time.monotonic()
        cached = self._tenants.get(tenant)
        if cached and cached.expires > now:
            return cached.key
        async with self._lock:
            cached = self._tenants.get(tenant)
            if cached and cached.expires > time.monotonic():
                return cached.key
            key = await asyncio.to_thread(self._tenant_key_blocking, tenant)
            self._tenants[tenant] = _Cached(key, time.monotonic() + self._settings.key_ttl_s)
            return key

    # -- audit keys ---------------------------------------------------------------------
    def _audit_key_blocking(self) -> AuditKey:
        client = self._client()
        data = self._call(
            "the audit HMAC key",
            client.secrets.transit.generate_data_key,
            name=self._settings.audit_key,
            key_type="plaintext",
        )
        wrapped = str(data["data"]["ciphertext"])
        kid = hashlib.sha256(wrapped.encode()).hexdigest()[:16]
        self._renew(client)
        return AuditKey(kid=kid, wrapped=wrapped, key=base64.b64decode(data["data"]["plaintext"]))

    @staticmethod
    def _renew(client: hvac.Client) -> None:
        """Renew the gateway's periodic token once per key period so it never lapses while the
        gateway runs. A failed renewal is logged; the next key fetch tries again."""
        try:
            client.auth.token.renew_self()
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            log.warning("could not renew the OpenBao token: %s", type(exc).__name__)

    async def refresh_audit_key(self) -> None:
        if self._audit and self._audit[1] > time.monotonic():
            return
        async with self._lock:
            if self._audit and self._audit[1] > time.monotonic():
                return
            key = await asyncio.to_thread(self._audit_key_blocking)
            self._audit = (key, time.monotonic() + self._settings.key_ttl_s)

    def current(self) -> AuditKey:
        """The audit key for :class:`gateway.audit.AuditLog` (refresh it first)."""
        if self._audit is None or self._audit[1] <= time.monotonic():
            raise KeyUnavailable("audit key expired and not refreshed")
        return self._audit[0]

    async def ensure(self, tenant: str) -> bytes:
        """The tenant's data key, with the audit key in memory too (or KeyUnavailable)."""
        data_key = await self.tenant_key(tenant)
        await self.refresh_audit_key()
        return data_key

    def forget(self) -> None:
        """Drop every plaintext key from memory (e.g. on shutdown)."""
        self._tenants.clear()
        self._audit = None

    async def check(self) -> None:
        """Readiness: OpenBao answers and our token is valid."""

        def _lookup() -> None:
            client = self._client()
            try:
                client.auth.token.lookup_self()
            except hvac.exceptions.VaultError as exc:
                raise KeyUnavailable(f"OpenBao rejected the gateway token: {type(exc).__name__}") from None
            except requests.RequestException:
                raise KeyUnavailable(f"OpenBao at {self._settings.address} is unreachable") from None

        await asyncio.to_thread(_lookup)


def transit_unwrapper(address: str, token: str, key_name: str, mount: str = "transit") -> Any:
    """A function that unwraps audit keys for :func:`gateway.audit.verify`."""
    client = make_client(address, token, 5.0)

    def unwrap(wrapped: str) -> bytes:
        data = client.secrets.transit.decrypt_data(name=key_name, ciphertext=wrapped, mount_point=mount)
        return base64.b64decode(data["data"]["plaintext"])

    return unwrap
