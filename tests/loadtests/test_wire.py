"""The wire observer (benchmarks/wire.py) that checks the suite's TTFT and E2E from outside:
a real loopback exchange with scripted pauses, captured by the kernel, and the reassembly of
TCP streams from packets that came out of order or twice."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import wire

TTFT_S = 0.06  # before the first content event
GAP_S = 0.03  # between the content events, and from the last one to [DONE]
TAIL_S = 0.04  # from [DONE] to the end of the chunked body (a gateway writing its audit record)


def _event(content: str) -> bytes:
    return (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"
    )


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _serve(conn: socket.socket) -> None:
    """HTTP/1.1 keep-alive: one SSE response per request until the client closes."""
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:]
            )  # fmt: skip
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                buf += conn.recv(65536)
            buf = buf[length:]
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                + f"x-request-id: {headers['x-request-id']}\r\n\r\n".encode()
            )
            conn.sendall(_chunk(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'))
            time.sleep(TTFT_S)
            conn.sendall(_chunk(_event("Hello")))
            time.sleep(GAP_S)
            conn.sendall(_chunk(_event(" world")))
            time.sleep(GAP_S)
            conn.sendall(_chunk(b"data: [DONE]\n\n"))
            time.sleep(TAIL_S)
            conn.sendall(b"0\r\n\r\n")


@pytest.fixture
def sse_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield port
    listener.close()


def _exchange(conn: http.client.HTTPConnection, request_id: str) -> tuple[float, float, bytes]:
    """(clock before the request was written, clock after the body was read, the body)."""
    before = time.time()
    conn.request(
        "POST", "/v1/chat/completions", body=b'{"stream": true}', headers={"X-Request-Id": request_id}
    )
    resp = conn.getresponse()
    body = resp.read()
    return before, time.time(), body


def test_the_observer_sees_each_request_and_its_stream_milestones(sse_server: int, tmp_path: Path) -> None:
    reason = wire.capture_unavailable()
    if reason is not None:
        pytest.skip(reason)
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    with wire.Observer(sse_server, tmp_path / "wire.pcap") as observer:
        conn = http.client.HTTPConnection("127.0.0.1", sse_server, timeout=30)
        before_1, after_1, body = _exchange(conn, first)
        before_2, after_2, _ = _exchange(conn, second)  # the same kept-alive connection
        conn.close()
        other = http.client.HTTPConnection("127.0.0.1", sse_server, timeout=30)
        _exchange(other, third)
        other.close()
    assert b"data: [DONE]" in body
    assert observer.stats["kernel_drops"] == 0
    assert observer.stats["unstamped"] == 0
    seen = {r.request_id: r for r in observer.requests()}
    assert set(seen) == {first, second, third}

    one, two, three = seen[first], seen[second], seen[third]
    assert one.new_connection and one.index_on_connection == 0 and one.syn_at is not None
    assert not two.new_connection and two.index_on_connection == 1 and two.syn_at is None
    assert two.connection == one.connection
    assert three.new_connection and three.connection != one.connection
    for r in (one, two, three):
        assert r.status == 200 and r.response_request_id == r.request_id
        assert r.content_events == 2
        assert r.headers_at is not None and r.first_content_at is not None
        assert r.done_at is not None and r.body_end_at is not None
        assert r.request_sent_at <= r.headers_at <= r.first_content_at < r.done_at < r.body_end_at
        # the scripted pauses, seen on the wire
        assert r.first_content_at - r.headers_at >= TTFT_S
        assert r.done_at - r.first_content_at >= 2 * GAP_S
        assert r.body_end_at - r.done_at >= TAIL_S
        assert {r.headers_at, r.first_content_at, r.done_at, r.body_end_at} <= set(r.packet_times)
    assert one.syn_at is not None and one.syn_at < one.request_sent_at
    # the kernel's stamps are on the client's clock (time.time()): each request went out after
    # the client began to write it, and its body ended before the client had read it
    assert before_1 <= one.request_sent_at and one.body_end_at is not None and one.body_end_at <= after_1
    assert after_1 <= before_2 <= two.request_sent_at
    assert two.body_end_at is not None and two.body_end_at <= after_2
    assert one.body_end_at < two.request_sent_at


def test_only_the_observed_port_is_captured(sse_server: int, tmp_path: Path) -> None:
    reason = wire.capture_unavailable()
    if reason is not None:
        pytest.skip(reason)
    elsewhere = socket.create_server(("127.0.0.1", 0))
    with elsewhere, wire.Observer(sse_server, tmp_path / "wire.pcap"):
        with socket.create_connection(elsewhere.getsockname()) as c:
            c.sendall(b"POST / HTTP/1.1\r\nx-request-id: elsewhere\r\ncontent-length: 0\r\n\r\n")
            elsewhere.accept()[0].close()
        conn = http.client.HTTPConnection("127.0.0.1", sse_server, timeout=30)
        _exchange(conn, "here")
        conn.close()
    packets = list(wire.read_pcap(tmp_path / "wire.pcap"))
    assert packets and all(sse_server in (p.src[1], p.dst[1]) for p in packets)
    assert [r.request_id for r in wire.analyse(packets, sse_server)] == ["here"]


def _packet(
    at: float, seq: int, payload: bytes = b"", flags: int = wire.TCP_ACK, up: bool = True
) -> wire.Packet:
    client, server = ("127.0.0.1", 40000), ("127.0.0.1", 8080)
    return wire.Packet(at, client if up else server, server if up else client, seq, flags, payload)


def test_streams_are_rebuilt_by_sequence_number_and_bytes_count_from_when_readable() -> None:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nX-Request-Id: r1\r\nContent-Length: 2\r\n\r\n{}"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    content = _chunk(_event("Hi"))
    done = _chunk(b"data: [DONE]\n\n")
    isn_c, isn_s = 1000, 2**32 - 10  # the server's sequence numbers wrap around
    s = isn_s + 1
    packets = [
        _packet(1.0, isn_c, flags=wire.TCP_SYN),
        _packet(1.001, isn_s, flags=wire.TCP_SYN | wire.TCP_ACK, up=False),
        _packet(1.010, isn_c + 1, request[:20]),
        _packet(1.020, isn_c + 1, request[:20]),  # retransmitted: keeps its first arrival
        _packet(1.030, isn_c + 21, request[20:]),
        _packet(1.040, s, head, up=False),
        # the [DONE] chunk arrives before the content chunk: readable only once the gap is filled
        _packet(1.050, s + len(head) + len(content), done, up=False),
        _packet(1.060, s + len(head), content, up=False),
        _packet(1.070, s + len(head) + len(content) + len(done), b"0\r\n\r\n", up=False),
        _packet(1.080, s + len(head) + len(content), done, up=False),  # retransmitted
    ]
    (r,) = wire.analyse(packets, 8080)
    assert r.request_id == "r1" and r.new_connection and r.syn_at == 1.0
    assert r.request_sent_at == 1.030
    assert r.headers_at == 1.040
    assert r.first_content_at == 1.060
    assert r.done_at == 1.060  # sent first, but readable only with the content before it
    assert r.body_end_at == 1.070
    assert r.content_events == 1
    assert r.packet_times == [1.040, 1.060, 1.060, 1.070]  # one per packet of the response


def test_a_four_tuple_used_again_is_a_new_connection() -> None:
    request = b"POST / HTTP/1.1\r\nX-Request-Id: %s\r\nContent-Length: 0\r\n\r\n"
    packets = []
    for at, isn, rid in ((1.0, 1000, b"r1"), (2.0, 900_000, b"r2")):
        packets += [
            _packet(at, isn, flags=wire.TCP_SYN),
            _packet(at + 0.001, 5000 + isn, flags=wire.TCP_SYN | wire.TCP_ACK, up=False),
            _packet(at + 0.002, isn + 1, request % rid),
        ]
    first, second = wire.analyse(packets, 8080)
    assert (first.request_id, second.request_id) == ("r1", "r2")
    assert first.new_connection and second.new_connection
    assert (first.syn_at, second.syn_at) == (1.0, 2.0)
    assert (first.request_sent_at, second.request_sent_at) == (1.002, 2.002)


def test_a_connection_opened_before_the_capture_is_left_out() -> None:
    request = b"POST / HTTP/1.1\r\nX-Request-Id: r1\r\nContent-Length: 0\r\n\r\n"
    assert wire.analyse([_packet(1.0, 5000, request)], 8080) == []


def test_the_filter_program_jumps_inside_itself() -> None:
    program = wire.bpf_tcp_port(8080)
    for i, (code, jt, jf, _) in enumerate(program):
        if code & 0x07 == 0x05:  # BPF_JMP
            assert i + 1 + jt < len(program) and i + 1 + jf < len(program)
    assert program[-2][0] == program[-1][0] == 0x06 and program[-1][3] == 0
