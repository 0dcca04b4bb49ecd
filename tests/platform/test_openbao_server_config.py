"""The cluster OpenBao's server configuration (Helm value ``server.ha.raft.config``), run by the
real ``bao`` binary: TLS 1.3 listener, Raft storage, the declared audit device.

Paths are moved into a temporary folder and the Kubernetes service registration is left out
(it needs the pod's environment); everything else is the rendered text.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from infra.k8s_platform.openbao import raft_config
from infra.local.stack import _bao_binary
from tests import pki


def _pki(folder: Path) -> None:
    authority = pki.ca("test openbao CA")
    (folder / "ca.crt").write_bytes(authority.cert_pem())
    pki.leaf(authority, "openbao.openbao.svc", dns=("localhost",), server=True).write(folder, "tls")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rendered_server_config_runs_with_tls_raft_and_audit(tmp_path: Path) -> None:
    tls_dir, data, audit = tmp_path / "tls", tmp_path / "data", tmp_path / "audit"
    for d in (tls_dir, data, audit):
        d.mkdir()
    _pki(tls_dir)
    port, cluster_port = _free_port(), _free_port()
    config = (
        raft_config(3)
        .replace("/openbao/userconfig/openbao-tls", str(tls_dir))
        .replace("/openbao/data", str(data))
        .replace("/openbao/audit", str(audit))
        .replace('"[::]:8200"', f'"127.0.0.1:{port}"')
        .replace('"[::]:8201"', f'"127.0.0.1:{cluster_port}"')
        .replace('service_registration "kubernetes" {}', "")
    )
    assert 'service_registration "kubernetes"' in raft_config(3)  # only this test leaves it out
    hcl = tmp_path / "openbao.hcl"
    hcl.write_text(
        config
        + f'\napi_addr = "https://localhost:{port}"\ncluster_addr = "https://127.0.0.1:{cluster_port}"\n'
    )
    log = (tmp_path / "bao.log").open("wb")
    proc = subprocess.Popen([_bao_binary(), "server", f"-config={hcl}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"https://localhost:{port}"
    try:
        # Raft elects with a 5 s heartbeat timeout: init and unseal may take that long
        client = httpx.Client(verify=ssl.create_default_context(cafile=str(tls_dir / "ca.crt")), timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                health = client.get(f"{url}/v1/sys/health")
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "bao.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "OpenBao did not start"
                time.sleep(0.2)
        assert health.status_code == 501  # uninitialised, sealed: the state a new member starts in
        init = client.put(f"{url}/v1/sys/init", json={"secret_shares": 5, "secret_threshold": 3}).json()
        for share in init["keys"][:3]:
            status = client.put(f"{url}/v1/sys/unseal", json={"key": share}).json()
        assert status["sealed"] is False
        headers = {"X-Vault-Token": init["root_token"]}
        deadline = time.monotonic() + 30
        while client.get(f"{url}/v1/sys/health").status_code != 200:  # raft leader elected
            assert time.monotonic() < deadline, "no raft leader"
            time.sleep(0.2)
        devices = client.get(f"{url}/v1/sys/audit", headers=headers).json()
        assert devices["data"]["file/"]["type"] == "file"
        client.get(f"{url}/v1/sys/mounts", headers=headers)
        assert (audit / "audit.log").stat().st_size > 0  # requests are being audited
        # TLS 1.3 only: a TLS 1.2 client is refused
        old = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            httpx.get(f"{url}/v1/sys/health", verify=old, timeout=5)
            raise AssertionError("a TLS 1.2 handshake succeeded")
        except httpx.ConnectError:
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
