"""How `pulumi up` and the operator reach the private Kubernetes API: the SSH tunnel through
the bastion (infra/hosts/tunnel.py), wired into the program (infra/components/api_access.py).
The tunnel itself runs against a real hardened bastion in tests/hosts/test_bastion.py."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import pytest

from infra.components import api_access
from infra.hosts import tunnel
from tests.infra.support import plan_of, sections
from tests.infra.test_converge import stack_inventory
from tests.support import sovereign


def test_the_platform_provider_waits_for_the_tunnel_opened_after_the_bootstrap() -> None:
    plan = plan_of(sections("eu-central-prod"), stack="eu-central-prod")
    (opened,) = [i for i in plan.invoked if i["command"] == api_access.OPEN]
    before = opened["after"]
    assert any(r.startswith("command:local:Command::") and r.endswith("-rke2-bootstrap") for r in before)
    # the Kubernetes provider (and so every platform object) is registered after the tunnel is open
    assert not any(r.startswith("pulumi:providers:kubernetes::") for r in before)
    (provider,) = plan.of_type("pulumi:providers:kubernetes")
    # a new tunnel port or a re-run bootstrap changes the kubeconfig: the provider, and with it
    # every platform object, is replaced only when this identifier changes
    assert provider.inputs["clusterIdentifier"] == "eu-central-prod-rke2"


def test_the_tunnel_reaches_the_bastion_as_ansible_does_and_targets_every_server_in_order() -> None:
    t = tunnel.Tunnel.from_inventory(stack_inventory())
    assert t.bastion == "198.51.100.7"
    assert t.user == "ops"
    assert t.targets == ("10.20.1.11", "10.20.1.12", "10.20.1.13")
    assert t.local_port == 16443
    assert t.stack == "eu-central-prod"
    inv = stack_inventory()
    bastion = next(iter(inv["all"]["children"]["bastion"]["hosts"].values()))
    bastion |= {"ansible_port": 2222, "ansible_ssh_private_key_file": "/keys/ops"}
    inv["all"]["vars"]["ansible_ssh_common_args"] = "-F '/etc/ssh/ops config'"
    args = tunnel.Tunnel.from_inventory(inv).ssh_args
    assert args == ("-F", "/etc/ssh/ops config", "-i", "/keys/ops", "-p", "2222")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda inv: inv["all"]["children"]["bastion"].update(hosts={}), "exactly one"),
        (
            lambda inv: inv["all"]["children"]["control_plane"].update(hosts={}),
            "no host in group control_plane",
        ),
        (lambda inv: inv["all"]["vars"].pop("sovereign_api_tunnel_port"), "admin.api_tunnel_port"),
        (lambda inv: inv["all"]["vars"].update(sovereign_api_tunnel_port=80), "1024-65535"),
        (lambda inv: inv["all"]["vars"].update(sovereign_api_tunnel_port=True), "1024-65535"),
    ],
)
def test_an_inventory_the_tunnel_cannot_use_is_explained(change, message) -> None:  # type: ignore[no-untyped-def]
    inv = copy.deepcopy(stack_inventory())
    change(inv)
    with pytest.raises(tunnel.TunnelError, match=message):
        tunnel.Tunnel.from_inventory(inv)


def test_a_port_taken_by_another_program_is_named_with_the_field_to_change(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv(tunnel.STATE_DIR_ENV, str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        inv = stack_inventory()
        inv["all"]["vars"]["sovereign_api_tunnel_port"] = busy.getsockname()[1]
        # refused before any ssh is started: 198.51.100.7 (TEST-NET-2) is never contacted
        with pytest.raises(tunnel.TunnelError, match=r"taken by another program.*admin\.api_tunnel_port"):
            tunnel.open_tunnel(tunnel.Tunnel.from_inventory(inv))


def test_the_cli_reads_the_inventory_pulumi_passes_and_reports_a_closed_tunnel(tmp_path: object) -> None:
    env = {"SOVEREIGN_INVENTORY": json.dumps(stack_inventory()), "SOVEREIGN_TUNNEL_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # fmt: skip
    result = sovereign("tunnel", "status", env=env, timeout=120)
    assert result.returncode == 1  # nothing answers: not open
    assert json.loads(result.stdout) == {
        "open": False, "target": None, "local": "127.0.0.1:16443", "answers": False,
    }  # fmt: skip
    broken = sovereign("tunnel", "open", env={**env, "SOVEREIGN_INVENTORY": "{not json"}, timeout=120)
    assert broken.returncode == 2
    assert "SOVEREIGN_INVENTORY is not valid JSON" in broken.stderr


def test_the_control_socket_is_private_and_short_enough_for_a_unix_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = tunnel.Tunnel.from_inventory(stack_inventory())
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        base = Path(short)
        monkeypatch.setenv("XDG_RUNTIME_DIR", short)
        sock = tunnel.control_socket(t)
        assert len(str(sock)) + 17 <= tunnel.MAX_SOCKET_PATH  # ssh binds <path>.<16 random> first
        assert sock.parent.stat().st_mode & 0o777 == 0o700
        deep = base / ("d" * 70)
        deep.mkdir()
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
        with pytest.raises(tunnel.TunnelError, match="over the 107 a Unix socket takes; set XDG_RUNTIME_DIR"):
            tunnel.control_socket(t)
        shared = base / "shared" / f"sovereign-tunnels-{os.getuid()}"
        shared.mkdir(parents=True)
        shared.chmod(0o777)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared.parent))
        with pytest.raises(tunnel.TunnelError, match="not a private folder of this user"):
            tunnel.control_socket(t)


def test_a_port_is_free_once_nothing_listens_even_with_connections_in_time_wait() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    assert not tunnel.port_free(port)  # listening: taken
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the side that closes first keeps the port in TIME_WAIT
    client.close()
    listener.close()
    assert tunnel.port_free(port)
