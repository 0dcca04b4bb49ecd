"""Arrival stamps: a line is stamped with when its bytes reached this host, not with when the
reader got to it (loadtests/arrival.py). Real loopback TCP, a real geventhttpclient response."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from geventhttpclient.connectionpool import ConnectionPool
from geventhttpclient.response import HTTPSocketPoolResponse, HTTPSocketResponse

from loadtests.arrival import StampedSocket, enable, read_lines


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    yield client, server
    client.close()
    server.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_lines_carry_the_time_their_bytes_arrived_not_the_time_they_were_read(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    client, server = connection
    server.sendall(HEAD)
    response = HTTPSocketResponse(client)
    assert enable()  # as the Locust suite does at start, before any connection exists
    before = time.time()
    server.sendall(chunk(b'data: {"n": 1}\n\n') + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    sent = time.time()
    # the bytes arrived before the reader asked for stamps on this connection (a first
    # response) and are read only after `sent`: a clock read by the reader would land later
    lines = read_lines(response)
    assert [line for _, line in lines] == [b'data: {"n": 1}\n', b"\n", b"data: [DONE]\n"]
    assert all(before <= at <= sent for at, _ in lines)
    assert response._sock is None  # the message completed: the response released its socket


class ReusingPool(ConnectionPool):
    """A pool that records the sockets given back for reuse and refuses one being closed."""

    def __init__(self) -> None:
        self.returned: list[object] = []

    def return_socket(self, sock: object) -> None:
        self.returned.append(sock)

    def release_socket(self, sock: object) -> None:
        raise AssertionError("the connection was closed, not reused")


def test_the_connection_goes_back_to_the_pool_as_it_came(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    client, server = connection
    pool = ReusingPool()
    server.sendall(HEAD)
    response = HTTPSocketPoolResponse(client, pool)
    server.sendall(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    read_lines(response)  # completes the message inside a read: the response releases itself
    assert pool.returned == [client]
    assert "release" not in vars(response)


def test_the_body_is_read_past_done_to_its_end_so_the_connection_is_reused(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """The gateway may send the end of the chunked body a little after ``[DONE]`` (it did while
    it wrote its audit record first): the reader waits for it, and only then does the pool get the
    connection back for the next request. A reader that stopped at ``[DONE]`` left the
    connection mid-body, and the pool had to close it."""
    client, server = connection
    pool = ReusingPool()
    returned = pool.returned
    server.sendall(HEAD)
    response = HTTPSocketPoolResponse(client, pool)
    server.sendall(chunk(b"data: [DONE]\n\n"))  # the last event; the body's end comes later
    reader = threading.Thread(target=lambda: lines.extend(read_lines(response, kernel=False)))
    lines: list[tuple[float, bytes]] = []
    reader.start()
    reader.join(timeout=0.3)
    assert reader.is_alive() and not returned  # still waiting for the end of the body
    server.sendall(b"0\r\n\r\n")
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert [line for _, line in lines] == [b"data: [DONE]\n"]
    assert returned == [client] and response.message_complete


def test_without_kernel_stamps_the_reader_falls_back_to_the_clock_at_read_time() -> None:
    class Buffered:  # a body already in memory: no socket to ask
        def __init__(self, body: bytes) -> None:
            self.lines = body.splitlines(keepends=True)

        def readline(self, sep: bytes) -> bytes:
            return self.lines.pop(0) if self.lines else b""

    before = time.time()
    lines = read_lines(Buffered(b"data: a\n\ndata: [DONE]\n\ndata: after the end\n"))
    # the lines up to [DONE]; the rest of the body is read and dropped
    assert [line for _, line in lines] == [b"data: a\n", b"\n", b"data: [DONE]\n"]
    assert all(before <= at <= time.time() for at, _ in lines)


def test_tls_sockets_are_not_wrapped() -> None:
    class TlsLike:
        type = socket.SOCK_STREAM

        def cipher(self) -> None: ...

    assert StampedSocket.wrap(TlsLike()) is None
    assert StampedSocket.wrap(None) is None
