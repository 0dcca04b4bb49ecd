"""The RKE2 bootstrap's call into Ansible: ``sovereign converge`` through ansible-runner, for real.

The playbook is a test double on the local connection that checks the inventory contract (the
real playbooks/cluster.yml runs on real test hosts in tests/hosts/test_cluster.py); everything
else — inventory from the environment, the token on stdin, ansible-runner, the kubeconfig
contract, exit codes — is the code ``pulumi up`` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import config
from infra.hosts import content, inventory
from tests.infra.support import sections
from tests.support import sovereign

PLAYBOOKS = Path(__file__).parent / "playbooks"


def stack_inventory() -> dict[str, Any]:
    cfg = config.parse("eu-central-prod", sections(), "t")
    return inventory.build(
        cfg,
        bastion_public_ip="198.51.100.7",
        control_plane={"cp-1": "10.20.1.11", "cp-2": "10.20.1.12", "cp-3": "10.20.1.13"},
        workers={"w-1": "10.20.1.21"},
        gpu_hosts=[
            {
                "name": "gpu-1",
                "private_ip": "10.20.2.11",
                "server_number": 1,
                "datacenter": "FSN1-DC14",
                "vlan_id": 4000,
                "gpus": 1,
            }
        ],
    )


def converge(
    playbook: Path, inv: dict[str, Any] | str | None, token: str = "t" * 64
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOVEREIGN_INVENTORY"}
    if inv is not None:
        env["SOVEREIGN_INVENTORY"] = inv if isinstance(inv, str) else json.dumps(inv)
    return sovereign("converge", "--playbook", str(playbook), "--token-stdin", input=token + "\n", env=env)


def test_converge_runs_the_playbook_and_prints_only_the_kubeconfig() -> None:
    result = converge(PLAYBOOKS / "fake_cluster.yml", stack_inventory())
    assert result.returncode == 0, result.stderr[-3000:]
    kubeconfig = yaml.safe_load(result.stdout)  # stdout is the kubeconfig and nothing else
    # RKE2's 127.0.0.1 (a name its certificate carries) at the local end of the bastion tunnel
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:16443"
    assert kubeconfig["users"][0]["user"]["token"] == "test-token-eu-central-prod"
    assert "PLAY RECAP" in result.stderr  # Ansible's output went to stderr
    assert "t" * 64 not in result.stderr  # the join token reached the play (checked there), not the log


def test_a_failing_playbook_fails_the_command() -> None:
    result = converge(PLAYBOOKS / "failing.yml", stack_inventory())
    assert result.returncode == 1
    assert "playbook failing.yml failed (status failed, rc 2)" in result.stderr
    assert result.stdout == ""


def test_missing_playbook_names_the_stack_key(tmp_path: Path) -> None:
    result = converge(tmp_path / "cluster.yml", stack_inventory())
    assert result.returncode == 1 and "check the stack's rke2.playbook" in result.stderr


def test_a_missing_or_short_join_token_is_refused() -> None:
    result = converge(PLAYBOOKS / "fake_cluster.yml", stack_inventory(), token="short")
    assert result.returncode == 1 and "--token-stdin: expected the cluster's join token" in result.stderr
    assert "got 5 characters" in result.stderr and "short" not in result.stderr.replace("got 5", "")


def test_missing_or_broken_inventory_is_explained() -> None:
    assert "is not set" in converge(PLAYBOOKS / "fake_cluster.yml", None).stderr
    assert "not valid JSON" in converge(PLAYBOOKS / "fake_cluster.yml", "{oops").stderr
    empty = stack_inventory()
    empty["all"]["children"]["control_plane"]["hosts"] = {}
    assert "no host in group control_plane" in converge(PLAYBOOKS / "fake_cluster.yml", empty).stderr


def test_content_hash_follows_role_content(tmp_path: Path) -> None:
    empty = content.content_hash(tmp_path)
    (tmp_path / "roles" / "rke2" / "tasks").mkdir(parents=True)
    task = tmp_path / "roles" / "rke2" / "tasks" / "main.yml"
    task.write_text("- name: a\n")
    first = content.content_hash(tmp_path)
    assert first != empty and content.content_hash(tmp_path) == first
    task.write_text("- name: b\n")
    assert content.content_hash(tmp_path) != first


def test_only_the_bastion_forwards_and_every_node_is_reached_through_it() -> None:
    inv = stack_inventory()["all"]
    (bastion,) = inv["children"]["bastion"]["hosts"].values()
    # ProxyJump is a direct-tcpip channel, which sshd refuses under AllowTcpForwarding no
    assert bastion["hardening_ssh_allow_tcp_forwarding"] == "local"
    for group in ("control_plane", "workers", "gpu"):
        node_vars = inv["children"][group]["vars"]
        assert "hardening_ssh_allow_tcp_forwarding" not in node_vars  # the role's default: "no"
        assert "ProxyJump=ops@198.51.100.7" in node_vars["ansible_ssh_common_args"]
        assert node_vars["hardening_ssh_allowed_sources"] == [bastion["private_ip"]]


def test_the_secrets_on_stdin_become_role_variables_and_errors_never_show_them() -> None:
    import io

    from infra.hosts.converge import ConvergeError, read_secrets

    token, access, secret = "t" * 64, "AK" + "1" * 18, "s3cret" * 7
    line = json.dumps({"token": token, "etcd_s3_access_key": access, "etcd_s3_secret_key": secret})
    assert read_secrets(io.StringIO(line + "\n")) == {
        "rke2_token": token, "rke2_etcd_s3_access_key": access, "rke2_etcd_s3_secret_key": secret,
    }  # fmt: skip
    assert read_secrets(io.StringIO(token + "\n")) == {"rke2_token": token}  # a bare token line
    bad = [
        (json.dumps({"token": token, "etcd_s3_access_key": access}), "etcd_s3_secret_key is missing"),
        (json.dumps({"token": token, "etcd_s3_secret": secret}), "unexpected: etcd_s3_secret"),
        ('{"token": "' + token + '", ' + secret, "not valid JSON"),
        (json.dumps({"token": "short", "etcd_s3_secret_key": secret}), "got 5 characters"),
    ]
    for text, needle in bad:
        with pytest.raises(ConvergeError, match=needle) as refused:
            read_secrets(io.StringIO(text + "\n"))
        assert secret not in str(refused.value) and token not in str(refused.value)


def test_the_cloud_servers_wait_for_the_hcloud_ccm_and_the_gpu_servers_do_not() -> None:
    """An external cloud controller sets a node's provider id at its first join (it is never
    changed afterwards), so the cloud servers carry cloud-provider-name from the start and the
    servers do not run RKE2's own controller; the Robot GPU servers, which the hcloud CCM cannot
    see without Robot credentials, keep RKE2's defaults (else they would stay tainted
    uninitialized)."""
    children = stack_inventory()["all"]["children"]
    for group in ("control_plane", "workers"):
        assert children[group]["vars"]["rke2_cloud_provider_name"] == "external", group
    assert children["control_plane"]["vars"]["rke2_disable_cloud_controller"] is True
    assert "rke2_disable_cloud_controller" not in children["workers"]["vars"]
    gpu = children["gpu"]["vars"]
    assert "rke2_cloud_provider_name" not in gpu and "rke2_disable_cloud_controller" not in gpu
