"""Client connections are bounded below the app (gateway/connections.py, gateway/server.py): a
header deadline (slowloris), a cap on connections without complete headers, a cap on open
connections (503 with Retry-After, never an EMFILE 500), a checked open-file limit, and a SIGTERM
that ends the process by itself with stalled clients connected and a long stream in flight.

Real gateway processes, raw sockets as clients. Socket and process timeouts here are hang
detectors only: no test asserts how long anything took."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from gateway.clientkeys import ClientKeyStore
from gateway.connections import UVICORN_VERSION
from tests.support import Bao, Proc, Upstream, free_port, gateway_config, running_gateway

TENANT = "clinic-connections"
HEADER_TIMEOUT_S = 2
MAX_PENDING = 5
MAX_OPEN = 20
HANG_S = 20  # a socket or process still waiting after this is taken as held forever

LIMITS = {
    "header_timeout_s": HEADER_TIMEOUT_S,
    "max_pending_connections": MAX_PENDING,
    "max_client_connections": MAX_OPEN,
    "keep_alive_timeout_s": 30,
}


GATEWAY_SETTINGS = {"limits": LIMITS}  # tests/conftest.py: gateway


def connect(gateway: Proc) -> socket.socket:
    port = int(gateway.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    return sock


def half_open(gateway: Proc) -> socket.socket:
    """A connection that sent a request line and part of its headers, and nothing more."""
    sock = connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """All the gateway sends until it closes the connection (a reset counts as closed)."""
    data = b""
    sock.settimeout(HANG_S)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            pytest.fail(f"the connection is still open (held), after {data[:80]!r}")
        if not chunk:
            return data
        data += chunk


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length, leaving the connection open."""
    data = b""
    sock.settimeout(HANG_S)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status, headers = parse_head(head)
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "closed within an answer"
        body += chunk
    return status, headers, body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers


def status_of(data: bytes) -> int | None:
    return parse_head(data.split(b"\r\n\r\n", 1)[0])[0] if data.startswith(b"HTTP/1.1 ") else None


def healthz(gateway: Proc, keep_open: bool = False) -> tuple[int, socket.socket]:
    sock = connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    status, _, _ = read_response(sock)
    if not keep_open:
        sock.close()
    return status, sock


def test_written_against_this_uvicorn() -> None:
    # gateway/connections.py overrides private methods of uvicorn's httptools protocol
    assert uvicorn.__version__.startswith(UVICORN_VERSION + "."), (
        f"uvicorn {uvicorn.__version__}: re-check the lines gateway/connections.py cites, then "
        "update UVICORN_VERSION"
    )


def test_a_slowloris_connection_is_closed(gateway: Proc) -> None:
    sock = connect(gateway)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        sock.settimeout(0.3)
        for _ in range(int(HANG_S / 0.3)):  # one header byte every 0.3 s, until the gateway closes
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                pass
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
                break
        else:
            pytest.fail("a connection sending one header byte at a time was held open")
        assert answer == b"" or status_of(answer) == 408, answer
    finally:
        sock.close()
    assert healthz(gateway)[0] == 200


def test_a_silent_connection_gets_408(gateway: Proc) -> None:
    with connect(gateway) as sock:
        answer = read_until_closed(sock)
    assert status_of(answer) == 408
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "header_timeout"


def test_the_header_deadline_applies_again_to_a_kept_alive_connections_next_request(gateway: Proc) -> None:
    status, sock = healthz(gateway, keep_open=True)
    with sock:
        assert status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")  # and no more
        assert status_of(read_until_closed(sock)) == 408


def test_connections_without_complete_headers_are_capped(gateway: Proc) -> None:
    assert healthz(gateway)[0] == 200  # the earlier tests' connections are gone
    held = [half_open(gateway) for _ in range(MAX_PENDING - 1)]
    try:
        # below the cap, a fresh connection is served
        assert healthz(gateway)[0] == 200
        held.append(half_open(gateway))
        # at the cap, the next is closed at once, without reaching the app
        with connect(gateway) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            answer = read_until_closed(extra)
        assert status_of(answer) == 503, answer
        # the held ones end at the header deadline, and their places are free again
        for sock in held:
            assert status_of(read_until_closed(sock)) in (None, 408)
    finally:
        for sock in held:
            sock.close()
    assert healthz(gateway)[0] == 200


def test_connections_beyond_the_cap_get_503_with_retry_after(gateway: Proc) -> None:
    assert healthz(gateway)[0] == 200
    idle: list[socket.socket] = []
    try:
        for _ in range(MAX_OPEN):  # complete requests, then idle on keep-alive
            status, sock = healthz(gateway, keep_open=True)
            idle.append(sock)
            assert status == 200
        with connect(gateway) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
            answer = read_until_closed(extra)
        status, headers = parse_head(answer.split(b"\r\n\r\n", 1)[0])
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
        # the connections already open still work
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert read_response(idle[0])[0] == 200
    finally:
        for sock in idle:
            sock.close()
    assert healthz(gateway)[0] == 200  # closed connections free their places
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=HANG_S).text
    assert 'sovereign_gateway_connections_refused_total{reason="connection_limit"}' in metrics


def test_a_refused_client_still_sending_its_body_reads_the_503(gateway: Proc) -> None:
    """Lingering close: a client refused while its 1 MiB body is still on the way can finish
    sending it and then read the 503, as HTTP client libraries do (send the request, then read).
    Closed at once, the connection resets under the client's writes and it never reads the
    answer (the 500-stream test saw exactly that: ReadError instead of 503)."""
    idle: list[socket.socket] = []
    try:
        for _ in range(MAX_OPEN):
            idle.append(healthz(gateway, keep_open=True)[1])
        with connect(gateway) as extra:
            head = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\ncontent-type: application/json\r\n"
            )
            extra.sendall(head + b"content-length: 4194304\r\n\r\n")
            time.sleep(0.2)  # the 503 is sent and the connection shut meanwhile
            for _ in range(64):
                extra.sendall(b" " * 65536)  # a reset connection raises here
            answer = read_until_closed(extra)
        assert status_of(answer) == 503
    finally:
        for sock in idle:
            sock.close()


def test_sigterm_ends_the_process_with_stalled_clients_and_a_stream(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    limits = {**LIMITS, "header_timeout_s": 60, "keep_alive_timeout_s": 60, "shutdown_deadline_s": 2}
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url, limits=limits)
    key = ClientKeyStore(tmp_path / "keys.json").create(TENANT)[1]
    upstream.script(tokens=400, itl_ms=100)  # a stream of 40 s
    with running_gateway(config, tmp_path) as gateway:
        started = threading.Event()
        lines: list[str] = []

        def stream() -> None:
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "sovereign": {"use_case": "patient-support"}}  # fmt: skip
            url, headers = f"{gateway.url}/v1/chat/completions", {"authorization": f"Bearer {key}"}
            try:
                with httpx.stream("POST", url, json=body, headers=headers, timeout=HANG_S) as resp:
                    assert resp.status_code == 200
                    for line in resp.iter_lines():
                        lines.append(line)
                        started.set()
            except httpx.HTTPError:
                pass
            finally:
                started.set()

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        assert started.wait(HANG_S) and lines, "the stream did not start"
        stalled = [half_open(gateway) for _ in range(3)]
        status, keep_alive = healthz(gateway, keep_open=True)
        assert status == 200
        # and a client with a key in the middle of sending its body
        slow_body = connect(gateway)
        slow_body.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {key}\r\ncontent-length: 5000\r\n\r\n".encode()
            + b'{"messages": '
        )
        stalled.append(slow_body)
        try:
            gateway.proc.send_signal(signal.SIGTERM)
            try:
                gateway.proc.wait(timeout=HANG_S)
            except subprocess.TimeoutExpired:
                pytest.fail("the gateway did not exit after SIGTERM")
            streamer.join(HANG_S)
            assert not streamer.is_alive()
            assert "data: [DONE]" not in lines  # ended by the shutdown, not finished
            assert any('"shutting_down"' in line for line in lines)  # its last event says why
            for sock in [*stalled, keep_alive]:
                read_until_closed(sock)
            trail = (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()
            finals = [json.loads(line) for line in trail if '"kind":"request"' in line]
            # each ended with an audited shutting_down: the stream, and the body never finished
            ended = sorted((r["stream"], r["outcome"]) for r in finals if r["outcome"] != "ok")
            assert ended == [(False, "shutting_down"), (True, "shutting_down")], finals
        finally:
            for sock in [*stalled, keep_alive]:
                sock.close()


def run_with_open_file_limit(soft: int, hard: int, code: str) -> subprocess.CompletedProcess[str]:
    """*code* in a fresh interpreter whose RLIMIT_NOFILE is (*soft*, *hard*)."""
    prologue = f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    return subprocess.run([sys.executable, "-c", prologue + code], capture_output=True, text=True, timeout=60)


def test_start_is_refused_when_connections_exceed_the_open_file_limit(tmp_path: Path) -> None:
    limits = {"max_client_connections": 1000, "max_connections": 16}
    config = gateway_config(tmp_path, "http://127.0.0.1:9", "s.none", "http://127.0.0.1:9", limits=limits)
    argv = ["gateway", "serve", "--config", str(config), "--port", str(free_port())]
    done = run_with_open_file_limit(256, 512, f"from infra.cli import main\nmain({argv!r})\n")
    assert done.returncode != 0
    assert "limits.max_client_connections (1000)" in done.stderr, done.stderr
    assert "(RLIMIT_NOFILE) is 512" in done.stderr  # raised to the hard limit, still too small


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "from gateway.server import raise_open_file_limit\n"
        "from gateway.settings import LimitSettings\n"
        "print(raise_open_file_limit(LimitSettings(max_client_connections=300, max_connections=16)))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = run_with_open_file_limit(256, 1024, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1024", "1024"]
