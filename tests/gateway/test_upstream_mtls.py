"""mTLS between the gateway and a model upstream, for real: the upstream serves HTTPS and
requires a client certificate from the inference CA (as vLLM does in the cluster)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.clientkeys import ClientKeyStore
from tests import pki
from tests.support import REPO, Bao, double, free_port, gateway_config, running_gateway, wait_for_port

BODY = {"messages": [{"role": "user", "content": "hello"}], "sovereign": {"use_case": "order-support"}}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    inference_ca = pki.ca("inference mTLS CA")
    (folder / "ca.crt").write_bytes(inference_ca.cert_pem())
    server_crt, server_key = pki.leaf(inference_ca, "vllm", ips=("127.0.0.1",), server=True).write(
        folder, "server"
    )
    client_crt, client_key = pki.leaf(inference_ca, "gateway", client=True).write(folder, "client")
    rogue_crt, rogue_key = pki.leaf(pki.ca("someone else"), "gateway", client=True).write(folder, "rogue")
    return {
        "ca": folder / "ca.crt",
        "server_crt": server_crt,
        "server_key": server_key,
        "client_crt": client_crt,
        "client_key": client_key,
        "rogue_crt": rogue_crt,
        "rogue_key": rogue_key,
    }


@pytest.fixture(scope="module")
def tls_upstream(certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            double("scripted_upstream", "--port", str(port), "--capture",
                   "--tls-cert", str(certs["server_crt"]), "--tls-key", str(certs["server_key"]),
                   "--tls-client-ca", str(certs["ca"])),
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    wait_for_port(proc, port, f"the TLS upstream (log {log})")
    yield f"https://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def mtls(certs: dict[str, Path], who: str) -> dict[str, Any]:
    return {
        "ca_file": str(certs["ca"]),
        "cert_file": str(certs[f"{who}_crt"]),
        "key_file": str(certs[f"{who}_key"]),
    }


def config_with_tls(tmp: Path, bao: Bao, url: str, tls: dict[str, Any]) -> Path:
    path = gateway_config(tmp, bao.address, bao.gateway_token, url)
    config = yaml.safe_load(path.read_text())
    config["upstreams"]["chat"]["tls"] = tls
    path.write_text(yaml.safe_dump(config))
    return path


def post(url: str, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=headers, timeout=30)


def test_gateway_talks_to_the_upstream_over_mtls(
    tmp_path: Path, bao: Bao, tls_upstream: str, certs: dict[str, Path]
) -> None:
    config = config_with_tls(tmp_path, bao, tls_upstream, mtls(certs, "client"))
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = post(gw.url, key)
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"]
        ready = httpx.get(f"{gw.url}/readyz", timeout=10).json()
        assert ready["checks"]["upstream:chat"] == "ok"


def test_a_certificate_from_another_ca_is_refused_by_the_upstream(
    tmp_path: Path, bao: Bao, tls_upstream: str, certs: dict[str, Path]
) -> None:
    config = config_with_tls(tmp_path, bao, tls_upstream, mtls(certs, "rogue"))
    _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic")
    with running_gateway(config, tmp_path) as gw:
        resp = post(gw.url, key)
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] in {"upstream_unreachable", "upstream_error"}


def test_without_a_client_certificate_the_upstream_refuses_the_handshake(
    tls_upstream: str, certs: dict[str, Path]
) -> None:
    anonymous = ssl.create_default_context(cafile=str(certs["ca"]))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{tls_upstream}/v1/models", verify=anonymous, timeout=10)
    identified = ssl.create_default_context(cafile=str(certs["ca"]))
    identified.load_cert_chain(str(certs["client_crt"]), str(certs["client_key"]))
    assert httpx.get(f"{tls_upstream}/v1/models", verify=identified, timeout=10).status_code == 200


def test_missing_certificate_file_stops_the_start_naming_it(
    tmp_path: Path, bao: Bao, tls_upstream: str, certs: dict[str, Path]
) -> None:
    tls = mtls(certs, "client") | {"cert_file": str(tmp_path / "absent.crt")}
    config = config_with_tls(tmp_path, bao, tls_upstream, tls)
    argv = [sys.executable, "-m", "gateway", "--config", str(config), "--port", str(free_port())]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "tls.cert_file" in result.stderr and "absent.crt" in result.stderr
