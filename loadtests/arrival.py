"""When each SSE line reached this host: the kernel's receive timestamp, not when Python got to it.

Every stream of a Locust process shares one gevent loop. When 50 streams emit at the same
instant, the last greenlet to run reads its line a few milliseconds after the bytes arrived,
and a clock read in Python would charge that wait to the server. Linux stamps each received
packet (``SO_TIMESTAMPNS``); ``recvmsg`` hands the stamp over with the data, so the
measurement no longer depends on how busy the load generator is.

No library exposes this for an HTTP client, so it is written here: ``StampedSocket`` stands in
for the response's socket while the body is read and keeps the stamp of the latest ``recv``.
A line is complete only once the packet with its newline arrived, and the reader only calls
``recv`` when no complete line is buffered, so the latest stamp is always the one of the packet
that completed the line (bytes that wait in one ``recv`` together share the stamp of the
last of them, so a late reader still stamps no later than it read).

The kernel stamps packets only while some socket asks for it (a system-wide switch), and a
connection's first response has arrived before its reader can set the option: ``enable``
keeps one socket with the option open for the life of the process and waits until the kernel
stamps (it flips the switch a little later, from a work queue), so every packet is stamped from
then on and ``recvmsg`` reports the stamp once the connection asks. Where the kernel gives
no stamp (TLS sockets, other platforms) the reader falls back to the clock at read time.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from typing import Any

# SO_TIMESTAMPNS (asm-generic: x86-64, arm64, riscv64; Python does not export the name); its
# control message is a struct timespec of two 64-bit longs on these 64-bit platforms
_SO_TIMESTAMPNS = 35 if sys.platform == "linux" and struct.calcsize("l") == 8 else None
_TIMESPEC = struct.Struct("@ll")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


_KEEPER: list[socket.socket] = []


def enable(deadline_s: float = 2.0) -> bool:
    """Have the kernel stamp every received packet from now on (idempotent) and return once it
    does; False where it cannot, and the readers use the clock at read time.

    The kernel flips its switch from a work queue, a little after the first socket asks, so
    this sends probe bytes over a loopback TCP pair until one arrives stamped."""
    if _KEEPER:
        return True
    if _SO_TIMESTAMPNS is None or not _CMSG_SPACE:
        return False
    keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        keeper.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        keeper.close()
        return False
    _KEEPER.append(keeper)
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, socket.create_connection(listener.getsockname()) as sender:
        receiver, _ = listener.accept()
        with receiver:
            probe = StampedSocket.wrap(receiver)
            until = time.monotonic() + deadline_s
            while probe is not None and time.monotonic() < until:
                sender.sendall(b".")
                probe.recv(1)
                if probe.stamp is not None:
                    return True
    return False


class StampedSocket:
    """The response's socket, read with ``recvmsg``; ``stamp`` is the wall-clock time (seconds)
    at which the kernel received the packet the latest ``recv`` returned, or None."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.stamp: float | None = None

    @classmethod
    def wrap(cls, sock: Any) -> StampedSocket | None:
        if sock is None or _SO_TIMESTAMPNS is None or not _CMSG_SPACE:
            return None
        enable()
        if getattr(sock, "type", None) != socket.SOCK_STREAM or hasattr(sock, "cipher"):
            return None  # TLS: the records are decrypted in user space, recvmsg cannot be used
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return None
        return cls(sock)

    def recv(self, size: int) -> bytes:
        data, ancillary, _flags, _address = self._sock.recvmsg(size, _CMSG_SPACE)
        self.stamp = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                self.stamp = seconds + nanoseconds / 1e9
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


Line = tuple[float, bytes]


def read_lines(stream: Any, *, kernel: bool = True, end: bytes = b"data: [DONE]") -> list[Line]:
    """The lines of a geventhttpclient response body up to and including *end* (or the end of
    the body), each with the wall-clock time (``time.time()`` scale) at which it arrived
    (*kernel* False: at which it was read, for comparison).

    The body is read to its end (past *end*, to the last chunk): only a response read whole
    gives its connection back to the pool for the next request; one left mid-body is closed,
    and the next request would pay a new connect.

    Nothing else is done per line: whatever one greenlet does between two reads delays the
    other streams of the process (the fallback clock readings, at least, would move)."""
    raw = getattr(stream, "_sock", None)
    stamped = StampedSocket.wrap(raw) if kernel else None
    if stamped is not None:
        _lend(stream, raw, stamped)
    lines: list[Line] = []
    try:
        while line := stream.readline(b"\n"):
            at = stamped.stamp if stamped is not None and stamped.stamp is not None else time.time()
            lines.append((at, line))
            if line.startswith(end):
                while stream.readline(b"\n"):  # the rest of the body: nothing after [DONE] counts
                    pass
                break
    finally:
        if stamped is not None:
            _give_back(stream, raw, stamped)
    return lines


def _lend(stream: Any, raw: Any, stamped: StampedSocket) -> None:
    """Read *stream* through *stamped*; the response releases its connection to the pool itself
    (when the message completes inside a read), and it must release the pool's own socket."""
    release = stream.release

    def release_the_pools_socket() -> None:
        if stream._sock is stamped:
            stream._sock = raw
        release()

    stream._sock = stamped
    stream.release = release_the_pools_socket


def _give_back(stream: Any, raw: Any, stamped: StampedSocket) -> None:
    if stream._sock is stamped:
        stream._sock = raw
    stream.__dict__.pop("release", None)
