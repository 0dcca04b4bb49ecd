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
