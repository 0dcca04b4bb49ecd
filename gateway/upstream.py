"""HTTP client for the in-boundary model upstreams.

aiohttp, not httpx, on this one hot path: proxying a request through httpx's AsyncClient cost
about 1.5 ms of CPU per request on this kind of machine, aiohttp's ClientSession about 0.4 ms
(benchmarks/README.md, "upstream client"); the gateway's latency budget is 3 ms in all.
DNS goes through aiohttp's ThreadedResolver (``socket.getaddrinfo``) and connects through the
asyncio event loop's ``sock_connect``, so the egress audit hook sees both.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway.settings import LimitSettings


class UpstreamFailure(Exception):
    """Base: the upstream could not be used. ``kind`` names the failure for metrics."""

    kind = "unreachable"


class UpstreamUnreachable(UpstreamFailure):
    kind = "unreachable"


class UpstreamTimeout(UpstreamFailure):
    kind = "timeout"


class UpstreamBroken(UpstreamFailure):
    kind = "broken_stream"


def _classify(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, aiohttp.ClientConnectorError | PermissionError | ConnectionRefusedError):
        return UpstreamUnreachable()
    return UpstreamBroken()


class StreamHandle:
    """An open streamed response; iterate :meth:`lines`, then :meth:`close`."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive (whatever is buffered, not line by line)."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise _classify(exc) from None

    def close(self) -> None:
        self._resp.release()


class UpstreamClient:
    def __init__(self, limits: LimitSettings) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        # created lazily inside the running event loop, as aiohttp requires
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self._limits.connect_timeout_s,
                    sock_read=self._limits.read_timeout_s,
                ),
                connector=aiohttp.TCPConnector(
                    limit=self._limits.max_connections, resolver=aiohttp.ThreadedResolver()
                ),
                trust_env=False,  # never pick up a proxy from the environment
                json_serialize=json.dumps,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_json(
        self, url: str, payload: dict[str, Any], tls: ssl.SSLContext | None = None
    ) -> tuple[int, bytes]:
        try:
            async with self._get().post(url, json=payload, ssl=tls if tls is not None else True) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _classify(exc) from None

    async def open_stream(
        self, url: str, payload: dict[str, Any], tls: ssl.SSLContext | None = None
    ) -> StreamHandle:
        try:
            resp = await self._get().post(url, json=payload, ssl=tls if tls is not None else True)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _classify(exc) from None
        return StreamHandle(resp)

    async def probe(self, url: str, timeout_s: float = 2.0, tls: ssl.SSLContext | None = None) -> int:
        """HTTP status of a GET, for readiness checks."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._get().get(url, timeout=timeout, ssl=tls if tls is not None else True) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _classify(exc) from None
