"""The suite's HTTP client: one streamed chat completion, timed from the moment the request is
written on an established connection, read to the end of its body so the connection is kept
alive and reused.

geventhttpclient's connection pool does the pooling; ``TimedPool`` (and ``TimedSSLPool`` for
``https://``) only notes, per request (per greenlet), whether a new connection was opened, how
long its TCP connect and TLS handshake took, and the wall-clock time at which the pool handed
the connection over: the request is written right after that, so this is where TTFT and E2E
start. A response is read past ``data: [DONE]`` to the end of the chunked body; only then does
the pool get the connection back (a connection handed back mid-body would be closed), and the
next request of the user goes out on it without a new connect.

Under TLS the records are decrypted in user space: the kernel's receive stamps cannot be used
and every line is stamped with the clock when it was read (``loadtests/arrival.py``).
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.ssl
from geventhttpclient.client import HTTPClient
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.url import URL

from loadtests import arrival

CONNECT_TIMEOUT_S = 10.0
# a stream may wait this long between two events (a model loading, a long prefill)
NETWORK_TIMEOUT_S = 300.0


@dataclass
class Connection:
    """How the request got its connection (filled in by the pool, for the current greenlet)."""

    start: float = 0.0  # time.time() when the connection was handed over, the request written next
    reused: bool = True
    connect_ms: float | None = None
    tls_ms: float | None = None


class _Timing:
    """Mixin for a geventhttpclient pool: per greenlet, the :class:`Connection` of its request."""

    _taken: dict[Any, Connection]

    def _note(self) -> Connection:
        note = Connection()
        self._taken[gevent.getcurrent()] = note
        return note

    def taken(self) -> Connection:
        """The note of the current greenlet's latest request (and forget it)."""
        return self._taken.pop(gevent.getcurrent(), None) or Connection(start=time.time())

    def get_socket(self) -> Any:
        note = self._note()
        note.start = time.time()  # a failed connect: its exchange started here
        sock = super().get_socket()  # type: ignore[misc]
        note.start = time.time()
        return sock

    def _timed_connect(self, sock: Any, address: Any) -> tuple[Connection, float]:
        """Connect *sock*, noting a new connection and its connect time; (the note, perf_counter
        when connected)."""
        note = self._taken.get(gevent.getcurrent()) or Connection()
        note.reused = False
        began = time.perf_counter()
        sock.connect(address)
        connected = time.perf_counter()
        note.connect_ms = (connected - began) * 1000
        return note, connected


class TimedPool(_Timing, ConnectionPool):
    def __init__(self, *args: Any, **kw: Any) -> None:
        self._taken = {}
        super().__init__(*args, **kw)

    def _connect_socket(self, sock: Any, address: Any) -> Any:
        self._timed_connect(sock, address)
        return sock


class TimedSSLPool(_Timing, SSLConnectionPool):
    def __init__(self, *args: Any, **kw: Any) -> None:
        self._taken = {}
        super().__init__(*args, **kw)

    def _connect_socket(self, sock: Any, address: Any) -> Any:
        note, connected = self._timed_connect(sock, address)
        hostname = self.ssl_options.get("server_hostname", self._request_host)
        wrapped = self.ssl_context.wrap_socket(sock, server_hostname=hostname)  # the handshake
        note.tls_ms = (time.perf_counter() - connected) * 1000
        return wrapped


def tls_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    context: ssl.SSLContext = gevent.ssl.create_default_context(cafile=ca_file or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Client:
    """A connection pool to one target for one Locust user (*concurrency*: its streams in flight)."""

    def __init__(self, target: str, *, concurrency: int = 1, ca_file: str | None = None,
                 insecure: bool = False) -> None:  # fmt: skip
        url = URL(target)
        self.https = url.scheme == "https"
        common: dict[str, Any] = {
            "connection_timeout": CONNECT_TIMEOUT_S,
            "network_timeout": NETWORK_TIMEOUT_S,
        }
        self.http = HTTPClient(url.host, port=url.port, concurrency=concurrency, **common)
        self.http._connection_pool.close()  # replaced by a timed pool of the same size and target
        common["size"] = concurrency
        port = url.port or (443 if self.https else 80)
        self.pool: TimedPool | TimedSSLPool
        if self.https:
            context = tls_context(ca_file, insecure)
            self.pool = TimedSSLPool(
                url.host,
                port,
                url.host,
                port,
                insecure=insecure,
                ssl_context_factory=lambda **_: context,
                **common,
            )
        else:
            self.pool = TimedPool(url.host, port, url.host, port, **common)
        self.http._connection_pool = self.pool

    def close(self) -> None:
        self.http.close()


@dataclass
class Exchange:
    """One request and its whole response."""

    connection: Connection
    status: int | None = None  # None: no response (connect refused, connection reset, timeout)
    error: str | None = None  # a short code for a non-200 answer or a broken exchange, never text
    lines: list[arrival.Line] = field(default_factory=list)  # the 200 body's lines, arrival-stamped
    failed_at: float | None = None


def error_code(status: int, body: bytes) -> str:
    """``HTTP 401 invalid_api_key``: the status and the gateway's error code (OpenAI's error
    object), never its message."""
    code = ""
    try:
        error = json.loads(body).get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            code = error["code"]
    except (ValueError, AttributeError):
        pass
    safe = "".join(c for c in code[:64] if c.isalnum() or c in "_-.")
    return f"HTTP {status} {safe}".rstrip()


def _broken(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return f"tls {exc.reason or 'error'}"
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connection reset"
    return f"connection error {type(exc).__name__}"


def post_stream(client: Client, path: str, body: bytes, headers: dict[str, str], *, kernel: bool) -> Exchange:
    """POST *body* and read the answer to its end: a 200's lines with their arrival stamps, or
    a non-200's error code. Never raises for the network: a broken exchange is an error."""
    try:
        response = client.http.request("POST", path, body=body, headers=headers)
    except (OSError, gevent.Timeout) as exc:
        return Exchange(client.pool.taken(), error=_broken(exc), failed_at=time.time())
    except Exception as exc:
        return Exchange(
            client.pool.taken(), error=f"bad response {type(exc).__name__}", failed_at=time.time()
        )
    exchange = Exchange(client.pool.taken(), status=response.status_code)
    try:
        if response.status_code != 200:
            exchange.error = error_code(response.status_code, response.read())
            exchange.failed_at = time.time()
        else:
            exchange.lines = arrival.read_lines(response, kernel=kernel and not client.https)
            if not response.message_complete:
                exchange.error, exchange.failed_at = "connection closed mid-body", time.time()
    except (OSError, gevent.Timeout) as exc:
        exchange.error, exchange.failed_at = _broken(exc), time.time()
    except Exception as exc:
        exchange.error, exchange.failed_at = f"broken body {type(exc).__name__}", time.time()
    finally:
        response.release()
    return exchange
