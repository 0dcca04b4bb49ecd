"""The suite over ``https://`` (a throwaway CA, the scripted upstream behind TLS) and its
behaviour on errors: an auth failure stops the run at once and names the status and the
gateway's error code (never the key); other failures back off."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import pki
from tests.loadtests.test_runs import loadtest, unmissable
from tests.loadtests.verdict import checked_run
from tests.support import REPO, free_port, wait_for_port

KEY = "sk-sov-test.revoked-key-never-shown"


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The scripted upstream served over TLS by a certificate of a throwaway CA: (URL, CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    authority = pki.ca("load test CA")
    (folder / "ca.crt").write_bytes(authority.cert_pem())
    crt, key = pki.leaf(authority, "gateway", ips=("127.0.0.1",), server=True).write(folder, "server")
    port = free_port()
    serve = ("import uvicorn; from tests.doubles.scripted_upstream import Script, build_app; "
             f"uvicorn.run(build_app(Script(tokens=4, ttft_ms=5, itl_ms=1)), host='127.0.0.1', port={port}, "
             f"log_level='warning', ssl_certfile={str(crt)!r}, ssl_keyfile={str(key)!r})")  # fmt: skip
    with (folder / "upstream.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", serve], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for_port(proc, port, "the TLS scripted upstream")
        yield f"https://127.0.0.1:{port}", folder / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_https_streams_time_the_handshake_apart_and_reuse_the_connection(
    tls_upstream: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = tls_upstream
    out = tmp_path / "run"
    result = loadtest(
        out, url, "--profile", str(unmissable(tmp_path)), "--ca-file", str(ca), users=2, run_time="3s"
    )
    output = result.stdout + result.stderr
    run = checked_run(out, str(tmp_path / "unmissable.yaml"), result.returncode, output)
    assert run.verdict.failures == 0 and run.completed > 4, output[-3000:]
    new = [s for s in run.streams if not s["reused"]]
    assert 1 <= len(new) <= 2
    assert all(s["tls_ms"] is not None and s["tls_ms"] > 0 and s["connect_ms"] is not None for s in new)
    assert all(s["tls_ms"] is None for s in run.streams if s["reused"])
    assert run.run["stamps"] == "read"  # TLS: the kernel's stamps cannot be used (docs/load-tests.md)


def test_https_verifies_the_certificate(tls_upstream: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = tls_upstream
    out = tmp_path / "run"
    result = loadtest(out, url, "--profile", "cpu-local", users=1, run_time="2s")  # no --ca-file: not trusted
    run = checked_run(out, "cpu-local", result.returncode, result.stdout + result.stderr)
    assert run.requests > 0 and run.verdict.failures == run.requests
    assert all(s["error"].startswith("tls ") and s["status"] is None for s in run.streams), run.streams[0]


class Refusing(BaseHTTPRequestHandler):
    """The gateway's answer to a revoked key: 401 with its OpenAI error object."""

    protocol_version = "HTTP/1.1"
    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        error = {"message": "the API key is unknown or revoked", "type": "invalid_request_error"}
        body = json.dumps({"error": {**error, "code": "invalid_api_key", "param": None}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[str]:
    Refusing.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_auth_failure_stops_the_run_at_once_and_names_status_and_code(
    refusing: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    users = 3
    result = loadtest(out, refusing, "--profile", "cpu-local", users=users, run_time="6s", key=KEY)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "stopping the run: the gateway answered HTTP 401 invalid_api_key" in output
    assert KEY not in output and "revoked-key" not in output  # the key is never shown
    run = checked_run(out, "cpu-local", result.returncode, output)
    assert run.run["aborted"] and "HTTP 401 invalid_api_key" in run.run["aborted"]
    # stopped at once: a few requests at most per user, not a 6 s loop of 401s
    assert Refusing.requests <= 3 * users, Refusing.requests
    # stopped early, counted not timed: the records are the few requests the gateway answered
    assert 0 < len(run.streams) <= Refusing.requests <= 3 * users, (len(run.streams), Refusing.requests)
    assert "HTTP 401 invalid_api_key" in (out / "locust_failures.csv").read_text()
