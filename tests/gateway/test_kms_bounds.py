"""A hung or slow OpenBao fails key fetches fast and independently (gateway/kms.py bounds).

OpenBao here is the real dev server (the ``bao`` fixture) behind a loopback TCP front that this
test controls, or a front with nothing behind it that accepts connections and never answers.
No assertion is on a duration: the ``asyncio.wait_for`` around each scenario only detects a
hang (the old provider serialised every fetch on one lock, one ``timeout_s`` each).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import pytest

from gateway.kms import MAX_CALLS, KeyProvider, KeyUnavailable
from gateway.settings import OpenBaoSettings
from tests.support import Bao

SAFETY_S = 20  # hang detector only
TOKEN_MARK = "s.do-not-print-this-token"

FORWARD, HOLD, DRIBBLE = "forward", "hold", "dribble"


def context(tenant: str) -> bytes:
    """The derivation context the provider sends for *tenant* (in the request body)."""
    return base64.b64encode(tenant.encode())


class Front:
    """A loopback TCP front for OpenBao. Per HTTP request, ``behaviour(request)`` decides:
    FORWARD it to *target* (one request per connection), HOLD it (read, never answered until
    the front closes) or DRIBBLE an answer's first bytes, one every 0.1 s, forever (so a
    client's read timeout never fires). Without a target everything is held."""

    def __init__(self, target: str | None = None) -> None:
        self._target = target.removeprefix("http://").rsplit(":", 1) if target else None
        self.behaviour: Callable[[bytes], str] = lambda request: FORWARD if target else HOLD
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.address = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._lock = threading.Lock()
        self.connections = 0
        self.requests: list[bytes] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def count(self, needle: bytes) -> int:
        with self._lock:
            return sum(needle in r for r in self.requests)

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def release(self) -> None:
        """Close every held or dribbling connection (the client sees it drop)."""
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            _close(conn)

    def close(self) -> None:
        self._stop.set()
        self.release()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(SAFETY_S)
        try:
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
            what = self.behaviour(request)
            if what == FORWARD:
                self._forward(conn, request)
                return
            with self._lock:
                self._held.append(conn)
            if what == DRIBBLE:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self._stop.wait(0.1):
                    conn.sendall(b"a")
            else:
                self._stop.wait()
        except OSError:
            pass  # released: the connection was closed under us
        finally:
            _close(conn)

    def _forward(self, conn: socket.socket, request: bytes) -> None:
        assert self._target is not None
        head, _, body = request.partition(b"\r\n\r\n")
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body
        with socket.create_connection((self._target[0], int(self._target[1])), timeout=SAFETY_S) as up:
            up.sendall(request)
            while chunk := up.recv(65536):
                conn.sendall(chunk)


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


@pytest.fixture
def hung() -> Iterator[Front]:
    front = Front()
    yield front
    front.close()


@pytest.fixture
def front(bao: Bao) -> Iterator[Front]:
    front = Front(bao.address)
    yield front
    front.close()


def provider(address: str, token: str, tmp_path: Path, timeout_s: float) -> KeyProvider:
    settings = OpenBaoSettings(address=address, token=token, timeout_s=timeout_s)
    return KeyProvider(settings, tmp_path / "keys")


def run(scenario: Coroutine[None, None, None], front: Front) -> None:
    """*scenario* under the hang detector; the front's held calls are dropped at the end either
    way, so that a provider that hung cannot hold the event loop's shutdown up as well."""

    async def guarded() -> None:
        try:
            await asyncio.wait_for(scenario, SAFETY_S)
        finally:
            front.release()

    asyncio.run(guarded())


def test_a_hung_openbao_fails_a_burst_of_fetches_for_every_tenant(hung: Front, tmp_path: Path) -> None:
    # 60 fetches, 10 tenants: queued one after another at 0.5 s each they would take 30 s
    kp = provider(hung.address, TOKEN_MARK, tmp_path, timeout_s=0.5)

    async def burst() -> None:
        results = await asyncio.gather(
            *(kp.ensure(f"tenant-{i % 10}") for i in range(60)), return_exceptions=True
        )
        assert all(isinstance(r, KeyUnavailable) for r in results), results
        messages = "\n".join(str(r) for r in results)
        assert TOKEN_MARK not in messages

    try:
        run(burst(), hung)
    finally:
        kp.forget()
    # single flight and the call bound: never more connections than distinct keys or threads
    assert hung.connections <= MAX_CALLS


def test_one_tenant_never_waits_behind_another(front: Front, bao: Bao, tmp_path: Path) -> None:
    front.behaviour = lambda request: HOLD if context("clinic-held") in request else FORWARD
    kp = provider(front.address, bao.gateway_token, tmp_path, timeout_s=5)

    async def scenario() -> None:
        held = asyncio.create_task(kp.tenant_key("clinic-held"))
        while front.held() == 0:  # the held tenant's request reached OpenBao's front
            await asyncio.sleep(0.01)
        free = await kp.tenant_key("clinic-free")
        assert len(free) == 32
        assert not held.done()  # it is still waiting for OpenBao while the other got its key
        front.release()
        with pytest.raises(KeyUnavailable):
            await held

    try:
        run(scenario(), front)
    finally:
        kp.forget()


def test_concurrent_fetches_of_one_tenant_make_one_openbao_request(
    front: Front, bao: Bao, tmp_path: Path
) -> None:
    kp = provider(front.address, bao.gateway_token, tmp_path, timeout_s=5)

    async def burst() -> None:
        keys = await asyncio.gather(*(kp.tenant_key("clinic-single") for _ in range(20)))
        assert len(set(keys)) == 1 and len(keys[0]) == 32

    try:
        run(burst(), front)
    finally:
        kp.forget()
    assert front.count(context("clinic-single")) == 1


def test_a_slow_answer_is_cut_at_the_deadline_for_every_waiter(hung: Front, tmp_path: Path) -> None:
    # bytes keep coming, so the call's own read timeout never fires: the provider's deadline does
    hung.behaviour = lambda request: DRIBBLE
    kp = provider(hung.address, TOKEN_MARK, tmp_path, timeout_s=0.5)

    async def scenario() -> None:
        waiters = [asyncio.create_task(kp.tenant_key("clinic-slow")) for _ in range(3)]
        while hung.held() == 0:
            await asyncio.sleep(0.01)
        waiters[0].cancel()  # one caller going away leaves the shared fetch to the others
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        for result in results[1:]:
            assert isinstance(result, KeyUnavailable)
            assert "did not answer within openbao.timeout_s" in str(result)
            assert TOKEN_MARK not in str(result)
        # readiness is bounded the same way (it asks even with the circuit open)
        with pytest.raises(KeyUnavailable, match=r"did not answer within openbao\.timeout_s"):
            await kp.check()

    try:
        run(scenario(), hung)
    finally:
        kp.forget()
    assert hung.count(context("clinic-slow")) == 1


def test_with_every_call_thread_hung_a_new_fetch_fails_at_once(hung: Front, tmp_path: Path) -> None:
    kp = provider(hung.address, TOKEN_MARK, tmp_path, timeout_s=5)

    async def scenario() -> None:
        hanging = [asyncio.create_task(kp.tenant_key(f"tenant-{i}")) for i in range(MAX_CALLS)]
        while hung.held() < MAX_CALLS:
            await asyncio.sleep(0.01)
        with pytest.raises(KeyUnavailable, match="calls already in flight"):
            await kp.tenant_key("tenant-one-more")
        assert hung.connections == MAX_CALLS  # it was not sent
        assert not any(task.done() for task in hanging)
        hung.release()
        results = await asyncio.gather(*hanging, return_exceptions=True)
        assert all(isinstance(r, KeyUnavailable) for r in results), results

    try:
        run(scenario(), hung)
    finally:
        kp.forget()


def test_after_a_timeout_the_circuit_opens_and_an_answer_closes_it(
    front: Front, bao: Bao, tmp_path: Path
) -> None:
    kp = provider(front.address, bao.gateway_token, tmp_path, timeout_s=5)

    async def scenario() -> None:
        cached = await kp.tenant_key("clinic-cached")
        front.behaviour = lambda request: HOLD  # OpenBao hangs, then drops the connection
        outage = asyncio.create_task(kp.tenant_key("clinic-outage"))
        while front.held() == 0:
            await asyncio.sleep(0.01)
        front.release()
        with pytest.raises(KeyUnavailable, match="unreachable"):
            await outage
        connections = front.connections
        with pytest.raises(KeyUnavailable, match="not asking again"):
            await kp.tenant_key("clinic-outage")
        with pytest.raises(KeyUnavailable, match="not asking again"):
            await kp.refresh_audit_key()
        assert front.connections == connections  # failed without asking
        assert await kp.tenant_key("clinic-cached") == cached  # a cached key keeps serving
        front.behaviour = lambda request: FORWARD  # OpenBao is back
        await kp.check()  # readiness asks despite the open circuit; the answer closes it
        assert len(await kp.tenant_key("clinic-outage")) == 32
        await kp.ensure("clinic-outage")
        assert kp.current().kid

    try:
        run(scenario(), front)
    finally:
        kp.forget()
