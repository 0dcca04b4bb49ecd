"""Keys from OpenBao transit (envelope encryption), cached in memory with a TTL; fail closed.

- Per-tenant data keys: ``transit/datakey/plaintext/<tenant_key>`` with the tenant as the
  derivation context (one derived transit key, a distinct key per tenant). The wrapped copy
  is kept on disk; the plaintext lives only in this process's memory for ``key_ttl_s``.
- Audit HMAC keys: a fresh data key of ``<audit_key>`` per TTL period; its wrapped form goes
  into the audit trail so a verifier with decrypt rights can check the signatures.

Any failure raises :class:`KeyUnavailable`; the gateway answers 503 and forwards nothing.

Bounds (a hung OpenBao must not hold requests up; the constants below say why these):

- single flight per key: one fetch in flight per tenant, one for the audit key, one readiness
  check; concurrent callers for the same key share it, different keys never wait on each other;
- every caller waits at most ``timeout_s * WAIT_FACTOR`` for the shared fetch;
- the blocking hvac calls run on the provider's own pool of ``MAX_CALLS`` threads; with all of
  them busy (OpenBao hangs), a new fetch fails at once instead of queueing;
- after OpenBao did not answer, new fetches of uncached keys fail at once for ``timeout_s``
  (an open circuit); cached keys keep serving, and a successful call closes it (the readiness
  check asks even while it is open).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from gateway.audit import AuditKey
from gateway.clientkeys import TENANT_RE
from gateway.errors import SovereignError
from gateway.files import write_private
from gateway.settings import OpenBaoSettings

log = logging.getLogger("sovereign.kms")

_T = TypeVar("_T")

# How long a caller waits for a (shared) fetch: timeout_s, the bound of one OpenBao call, times
# this. Two, because requests applies timeout_s to the connect and to each read separately, and
# one fetch may make two calls (the audit key and the token renewal; a Kubernetes login and the
# key). A hung OpenBao usually fails a fetch sooner: the call's read timeout (timeout_s) ends it.
WAIT_FACTOR = 2.0
# Threads for blocking OpenBao calls, per KeyProvider, and the most calls in flight at once. With
# single flight this is the number of distinct keys fetched at the same moment: 8 is plenty for
# a pod's tenants when OpenBao answers in milliseconds, and the most hung threads an outage costs.
MAX_CALLS = 8


class KeyUnavailable(SovereignError, RuntimeError):
    """OpenBao could not provide a key: fail closed."""


class _Unreachable(KeyUnavailable):
    """OpenBao did not answer (connection refused, timed out): opens the circuit."""


@dataclass
class _Cached:
    key: bytes
    expires: float


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (asyncio logs one nobody retrieved)."""
    if not future.cancelled():
        future.exception()


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
        self._derived: dict[str, _Cached] = {}  # keys derived in OpenBao (hmac_key)
        self._audit: tuple[AuditKey, float] | None = None
        self._login: tuple[str, float] | None = None
        self._login_lock = threading.Lock()  # key fetches run in threads: one login serves them all
        # single flight and the call bound; taken briefly by the event loop and the pool's threads,
        # never across a call (reentrant: a cancelled job's callback may run under it)
        self._state = threading.RLock()
        self._inflight: dict[str, concurrent.futures.Future[Any]] = {}
        self._calls = 0  # blocking calls submitted and not finished, hung ones included
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._open_until = 0.0  # monotonic time until which uncached fetches fail at once
        self._generation = 0  # forget() bumps it: a fetch that ends later caches nothing

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
            raise _Unreachable(f"OpenBao at {s.address} is unreachable (Kubernetes login)") from None
        auth = response["auth"]
        return str(auth["client_token"]), time.monotonic() + float(auth["lease_duration"]) / 2

    def _call(self, what: str, fn: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result = fn(mount_point=self._settings.transit_mount, **kwargs)
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
            raise _Unreachable(f"OpenBao at {self._settings.address} is unreachable ({what})") from None
        if not isinstance(result, dict):  # hvac hands back the raw response when it is not JSON
            raise KeyUnavailable(f"OpenBao gave no JSON answer to {what}")
        return result

    # -- bounded, single-flight fetches ---------------------------------------------------
    def _start(
        self,
        name: str,
        what: str,
        fn: Callable[[], _T],
        store: Callable[[_T], None] | None,
        probe: bool = False,
    ) -> concurrent.futures.Future[_T]:
        """The fetch in flight for *name*, or a new one on the provider's pool; KeyUnavailable at
        once while the circuit is open (unless *probe*) or every call slot is taken."""
        with self._state:
            shared = self._inflight.get(name)
            if shared is not None:
                return shared
            now = time.monotonic()
            if not probe and now < self._open_until:
                raise KeyUnavailable(
                    f"OpenBao did not answer a moment ago; not asking again for "
                    f"{self._open_until - now:.1f} s ({what})"
                )
            if self._calls >= MAX_CALLS:
                raise KeyUnavailable(
                    f"OpenBao is not answering: {MAX_CALLS} calls already in flight ({what})"
                )
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(MAX_CALLS, thread_name_prefix="openbao")
            shared = concurrent.futures.Future()
            shared.set_running_or_notify_cancel()  # no waiter can cancel it for the others
            try:
                job = self._pool.submit(self._run, name, shared, fn, store, self._generation)
            except RuntimeError:  # the pool is shut down
                raise KeyUnavailable(f"the key provider is closed ({what})") from None
            self._inflight[name] = shared
            self._calls += 1
            # a job cancelled before it ran (forget() shut the pool down) never runs _run
            job.add_done_callback(lambda j: self._abandoned(name, shared) if j.cancelled() else None)
            return shared

    def _run(
        self,
        name: str,
        shared: concurrent.futures.Future[_T],
        fn: Callable[[], _T],
        store: Callable[[_T], None] | None,
        generation: int,
    ) -> None:
        """In a pool thread: the blocking call, then the cache, the circuit and the waiters."""
        try:
            result = fn()
        except BaseException as exc:  # handed to the waiters (whatever it is, as before)
            if isinstance(exc, _Unreachable):
                self._trip()
            self._finish(name, shared)
            shared.set_exception(exc)
            return
        with self._state:
            self._open_until = 0.0  # OpenBao answered
            if store is not None and generation == self._generation:
                store(result)  # before the flight ends: a later caller finds it cached
        self._finish(name, shared)
        shared.set_result(result)

    def _finish(self, name: str, shared: concurrent.futures.Future[Any]) -> None:
        with self._state:
            if self._inflight.get(name) is shared:
                del self._inflight[name]
            self._calls -= 1

    def _abandoned(self, name: str, shared: concurrent.futures.Future[Any]) -> None:
        self._finish(name, shared)
        shared.set_exception(KeyUnavailable("the key provider was closed during the fetch"))

    def _trip(self) -> None:
        """OpenBao did not answer: new fetches of uncached keys fail at once for timeout_s."""
        with self._state:
            self._open_until = max(self._open_until, time.monotonic() + self._settings.timeout_s)

    async def _wait(self, shared: concurrent.futures.Future[_T], what: str) -> _T:
        """The shared fetch's result, waiting at most timeout_s * WAIT_FACTOR. The wait is
        shielded: a waiter that gives up (or is cancelled) leaves the fetch to the others."""
        timeout_s = self._settings.timeout_s
        mine = asyncio.wrap_future(shared)
        mine.add_done_callback(_retrieved)  # its outcome may come after this waiter gave up
        try:
            return await asyncio.wait_for(asyncio.shield(mine), timeout_s * WAIT_FACTOR)
        except TimeoutError:
            self._trip()
            raise KeyUnavailable(
                f"OpenBao did not answer within openbao.timeout_s ({timeout_s:g} s per call, "
                f"{timeout_s * WAIT_FACTOR:g} s in all) for {what}"
            ) from None
        except KeyUnavailable as exc:  # a copy per waiter: the shared one is raised in many tasks
            raise type(exc)(*exc.args) from None

    async def _fetch(
        self,
        name: str,
        what: str,
        fn: Callable[[], _T],
        store: Callable[[_T], None] | None,
        probe: bool = False,
    ) -> _T:
        return await self._wait(self._start(name, what, fn, store, probe), what)

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
        cached = self._tenants.get(tenant)
        if cached and cached.expires > time.monotonic():
            return cached.key

        def store(key: bytes) -> None:
            self._tenants[tenant] = _Cached(key, time.monotonic() + self._settings.key_ttl_s)

        return await self._fetch(
            f"tenant:{tenant}", f"the data key of tenant {tenant!r}",
            lambda: self._tenant_key_blocking(tenant), store,
        )  # fmt: skip

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

        def store(key: AuditKey) -> None:
            self._audit = (key, time.monotonic() + self._settings.key_ttl_s)

        await self._fetch("audit", "the audit HMAC key", self._audit_key_blocking, store)

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

    # -- transit HMAC (pseudonyms, gateway/memory/pseudonym.py) ----------------------------
    async def transit_hmac(self, key_name: str, data: bytes, what: str) -> str:
        """``transit/hmac/<key_name>`` of *data* (SHA-256): the ``vault:vN:...`` string. Bounded
        and failing closed like a key fetch (KeyUnavailable); never cached, and *data* never
        named in an error (*what* says what it was for)."""

        def call() -> str:
            client = self._client()
            result = self._call(
                what,
                client.secrets.transit.generate_hmac,
                name=key_name,
                hash_input=base64.b64encode(data).decode(),
                algorithm="sha2-256",
            )
            return str(result["data"]["hmac"])

        # single flight per input (the same patient's concurrent requests share one call)
        name = "hmac:" + hashlib.sha256(key_name.encode() + b"\x00" + data).hexdigest()
        return await self._fetch(name, what, call, None)

    async def hmac_key(self, key_name: str, data: bytes, what: str) -> bytes:
        """A key derived in OpenBao: the raw HMAC-SHA256 ``transit/hmac/<key_name>`` of *data*.
        Every gateway process derives the same key (nothing wrapped to share between pods, no
        copy on a pod's disk), and it stays the same across restarts as long as the transit key
        is not rotated; cached in memory for key_ttl_s like a tenant's data key."""
        name = hashlib.sha256(key_name.encode() + b"\x00" + data).hexdigest()
        cached = self._derived.get(name)
        if cached and cached.expires > time.monotonic():
            return cached.key
        answer = await self.transit_hmac(key_name, data, what)
        version, _, mac = answer.removeprefix("vault:v").partition(":")
        try:
            if not version.isdigit():
                raise ValueError(version)
            key = base64.b64decode(mac, validate=True)
        except ValueError:
            raise KeyUnavailable(f"OpenBao answered {what} in an unknown form") from None
        self._derived[name] = _Cached(key, time.monotonic() + self._settings.key_ttl_s)
        return key

    def forget(self) -> None:
        """Drop every plaintext key from memory (e.g. on shutdown), and the call threads: hung
        ones are left to their call's timeout, not waited for. A fetch that ends later caches
        nothing; the provider stays usable (a later fetch starts a new pool)."""
        with self._state:
            self._generation += 1
            self._tenants.clear()
            self._derived.clear()
            self._audit = None
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def check(self) -> None:
        """Readiness: OpenBao answers and our token is valid. Bounded like a key fetch, on the
        same threads; it asks even while the circuit is open, and an answer closes it."""

        def _lookup() -> None:
            client = self._client()
            try:
                client.auth.token.lookup_self()
            except hvac.exceptions.VaultError as exc:
                raise KeyUnavailable(f"OpenBao rejected the gateway token: {type(exc).__name__}") from None
            except requests.RequestException:
                raise _Unreachable(f"OpenBao at {self._settings.address} is unreachable") from None

        await self._fetch("check", "the readiness check", _lookup, None, probe=True)


def transit_unwrapper(address: str, token: str, key_name: str, mount: str = "transit") -> Any:
    """A function that unwraps audit keys for :func:`gateway.audit.verify`."""
    client = make_client(address, token, 5.0)

    def unwrap(wrapped: str) -> bytes:
        data = client.secrets.transit.decrypt_data(name=key_name, ciphertext=wrapped, mount_point=mount)
        return base64.b64decode(data["data"]["plaintext"])

    return unwrap
