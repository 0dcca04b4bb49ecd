"""The real `playbooks/cluster.yml` through a real, hardened bastion, as `pulumi up` runs it.

A zone lab: the bastion and a control-plane node share one bridge (the private network), and
this machine plays the operator. The inventory's bastion and node settings are the ones
``infra.hosts.inventory.build`` gives a stack (only the addresses are the lab's), so Ansible
reaches the node with ProxyJump through the bastion, across a converge that hardens and
reloads the bastion's sshd. After it, the node's firewall takes SSH only from the bastion.

The refusal the double must show is OpenSSH's own: ProxyJump opens a direct-tcpip channel on
the bastion, which sshd refuses under ``AllowTcpForwarding no`` (serverloop.c,
server_request_direct_tcpip, logging "refused local port forward"; the client's jump leg then
stops with "stdio forwarding failed").
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config
from infra.hosts import inventory, tunnel
from infra.hosts.converge import PlaybookRun, run_playbook
from infra.paths import REPO_ROOT
from tests import pki
from tests.hosts.conftest import VERSION, Mirror
from tests.hosts.lab import Lab, LabHost
from tests.infra.support import sections
from tests.support import sovereign

TOKEN = "b" * 48
# Stand-in for the API server's TLS endpoint on a control-plane node: a certificate naming
# 127.0.0.1, as RKE2's does (its own admin kubeconfig points at https://127.0.0.1:6443), and
# /readyz. The tunnel is what is tested: real ssh, real hardened sshd, real node firewall.
API_STANDIN = """
import http.server, ssl
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/readyz"
        body = b"ok" if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.ThreadingHTTPServer(("0.0.0.0", 6443), Api)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/home/ops/api.crt", "/home/ops/api.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""
CLUSTER = REPO_ROOT / "playbooks" / "cluster.yml"
HARDENING = REPO_ROOT / "playbooks" / "hardening.yml"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # "jumphost", not "bastion": Ansible warns when a host is named like its group
    with Lab(Path(tmp_path_factory.mktemp("site")), ["jumphost", "node3"], zone="sovsite") as running:
        yield running


@pytest.fixture(scope="module")
def ssh_config(lab: Lab) -> Path:
    """The operator's ssh configuration: the lab key, no known-hosts file (new host keys each
    run). ssh hands -F to the ProxyJump leg as well (ssh.c), so both legs use it."""
    path = lab.workdir / "ssh_config"
    path.write_text(
        f"Host *\n  User ops\n  IdentityFile {lab.key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 5\n"
    )
    return path


def site_inventory(
    lab: Lab, mirror: tuple[Mirror, str], ssh_config: Path, **bastion_vars: Any
) -> dict[str, Any]:
    bastion, node = lab.hosts
    cfg = config.parse("eu-central-prod", sections(), "lab")
    stack = inventory.build(
        cfg,
        bastion_public_ip=bastion.address,
        control_plane={node.name: node.address},
        workers={},
        gpu_hosts=[],
    )["all"]
    server, sha = mirror
    site = str(f"{bastion.address.rsplit('.', 1)[0]}.0/{bastion.prefix}")
    real_bastion = next(iter(stack["children"]["bastion"]["hosts"].values()))
    control_plane = stack["children"]["control_plane"]
    jump = control_plane["vars"]["ansible_ssh_common_args"]  # the stack's ProxyJump through the bastion
    return {
        "all": {
            "vars": {
                **stack["vars"],
                "hardening_private_cidrs": [site],
                "rke2_artifact_url": f"{server.url}/{VERSION}",
                "rke2_artifact_sha256": sha,
                "rke2_registry_mirror": "",
                "rke2_start": False,  # RKE2 cannot run in a container
                "ansible_ssh_common_args": f"-F {ssh_config}",
            },
            "children": {
                "bastion": {
                    "hosts": {
                        bastion.name: {
                            **real_bastion,  # the stack's bastion settings, forwarding included
                            "ansible_host": bastion.address,
                            "hardening_ssh_allowed_sources": [bastion.host_end],  # the operator
                            "hardening_nat_sources": [site],
                            "hardening_nat_interface": "host0",
                            **bastion_vars,
                        }
                    }
                },
                "control_plane": {
                    "vars": {
                        **control_plane["vars"],
                        "ansible_ssh_common_args": f"-F {ssh_config} {jump}",
                        "hardening_ssh_allowed_sources": [bastion.address],
                    },
                    "hosts": control_plane["hosts"],
                },
            },
        }
    }


def ssh(
    ssh_config: Path, host: LabHost, command: str, jump: LabHost | None = None
) -> subprocess.CompletedProcess[str]:
    via = ["-J", f"ops@{jump.address}"] if jump else []
    return subprocess.run(
        ["ssh", "-F", str(ssh_config), *via, f"ops@{host.address}", command],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def converged(lab: Lab, mirror: tuple[Mirror, str], ssh_config: Path) -> tuple[PlaybookRun, PlaybookRun]:
    inv = site_inventory(lab, mirror, ssh_config)
    # what `sovereign converge` passes from stdin: the join token and, the stack having etcd
    # snapshots (prod), the S3 keys
    secrets = {
        "rke2_token": TOKEN,
        "rke2_etcd_s3_access_key": "AK" + "1" * 18,
        "rke2_etcd_s3_secret_key": "s" * 40,
    }
    return run_playbook(CLUSTER, inv, secrets), run_playbook(CLUSTER, inv, secrets)


@pytest.mark.timeout(1800)  # the fixture: two converges of two hosts (apt, packages, RKE2)
def test_the_cluster_playbook_converges_through_the_bastion_and_the_second_run_changes_nothing(
    converged: tuple[PlaybookRun, PlaybookRun],
) -> None:
    first, second = converged
    assert first.rc == 0, first.failures
    assert {"jumphost", "node3"} <= set(first.ok)
    assert second.rc == 0, second.failures
    assert sum(second.changed.values()) == 0, second.changed


def test_after_it_the_node_takes_ssh_only_through_the_bastion(
    lab: Lab, ssh_config: Path, converged: tuple[PlaybookRun, PlaybookRun]
) -> None:
    bastion, node = lab.hosts
    assert ssh(ssh_config, node, "true", jump=bastion).returncode == 0
    direct = ssh(ssh_config, node, "true")  # from the operator's machine, not through the bastion
    assert direct.returncode == 255
    # dropped by the node's firewall (nftables), not refused by a stopped sshd or a failed login
    assert "Connection timed out" in direct.stderr, direct.stderr


def test_the_control_plane_node_waits_for_the_hcloud_ccm(
    lab: Lab, ssh_config: Path, converged: tuple[PlaybookRun, PlaybookRun]
) -> None:
    """The stack's inventory through the real rke2 role: an external cloud controller from the
    first join, not RKE2's own (it would set rke2:// provider ids the hcloud CCM cannot adopt)."""
    bastion, node = lab.hosts
    read = ssh(ssh_config, node, "sudo cat /etc/rancher/rke2/config.yaml", jump=bastion)
    assert read.returncode == 0, read.stderr
    config = yaml.safe_load(read.stdout)
    assert config["cloud-provider-name"] == "external"
    assert config["disable-cloud-controller"] is True


def test_verify_passes_through_the_bastion(
    lab: Lab,
    mirror: tuple[Mirror, str],
    ssh_config: Path,
    converged: tuple[PlaybookRun, PlaybookRun],
    tmp_path: Path,
) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(site_inventory(lab, mirror, ssh_config)))
    junit = tmp_path / "verify.xml"
    result = sovereign("verify", "--inventory", str(path), "--junit", str(junit), cwd=REPO_ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 failed" in result.stderr
    report = junit.read_text()
    assert "test_sshd_is_key_only_without_root[ansible://jumphost]" in report  # both hosts checked
    assert "test_sshd_is_key_only_without_root[ansible://node3]" in report


def test_a_bastion_without_forwarding_refuses_the_jump_and_the_api_tunnel(
    lab: Lab,
    mirror: tuple[Mirror, str],
    ssh_config: Path,
    converged: tuple[PlaybookRun, PlaybookRun],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bastion, node = lab.hosts
    only_bastion = site_inventory(lab, mirror, ssh_config, hardening_ssh_allow_tcp_forwarding="no")
    del only_bastion["all"]["children"]["control_plane"]
    try:
        assert run_playbook(HARDENING, only_bastion).rc == 0
        jump = ssh(ssh_config, node, "true", jump=bastion)
        assert jump.returncode == 255
        assert "stdio forwarding failed" in jump.stderr  # the jump leg's channel was refused
        # ... by the bastion's sshd itself (serverloop.c logs the refusal at INFO)
        refused = bastion.ssh("sudo journalctl -u ssh --no-pager -o cat | grep 'refused local port forward'")
        assert f"target {node.address} port 22" in refused.stdout, refused.stdout + refused.stderr
        # the API tunnel is the same channel: refused, and said so
        monkeypatch.setenv(tunnel.STATE_DIR_ENV, str(tmp_path))
        t = tunnel.Tunnel.from_inventory(api_inventory(lab, mirror, ssh_config, free_port()))
        with pytest.raises(tunnel.TunnelError, match="refuses TCP forwarding"):
            tunnel.open_tunnel(t)
        assert not tunnel.control_socket(t).exists()
    finally:
        only_bastion["all"]["children"]["bastion"]["hosts"][bastion.name][
            "hardening_ssh_allow_tcp_forwarding"
        ] = "local"
        assert run_playbook(HARDENING, only_bastion).rc == 0
    assert ssh(ssh_config, node, "true", jump=bastion).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_inventory(lab: Lab, mirror: tuple[Mirror, str], ssh_config: Path, port: int) -> dict[str, Any]:
    """The site's inventory with a control-plane server that is gone listed first."""
    inv = site_inventory(lab, mirror, ssh_config)
    servers = inv["all"]["children"]["control_plane"]["hosts"]
    gone = f"{lab.hosts[0].address.rsplit('.', 1)[0]}.250"  # on the bridge, no host behind it
    inv["all"]["children"]["control_plane"]["hosts"] = {"gone": {"private_ip": gone}, **servers}
    inv["all"]["vars"]["sovereign_api_tunnel_port"] = port
    return inv


def get_readyz(port: int, ca: Path) -> str:
    """What kubectl does with the stack's kubeconfig: HTTPS to 127.0.0.1, the cluster CA trusted,
    the name checked against the certificate."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=ca), timeout=30
    )
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def api_ca(lab: Lab, ssh_config: Path, converged: tuple[PlaybookRun, PlaybookRun]) -> Path:
    bastion, node = lab.hosts
    authority = pki.ca("lab cluster CA")
    crt, key = pki.leaf(authority, "kube-apiserver", ips=("127.0.0.1", node.address), server=True).write(
        lab.workdir / "api", "api"
    )
    (lab.workdir / "api" / "api.py").write_text(API_STANDIN)
    copy = subprocess.run(
        ["scp", "-F", str(ssh_config), "-J", f"ops@{bastion.address}", str(crt), str(key),
         str(lab.workdir / "api" / "api.py"), f"ops@{node.address}:"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert copy.returncode == 0, copy.stderr
    started = ssh(
        ssh_config, node, "setsid -f python3 /home/ops/api.py >/dev/null 2>&1 </dev/null", jump=bastion
    )
    assert started.returncode == 0, started.stderr
    ca = lab.workdir / "api" / "ca.crt"
    ca.write_bytes(authority.cert_pem())
    return ca


def test_the_api_tunnel_reaches_a_live_server_through_the_bastion_and_kubectl_trusts_it(
    lab: Lab,
    mirror: tuple[Mirror, str],
    ssh_config: Path,
    api_ca: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(tunnel.STATE_DIR_ENV, str(tmp_path))
    port = free_port()
    t = tunnel.Tunnel.from_inventory(api_inventory(lab, mirror, ssh_config, port))
    node = lab.hosts[1]
    try:
        assert tunnel.open_tunnel(t) == node.address  # the gone server first, skipped
        assert get_readyz(port, api_ca) == "ok"
        master = tunnel.status(t)
        assert master == {"open": True, "target": node.address, "local": f"127.0.0.1:{port}", "answers": True}
        sock = tunnel.control_socket(t)
        pid = subprocess.run(
            ["ssh", "-S", str(sock), "-O", "check", "x"], capture_output=True, text=True
        ).stderr
        assert "Master running" in pid
        assert tunnel.open_tunnel(t) == node.address  # again: the same master, kept as it is
        again = subprocess.run(["ssh", "-S", str(sock), "-O", "check", "x"], capture_output=True, text=True)
        assert again.stderr == pid
    finally:
        closed = tunnel.close(t)
    assert closed
    assert tunnel.port_free(port)  # nothing listens there any more


def test_with_no_server_answering_the_tunnel_names_each_one_and_why(
    lab: Lab,
    mirror: tuple[Mirror, str],
    ssh_config: Path,
    api_ca: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(tunnel.STATE_DIR_ENV, str(tmp_path))
    bastion, node = lab.hosts
    # [a]: the pattern must not match the shell that runs pkill itself
    assert ssh(ssh_config, node, "pkill -f 'python3 /home/ops/[a]pi.py'; true", jump=bastion).returncode == 0
    t = tunnel.Tunnel.from_inventory(api_inventory(lab, mirror, ssh_config, free_port()))
    try:
        with pytest.raises(tunnel.TunnelError) as refused:
            tunnel.open_tunnel(t)
    finally:
        started = ssh(
            ssh_config, node, "setsid -f python3 /home/ops/api.py >/dev/null 2>&1 </dev/null", jump=bastion
        )
    message = str(refused.value)
    assert "no control-plane server answered on port 6443" in message
    # the bastion's own reasons, as its sshd reported them for each server
    assert f"{node.address} (connect failed: Connection refused)" in message
    assert ".250 (connect failed: No route to host)" in message
    assert not tunnel.control_socket(t).exists()  # nothing left running
    assert started.returncode == 0
