"""Fail closed: no keys -> 503 and nothing forwarded; outside destinations refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.clientkeys import ClientKeyStore
from tests.support import Bao, Upstream, free_port, gateway_config, running_gateway

BODY = {"messages": [{"role": "user", "content": "hello"}], "sovereign": {"use_case": "order-support"}}


def start_expecting_refusal(config: Path) -> subprocess.CompletedProcess[str]:
    """Start the gateway with *config*; it is expected to refuse and exit."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _post(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_openbao_unreachable_means_503_and_nothing_forwarded(tmp_path: Path, upstream: Upstream) -> None:
    upstream.script(capture=True)
    dead_bao = f"http://127.0.0.1:{free_port()}"
    config = gateway_config(tmp_path, dead_bao, "s.none", upstream.url)
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = _post(gw.url, key)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "key_unavailable"
        assert "nothing was forwarded" in resp.json()["error"]["message"]
        ready = httpx.get(f"{gw.url}/readyz", timeout=10)
        assert ready.status_code == 503
        # named as unavailable, without its address or the error's text (issue #20, finding 10)
        assert ready.json()["checks"]["openbao"] == "unavailable"
    assert upstream.captured() == []


def test_token_without_permission_means_503(tmp_path: Path, bao: Bao, upstream: Upstream) -> None:
    upstream.script(capture=True)
    # the auditor token may not create data keys
    config = gateway_config(tmp_path, bao.address, bao.auditor_token, upstream.url)
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = _post(gw.url, key)
        assert resp.status_code == 503
    assert upstream.captured() == []
    log = next(tmp_path.glob("gateway-*.log")).read_text()
    assert "lacks permission" in log


def test_upstream_down_means_502(tmp_path: Path, bao: Bao) -> None:
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, f"http://127.0.0.1:{free_port()}")
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = _post(gw.url, key)
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] == "upstream_unreachable"


@pytest.mark.parametrize(
    "url", ["https://api.openai.com/v1", "http://203.0.113.7:8000/v1", "http://models.example.com/v1"]
)
def test_public_upstream_is_refused_at_start(tmp_path: Path, bao: Bao, url: str) -> None:
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, "http://127.0.0.1:1")
    data = yaml.safe_load(config.read_text())
    data["upstreams"]["chat"]["url"] = url
    config.write_text(yaml.safe_dump(data))
    proc = start_expecting_refusal(config)
    assert proc.returncode == 2  # settings refused: bad input (README, Errors and exit codes)
    assert "upstreams.chat.url" in proc.stderr
    assert "outside the compliance boundary" in proc.stderr
    assert "GDPR Art. 44" in proc.stderr


def test_egress_hook_refuses_and_counts_outside_connections() -> None:
    """Runs in a child: audit hooks are permanent for a process."""
    code = textwrap.dedent(
        """
        import socket
        from gateway import egress
        egress.install(["127.0.0.1/32"], [])
        results = []
        def raw_connect(target):
            with socket.socket() as s:  # no lookup: the connect hook alone decides
                s.connect(target)
        for connect, target in [(raw_connect, ("127.0.0.2", 9)),
                                (socket.create_connection, ("localhost", 9))]:
            try:
                connect(target)
            except PermissionError as exc:
                results.append("refused:" + str(exc))
            except OSError as exc:
                results.append("oserror:" + type(exc).__name__)
        try:
            s = socket.create_connection(("127.0.0.1", 9), timeout=1)
        except PermissionError:
            results.append("refused-allowed")
        except OSError:
            results.append("allowed")
        print("|".join(results))
        print(egress.EGRESS_REFUSED.labels(kind="connect")._value.get(),
              egress.EGRESS_REFUSED.labels(kind="lookup")._value.get())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results, counts = out.stdout.strip().splitlines()
    first, second, third = results.split("|")
    assert first.startswith("refused:egress to 127.0.0.2:9 refused")
    assert second.startswith("refused:egress to localhost refused")
    assert third == "allowed"  # connection refused by the OS, not by the hook
    assert counts.split() == ["1.0", "1.0"]


LOOP_PROBE = textwrap.dedent(
    """
    import asyncio, socket, sys
    import aiohttp, uvloop
    from fastapi import FastAPI
    from gateway import egress
    from gateway.server import uvicorn_config
    from gateway.settings import GatewaySettings

    egress.install(["127.0.0.1/32"], [])

    async def attempt(results, name, make):
        try:
            outcome = await make()
        except aiohttp.ClientConnectorError as exc:  # aiohttp wraps the loop's error
            failure = exc.os_error
            outcome = f"refused:{failure}" if isinstance(failure, PermissionError) else "oserror"
            results.append(f"{name}={outcome}")
            return
        except PermissionError as exc:
            results.append(f"{name}=refused:{exc}")
            return
        except OSError:
            results.append(f"{name}=oserror")  # refused by the OS (nothing listens), not the guard
            return
        close = getattr(outcome[0] if isinstance(outcome, tuple) else outcome, "close", None)
        if close:
            close()
        results.append(f"{name}=ok")

    async def send_to(target):  # a datagram through the socket module: the hook's to check
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_sock:
            udp_sock.sendto(b"x", target)

    async def main():
        loop = asyncio.get_running_loop()
        results = [type(loop).__name__]
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sock = socket.socket()
        sock.setblocking(False)
        udp = asyncio.DatagramProtocol
        probes = [
            ("connect-ip", lambda: loop.create_connection(asyncio.Protocol, "127.0.0.2", 9)),
            ("connect-name", lambda: loop.create_connection(asyncio.Protocol, "localhost", 9)),
            ("lookup", lambda: loop.getaddrinfo("localhost", 9)),
            ("sock-connect", lambda: loop.sock_connect(sock, ("127.0.0.2", 9))),
            ("datagram", lambda: loop.create_datagram_endpoint(udp, remote_addr=("127.0.0.2", 9))),
            ("datagram-unconnected", lambda: loop.create_datagram_endpoint(udp, family=socket.AF_INET)),
            ("sendto", lambda: send_to(("127.0.0.2", 9))),
            ("streams", lambda: asyncio.open_connection("127.0.0.2", 9)),
            ("allowed", lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", port)),
        ]
        for name, make in probes:
            await attempt(results, name, make)
        async with aiohttp.ClientSession() as session:
            async def fetch():
                async with session.get("http://127.0.0.2:9/") as response:
                    return response
            await attempt(results, "aiohttp", fetch)
        sock.close()
        server.close()
        print("|".join(results))
        print(egress.EGRESS_REFUSED.labels(kind="connect")._value.get(),
              egress.EGRESS_REFUSED.labels(kind="lookup")._value.get())

    if sys.argv[1] == "gateway":  # the loop the gateway's server runs on
        factory = uvicorn_config(FastAPI(), GatewaySettings(), "127.0.0.1", 0, "warning").get_loop_factory()
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    """
)


def loop_probe(which: str) -> tuple[dict[str, str], list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", LOOP_PROBE, which], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    results, counts = out.stdout.strip().splitlines()
    loop_name, *probes = results.split("|")
    return {"loop": loop_name, **dict(p.split("=", 1) for p in probes)}, counts.split()


def test_the_gateways_event_loop_refuses_what_the_hook_refuses() -> None:
    """The gateway runs on uvloop, which connects and resolves names in libuv, where the audit
    hook does not look (the control below shows it): its loop checks them itself. Each outbound
    path a library can take through the loop is refused, named and counted; an allowed address
    still connects."""
    got, counts = loop_probe("gateway")
    assert got.pop("loop") == "GuardedLoop"
    assert got.pop("allowed") == "ok"
    for probe in ("connect-ip", "sock-connect", "datagram", "sendto", "streams", "aiohttp"):
        assert got[probe] == "refused:egress to 127.0.0.2:9 refused: not on the gateway's egress allowlist", (
            probe
        )
    for probe in ("connect-name", "lookup"):
        assert got[probe] == "refused:egress to localhost refused: not on the gateway's egress allowlist", (
            probe
        )
    # a datagram endpoint without a remote address would send wherever sendto says, unchecked
    assert got["datagram-unconnected"].startswith(
        "refused:egress refused: a datagram endpoint without remote_addr"
    )
    assert counts == ["7.0", "2.0"]


def test_uvloop_alone_would_let_connects_and_lookups_past_the_hook() -> None:
    """The reason for GuardedLoop: on uvloop's own loop the audit hook sees neither the
    connects of create_connection (asyncio's streams use it) nor its lookups nor a datagram
    endpoint's; it still sees sock_connect, which connects a Python socket (as aiohttp does),
    and a datagram sent through the socket module."""
    got, counts = loop_probe("uvloop")
    assert got["loop"] == "Loop"
    assert got["connect-ip"] == got["connect-name"] == got["streams"] == "oserror"
    assert got["lookup"] == got["datagram"] == got["datagram-unconnected"] == "ok"
    assert got["sock-connect"] == got["aiohttp"] == got["sendto"] != "oserror"
    assert counts == ["3.0", "0.0"]


def test_damaged_audit_trail_stops_the_start_with_a_clear_error(tmp_path: Path, bao: Bao) -> None:
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, "http://127.0.0.1:1")
    trail = tmp_path / "audit" / "audit.jsonl"
    trail.parent.mkdir(parents=True)
    trail.write_text('{"seq": 0, "hash": "x"}\n{"seq": 1, "ha')
    proc = start_expecting_refusal(config)
    assert proc.returncode == 1
    assert "ends in a damaged record" in proc.stderr and "sovereign audit verify" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_refusal_is_recorded_from_the_first_request_on(
    tmp_path: Path, bao: Bao, upstream: Upstream
) -> None:
    """A gateway holds no audit key until something fetches it, and a refusal comes before the
    keys step: the pod's first request, refused (an unknown use case), fetches the audit key for
    its record. Where OpenBao is down the refusal is still answered at once, without a record."""
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    body = {**BODY, "sovereign": {"use_case": "no-such-use-case"}}
    with running_gateway(config, tmp_path) as gw:
        resp = httpx.post(
            f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_use_case"
    records = [json.loads(line) for line in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()]
    finals = [(r["status"], r["error"], r["tenant"]) for r in records if r["kind"] == "request"]
    assert finals == [(400, "unknown_use_case", "clinic")]
    assert upstream.captured() == []

    dead = tmp_path / "dead"
    dead.mkdir()
    config = gateway_config(dead, f"http://127.0.0.1:{free_port()}", "s.none", upstream.url)
    _, key = ClientKeyStore(dead / "keys.json").create("clinic")
    with running_gateway(config, dead) as gw:
        resp = httpx.post(
            f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
        )
        assert resp.status_code == 400
    trail = dead / "audit" / "audit.jsonl"
    assert not trail.exists() or not any(
        json.loads(line)["kind"] == "request" for line in trail.read_text().splitlines()
    )
