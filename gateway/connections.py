"""Bounds on client connections, below the application: a deadline for request headers, a cap on
connections that have not yet sent complete headers (so no API key yet) and a cap on open client
connections. A refused or timed-out connection never reaches the app.

A small subclass of uvicorn's httptools protocol. It relies on uvicorn 0.54's private API
(uvicorn/protocols/http/httptools_impl.py, cited by line): re-check the cited lines when uvicorn
is upgraded (tests/gateway/test_connection_bounds.py fails on another minor version).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: the uvicorn version whose private API this module was written against
UVICORN_VERSION = "0.54"

log = logging.getLogger("sovereign.gateway.connections")

CONNECTIONS_REFUSED = Counter(
    "sovereign_gateway_connections_refused_total",
    "Client connections closed before reaching the app, by reason.",
    ["reason"],  # connection_limit, pending_limit, header_timeout, body_timeout, write_timeout
)

#: a connection answered 503/408 here is half-closed and its incoming bytes discarded for this
#: long before it is closed (NGINX's lingering close): closed at once with the client's request
#: still arriving, the kernel answers the unread bytes with a reset, and the client may never
#: read the answer. At most MAX_LINGERING at once, so a flood cannot spend the open files on it.
LINGER_S = 1.0
MAX_LINGERING = 256

#: the body deadline here runs this much after the app's own (limits.body_timeout_s): the app
#: answers an audited 408 first wherever it reads the body
BODY_BACKSTOP_S = 1.0
#: set in the ASGI scope by the app when a client stopped reading its streamed answer for
#: limits.write_timeout_s: the connection is aborted at once
STALLED_SCOPE_KEY = "sovereign.client_stalled"

#: at most one warning per this many seconds, with the counts since the last: a flood of
#: connections must not become a flood of log lines
LOG_EVERY_S = 10.0


@dataclass
class ConnectionBounds:
    """The limits and the counts all connections of one server share (one event loop: no lock)."""

    header_timeout_s: float
    keep_alive_timeout_s: float
    max_client_connections: int
    max_pending_connections: int
    retry_after_s: int = 1
    write_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    open: int = 0  # admitted connections, open now
    lingering: int = 0  # answered here and half-closed, closing within LINGER_S
    pending: int = 0  # of those, the ones without complete request headers
    _unlogged: dict[str, int] = field(default_factory=dict)
    _logged_at: float = 0.0

    def refused(self, reason: str) -> None:
        CONNECTIONS_REFUSED.labels(reason).inc()
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self._unlogged.items()))
            log.warning("client connections closed before the app: %s (open %d, pending %d)",
                        counts, self.open, self.pending)  # fmt: skip
            self._unlogged.clear()
            self._logged_at = now


def _answer(status: int, phrase: str, code: str, message: str, retry_after_s: int | None = None) -> bytes:
    """A complete minimal HTTP/1.1 answer that closes the connection (OpenAI error shape)."""
    body = json.dumps({"error": {"message": message, "type": "server_error", "code": code, "param": None}})
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after_s is not None:
        head.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("ascii")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with connection bounds. Use :func:`protocol_class` to bind
    the bounds (uvicorn's ``Config(http=...)`` takes a protocol class, config.py:450-453)."""

    bounds: ClassVar[ConnectionBounds]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's Config takes whole seconds (httptools_impl.py:79 reads it; :345 arms it)
        self.timeout_keep_alive = self.bounds.keep_alive_timeout_s  # type: ignore[assignment]
        self._admitted = False
        self._pending = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # :101-114 registers the connection in server_state.connections and sets transport and
        # flow; connection_lost (:116-133) undoes it, so a refused connection is made first too
        super().connection_made(transport)
        bounds = self.bounds
        if bounds.open >= bounds.max_client_connections:
            self._refuse("connection_limit")
        elif bounds.pending >= bounds.max_pending_connections:
            self._refuse("pending_limit")
        else:
            self._admitted = True
            bounds.open += 1
            self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        self._body_done()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._admitted:
            self._admitted = False
            self.bounds.open -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:  # a refused connection's bytes are never parsed
            super().data_received(data)

    # httptools parser callbacks (:222 on_message_begin at a request's first byte; :248
    # on_headers_complete when its headers are complete, where the ASGI cycle starts)
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._pending:
            # the next request on a kept-alive connection: uvicorn's keep-alive timer ended at
            # its first byte (data_received, :171); from here the header deadline applies
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._headers_done()
        # the body too has a deadline, whatever the app does with it: an answer given without
        # reading it (401, 404) leaves uvicorn discarding what follows (on_body, :313) with no
        # timer running (data_received cancels the keep-alive one), so a client without a key
        # could trickle a body for ever. The app's own deadline (gateway/app.py read_body,
        # the same setting) answers first where it reads the body; this one is its backstop.
        self._body_timer = self.loop.call_later(
            self.bounds.body_timeout_s + BODY_BACKSTOP_S, self._body_timeout
        )
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_done()  # before uvicorn's early return for an answered request (:322)
        super().on_message_complete()

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        self.bounds.refused("body_timeout")
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()  # answered already; the rest of the body is not waited for
        elif cycle.response_started:
            cycle.keep_alive = False  # close once the answer is out
        else:
            msg = "request body not complete in time"
            self._answer_and_close(_answer(408, "Request Timeout", "body_timeout", msg))

    # the ASGI task of each request, wrapped: a stream the app gave up on unfinished (its client
    # stopped reading: gateway/app.py RelayResponse) leaves uvicorn's run_asgi calling
    # transport.close() (httptools_impl.py:441-444), which waits for the write buffer to drain
    # — for ever; on_response_complete is never called for it
    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        async def watched(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            finally:
                if not cycle.response_complete and self.transport is not None:
                    if scope.get(STALLED_SCOPE_KEY):  # the app already waited write_timeout_s
                        self.bounds.refused("write_timeout")
                        self.transport.abort()
                    else:
                        self._watch_writes(-1)

        super()._start_asgi_task(cycle, watched)

    # a complete answer still in the write buffer: a client that takes none of it for
    # write_timeout_s is cut off. uvicorn writes a plain answer's body at once and, for a
    # closing connection, calls transport.close(), which waits for the buffer to drain — for
    # ever, with a client that stopped reading (its send() completed the cycle: :553-561 call
    # on_response, which is on_response_complete, :327)
    def on_response_complete(self) -> None:
        self._watch_writes(-1)
        super().on_response_complete()

    def _watch_writes(self, before: int) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
        self._write_timer = None
        left = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if left == 0:
            return
        if before != -1 and left >= before:  # nothing taken for write_timeout_s
            self.bounds.refused("write_timeout")
            self.transport.abort()
            return
        self._write_timer = self.loop.call_later(self.bounds.write_timeout_s, self._watch_writes, left)

    def _expect_headers(self) -> None:
        self._pending = True
        self.bounds.pending += 1
        self._header_timer = self.loop.call_later(self.bounds.header_timeout_s, self._header_timeout)

    def _headers_done(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._pending:
            self._pending = False
            self.bounds.pending -= 1

    def _header_timeout(self) -> None:
        self._header_timer = None
        self._headers_done()
        if self.transport.is_closing():
            return
        self.bounds.refused("header_timeout")
        if self.cycle is not None and not self.cycle.response_complete:
            # an answer is still being sent on this connection (the late request is pipelined
            # behind it): close after that answer, as uvicorn's own shutdown does (:353-356)
            self.cycle.keep_alive = False
            return
        msg = "request headers not complete in time"
        self._answer_and_close(_answer(408, "Request Timeout", "header_timeout", msg))

    def _refuse(self, reason: str) -> None:
        self.bounds.refused(reason)
        msg = "too many client connections, retry later"
        self._answer_and_close(
            _answer(503, "Service Unavailable", "too_many_connections", msg, self.bounds.retry_after_s)
        )

    def _answer_and_close(self, answer: bytes) -> None:
        """Send *answer*, then close: after LINGER_S, half-closed and discarding what the client
        still sends, while fewer than MAX_LINGERING do so; else at once."""
        transport = self.transport
        transport.write(answer)
        bounds = self.bounds
        if bounds.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        if self._admitted:  # it no longer counts as open, and nothing more is parsed
            self._admitted = False
            bounds.open -= 1
        transport.write_eof()
        bounds.lingering += 1

        def close() -> None:
            bounds.lingering -= 1
            transport.close()

        self.loop.call_later(LINGER_S, close)


def protocol_class(bounds: ConnectionBounds) -> type[BoundedHttpToolsProtocol]:
    """A protocol class bound to *bounds*, for ``uvicorn.Config(http=...)``."""
    return type("GatewayHttpProtocol", (BoundedHttpToolsProtocol,), {"bounds": bounds})
