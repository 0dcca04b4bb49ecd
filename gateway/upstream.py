"""HTTP client for the in-boundary model upstreams: no reuse of a connection with unsolicited
bytes on it, no compression, bounded answers, deadlines, named failure classes.

aiohttp, not httpx, on this one hot path: proxying a request through httpx's AsyncClient cost
about 1.5 ms of CPU per request on this kind of machine, aiohttp's ClientSession about 0.4 ms
(benchmarks/README.md, "upstream client"); the gateway's latency budget is 3 ms in all.
DNS goes through aiohttp's ThreadedResolver (``socket.getaddrinfo``) and connects through the
asyncio event loop's ``sock_connect``, so the egress audit hook sees both.

An upstream is trusted to run the model, not to speak HTTP correctly (a fault-injection run,
``tests/doubles/fault_upstream.py``, found each of these):

- every answer belongs to its request: a pooled connection on which anything arrived while it
  sat idle (a duplicate or late answer) is closed, never handed to the next request, which may
  be another tenant's (:class:`_GuardedConnector`); a response whose framing is off (more bytes
  than its Content-Length, bad chunking) closes its connection;
- no compression: we ask for ``identity`` and never inflate, and an answer with another
  Content-Encoding is malformed (a gzip bomb is never inflated);
- bounded answers: at most ``max_answer_bytes`` are read, plain or streamed, and a plain answer's
  whole exchange ends at ``request_deadline_s`` however slowly it drips;
- no redirects are followed;
- readiness probes have their own small pool, so ``/readyz`` never queues behind chat requests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import HttpProcessingError, TransferEncodingError
from aiohttp.tracing import Trace
from prometheus_client import Counter

from gateway.settings import LimitSettings

#: upstream failures by kind (the gateway's and the stream relay's: gateway/app.py, gateway/relay.py)
UPSTREAM_ERRORS = Counter("sovereign_gateway_upstream_errors_total", "Upstream failures.", ["kind"])
READ_PIECE = 64 << 10  # bytes asked of the socket buffer at a time when reading a plain answer
PROBE_CONNECTIONS = 4  # the readiness probes' own pool


class UpstreamFailure(Exception):
    """Base: the upstream could not be used. ``kind`` names the failure for metrics."""

    kind = "unreachable"


class UpstreamUnreachable(UpstreamFailure):
    """Connect refused or failed, DNS failed, TLS handshake failed, egress refused."""

    kind = "unreachable"


class UpstreamTimeout(UpstreamFailure):
    """No byte within ``read_timeout_s``, or the exchange passed its deadline."""

    kind = "timeout"


class UpstreamBroken(UpstreamFailure):
    """The connection died mid-answer (closed or reset before the answer's end)."""

    kind = "broken_stream"


class UpstreamMalformed(UpstreamFailure):
    """Bad HTTP: an unparseable status line or headers, a body shorter or longer than its
    Content-Length, bad chunked encoding, or a Content-Encoding other than identity."""

    kind = "malformed"


class UpstreamTooLarge(UpstreamFailure):
    """The answer passed ``max_answer_bytes``."""

    kind = "too_large"


def _classify(exc: BaseException, answered: bool = True) -> UpstreamFailure:
    """An aiohttp (or socket) exception as one of our failures. What aiohttp 3.14 raises, as
    observed against ``tests.doubles.fault_upstream`` (tests/gateway/test_upstream_faults.py):

    - connect refused: ``ClientConnectorError`` (an ``OSError``) caused by ConnectionRefusedError;
    - bad status line, bad headers, bad chunk-size line or bytes after the Content-Length body
      when they arrive with the response: ``ClientResponseError`` (status 400) caused by the
      parser's ``HttpProcessingError``;
    - body shorter than Content-Length, then close: ``ClientPayloadError`` caused by
      ``ContentLengthError``; chunked body cut off by a close: ``ClientPayloadError`` caused by
      ``TransferEncodingError("Not enough data to satisfy transfer length header.")``;
    - closed before any answer: ``ServerDisconnectedError`` (also what an mTLS upstream that
      refuses our client certificate looks like under TLS 1.3: its alert comes after our
      handshake is done, as a close);
    - ``sock_read`` idle timeout: ``SocketTimeoutError`` (a ``TimeoutError``).

    *answered*: whether the answer's status line and headers had arrived. A connection that dies
    before them is unreachable (the upstream refused to serve us), after them broken.
    """
    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout()
    if isinstance(
        exc, aiohttp.ClientConnectorError | PermissionError | ConnectionRefusedError | socket.gaierror
    ):
        return UpstreamUnreachable()
    cause = exc.__cause__
    if isinstance(exc, aiohttp.ClientPayloadError):
        # a chunked body cut off by the connection's end: it died mid-answer (what a crashed
        # model server does); every other payload error is bad framing, including a body that
        # ends before its Content-Length (the length announced was wrong)
        if isinstance(cause, TransferEncodingError) and "not enough data" in str(cause).lower():
            return UpstreamBroken()
        if isinstance(cause, HttpProcessingError):
            return UpstreamMalformed()
        return UpstreamBroken()
    if isinstance(exc, HttpProcessingError | aiohttp.ClientResponseError):
        # the parser's error, raised as ClientResponseError (we never call raise_for_status,
        # the other source of it)
        return UpstreamMalformed()
    if not answered and isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return UpstreamUnreachable()  # closed or reset before a byte of an answer
    return UpstreamBroken()  # ServerDisconnectedError, ClientOSError, a reset: died mid-answer


def _check_encoding(resp: aiohttp.ClientResponse) -> None:
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UpstreamMalformed()


class PeerCertificates:
    """When each upstream's server certificate expires, as seen in its latest TLS handshake.

    Filled by :class:`_GuardedProtocol` once a connection is up (asyncio hands the protocol its
    transport after the handshake, the peer already verified against ``tls.ca_file``), keyed by
    the name the gateway asked for (SNI), so a renewed certificate replaces the old one at the
    next new connection; read at scrape time (gateway/scrape_metrics.py)."""

    def __init__(self) -> None:
        self._not_after: dict[str, float] = {}

    def note(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        cert = transport.get_extra_info("peercert") if ssl_object is not None else None
        if not cert or "notAfter" not in cert:
            return  # plain HTTP, or a peer that was not verified (never with tls configured)
        host = ssl_object.server_hostname or str(transport.get_extra_info("peername"))
        self._not_after[host] = float(ssl.cert_time_to_seconds(cert["notAfter"]))

    def soonest(self) -> float | None:
        """The earliest expiry (Unix time) among the upstreams' latest certificates."""
        return min(self._not_after.values(), default=None)


class _GuardedProtocol(ResponseHandler):
    """aiohttp's protocol, closing its connection when bytes arrive while it idles in the pool.

    HTTP/1.1 has the server speak only when asked: anything it sends on an idle keep-alive
    connection is a duplicate or late answer, which aiohttp would otherwise parse into the
    connection's buffer and hand to the next request (NGINX closes such a connection too).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, peers: PeerCertificates | None = None) -> None:
        super().__init__(loop)
        self.idle = False  # in the pool, between a response's end and the next request
        self.tainted = False  # something arrived while idle
        self._peers = peers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._peers is not None:
            self._peers.note(transport)

    def data_received(self, data: bytes) -> None:
        # aiohttp calls data_received(b"") itself to resume its buffers (client_proto.py,
        # ResponseHandler.data_received): only bytes from the peer count
        if self.idle and data:
            self.tainted = True
            self.close()  # the transport closes, so is_connected() is False from now on
            return
        super().data_received(data)


class _GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that never hands out a pooled connection with unsolicited bytes on it.

    Private aiohttp API, checked against the pinned aiohttp 3.14.5:

    - ``BaseConnector.__init__`` (connector.py:334) sets ``self._factory =
      functools.partial(ResponseHandler, loop=loop)``; TCPConnector builds every connection's
      protocol with ``self._factory`` (connector.py:1611, 1731), so replacing it gives us ours;
    - ``BaseConnector._release`` (connector.py:815-836) pools a released protocol in
      ``self._conns[key]`` (a deque of ``(protocol, monotonic time)``) unless it
      ``should_close``; ``_release`` is where a connection starts to idle;
    - ``BaseConnector._get`` (connector.py:732-774) pops pooled protocols left to right and
      reuses the first that ``is_connected()`` (client_proto.py:108) within the keep-alive
      timeout; it does not look at ``should_close`` (client_proto.py:76-85: true when the
      connection holds parsed messages in ``_buffer``, unparsed bytes in ``_tail``, an unfinished
      payload or a parser exception). We drop every pooled protocol that should close or was
      tainted, closing it as ``_get`` closes a dead one, before ``_get`` chooses.
    """

    def __init__(self, peers: PeerCertificates | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._factory = functools.partial(  # type: ignore[assignment]
            _GuardedProtocol, loop=self._loop, peers=peers
        )

    def _release(self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        if isinstance(protocol, _GuardedProtocol):
            protocol.idle = True
        super()._release(key, protocol, should_close=should_close)

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> aiohttp.connector.Connection | None:
        conns = self._conns.get(key)
        if conns:
            clean: deque[tuple[ResponseHandler, float]] = deque()
            for proto, t0 in conns:
                if proto.should_close or (isinstance(proto, _GuardedProtocol) and proto.tainted):
                    transport = proto.transport
                    proto.close()
                    if key.is_ssl and not self._cleanup_closed_disabled:
                        self._cleanup_closed_transports.append(transport)
                else:
                    clean.append((proto, t0))
            conns.clear()
            conns.extend(clean)  # _get deletes the key itself when nothing is left
        conn = await super()._get(key, traces)
        if conn is not None and isinstance(conn.protocol, _GuardedProtocol):
            conn.protocol.idle = False
        return conn


class StreamHandle:
    """An open streamed response; iterate :meth:`chunks`, then :meth:`close`."""

    def __init__(self, resp: aiohttp.ClientResponse, max_bytes: int) -> None:
        self._resp = resp
        self._max_bytes = max_bytes
        self._complete = False
        self.status = resp.status

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive (whatever is buffered, not line by line); UpstreamTooLarge once
        more than ``max_answer_bytes`` came in all."""
        total = 0
        try:
            async for chunk in self._resp.content.iter_any():
                total += len(chunk)
                if total > self._max_bytes:
                    raise UpstreamTooLarge()
                yield chunk
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError, OSError, UpstreamFailure) as exc:
            self._resp.close()
            raise _classify(exc) from None
        self._complete = True

    def close(self) -> None:
        """Pool the connection if the stream was read to its end, else close it."""
        if self._complete:
            self._resp.release()
        else:
            self._resp.close()


class UpstreamClient:
    def __init__(self, limits: LimitSettings) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self.peers = PeerCertificates()  # the upstreams' server certificates, for /metrics

    def _new_session(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self._limits.connect_timeout_s,
                sock_read=self._limits.read_timeout_s,
            ),
            connector=connector,
            headers={"Accept-Encoding": "identity"},
            auto_decompress=False,  # never inflate what the upstream sends (see _check_encoding)
            trust_env=False,  # never pick up a proxy from the environment
            json_serialize=json.dumps,
        )

    def _get(self) -> aiohttp.ClientSession:
        # created lazily inside the running event loop, as aiohttp requires
        if self._session is None:
            self._session = self._new_session(
                _GuardedConnector(
                    self.peers, limit=self._limits.max_connections, resolver=aiohttp.ThreadedResolver()
                )
            )
        return self._session

    def _probes(self) -> aiohttp.ClientSession:
        if self._probe_session is None:
            self._probe_session = self._new_session(
                aiohttp.TCPConnector(
                    limit=PROBE_CONNECTIONS, force_close=True, resolver=aiohttp.ThreadedResolver()
                )
            )
        return self._probe_session

    async def close(self) -> None:
        for session in (self._session, self._probe_session):
            if session is not None:
                await session.close()
        self._session = self._probe_session = None

    async def post_json(
        self,
        url: str,
        payload: dict[str, Any],
        tls: ssl.SSLContext | None = None,
        deadline_s: float | None = None,
    ) -> tuple[int, bytes]:
        """Status and body of a plain answer: the whole exchange (connect, send, every byte of
        the answer) within *deadline_s* (default ``request_deadline_s``), at most
        ``max_answer_bytes`` of body, read piece by piece."""
        limit = self._limits.max_answer_bytes
        resp: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(
                deadline_s if deadline_s is not None else self._limits.request_deadline_s
            ):
                resp = await self._get().post(
                    url, json=payload, ssl=tls if tls is not None else True, allow_redirects=False
                )
                _check_encoding(resp)
                if resp.content_length is not None and resp.content_length > limit:
                    raise UpstreamTooLarge()
                pieces: list[bytes] = []
                size = 0
                while piece := await resp.content.read(READ_PIECE):
                    size += len(piece)
                    if size > limit:
                        raise UpstreamTooLarge()
                    pieces.append(piece)
            status = resp.status
            resp.release()  # read to its end: back to the pool (unless it should close)
            resp = None
            return status, b"".join(pieces)
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError, OSError, UpstreamFailure) as exc:
            raise _classify(exc, answered=resp is not None) from None
        finally:
            if resp is not None:
                resp.close()  # not read to its end: the connection is closed, never pooled

    async def open_stream(
        self, url: str, payload: dict[str, Any], tls: ssl.SSLContext | None = None
    ) -> StreamHandle:
        try:
            resp = await self._get().post(
                url, json=payload, ssl=tls if tls is not None else True, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError, OSError) as exc:
            raise _classify(exc, answered=False) from None
        try:
            _check_encoding(resp)
        except UpstreamMalformed:
            resp.close()
            raise
        return StreamHandle(resp, self._limits.max_answer_bytes)

    async def probe(self, url: str, timeout_s: float = 2.0, tls: ssl.SSLContext | None = None) -> int:
        """HTTP status of a GET, for readiness checks (on the probes' own pool)."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._probes().get(
                url, timeout=timeout, ssl=tls if tls is not None else True, allow_redirects=False
            ) as resp:
                return resp.status
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError, OSError) as exc:
            raise _classify(exc, answered=False) from None
