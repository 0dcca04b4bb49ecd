"""The hardening role's behaviour, converged through ansible-runner on a real booted Debian 12
host (../shared/TEST-HOSTS.md): idempotence, refusals, failure messages, and what the firewall
and sshd do to real connections. The state the role leaves on a host is checked by the one host
suite, infra/hosts/checks, which tests/hosts/test_cluster.py runs against a lab host."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import testinfra

from infra.hosts.converge import PlaybookRun, run_playbook
from infra.paths import REPO_ROOT
from tests.hosts.lab import SSH_ARGS, SUITE, USER, Lab, LabHost

PLAYBOOK = REPO_ROOT / "playbooks" / "hardening.yml"


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Iterator[tuple[PlaybookRun, PlaybookRun]]:
    first = run_playbook(PLAYBOOK, lab.inventory())
    second = run_playbook(PLAYBOOK, lab.inventory())
    yield first, second


@pytest.fixture(scope="module")
def node(lab: Lab, converged: tuple[PlaybookRun, PlaybookRun]) -> tuple[LabHost, Any]:
    host = lab.hosts[0]
    return host, testinfra.get_host(
        f"ssh://{USER}@{host.address}", ssh_identity_file=str(host.key), ssh_extra_args=SSH_ARGS, sudo=True
    )


def test_converges_and_the_second_run_changes_nothing(converged: tuple[PlaybookRun, PlaybookRun]) -> None:
    first, second = converged
    assert first.rc == 0, first.failures
    assert sum(first.changed.values()) > 0
    assert second.rc == 0, second.failures
    assert second.ok.get("node1", 0) >= 5 and sum(second.changed.values()) == 0


def test_a_failed_package_list_update_stops_the_role_with_apts_reason(lab: Lab) -> None:
    host = lab.hosts[0]
    source = f"http://{host.host_end}:9/debian"  # the veth's host end, a port nothing listens on
    listed = host.ssh(f"echo 'deb {source} {SUITE} main' | sudo tee /etc/apt/sources.list.d/unreachable.list")
    assert listed.returncode == 0, listed.stderr
    try:
        run = run_playbook(PLAYBOOK, lab.inventory())
    finally:
        assert host.ssh("sudo rm /etc/apt/sources.list.d/unreachable.list").returncode == 0
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("node1: Stop with apt's own reason"), failure
    assert f"{host.host_end}:9" in failure  # apt's reason names the source that failed
    assert "No package matching" not in failure
    assert sum(run.changed.values()) == 0  # nothing installed or changed before the stop


def test_a_client_alive_count_of_0_is_refused_before_anything_changes(lab: Lab) -> None:
    inv = lab.inventory()
    inv["all"]["vars"]["hardening_ssh_client_alive_count_max"] = 0  # "never drop" since OpenSSH 8.2
    run = run_playbook(PLAYBOOK, inv)
    assert run.rc != 0
    (failure,) = run.failures
    assert failure.startswith("node1: Refuse client-alive settings that switch the dead-client check off:")
    assert "must both be above 0" in failure
    assert sum(run.changed.values()) == 0


def test_empty_ssh_source_list_is_refused_before_anything_changes(lab: Lab) -> None:
    inv = lab.inventory()
    for vars_ in inv["all"]["hosts"].values():
        vars_["hardening_ssh_allowed_sources"] = []
    run = run_playbook(PLAYBOOK, inv)
    assert run.rc != 0
    assert "hardening_ssh_allowed_sources is empty" in run.failures[0]


def test_root_login_is_refused(node: tuple[LabHost, Any]) -> None:
    test_host, host = node
    host.run_expect([0], "install -d -m 700 /root/.ssh && cp /home/ops/.ssh/authorized_keys /root/.ssh/")
    assert test_host.ssh("true", user="root").returncode == 255  # even with an authorised key
    assert test_host.ssh("true").returncode == 0


def test_firewall_drops_what_is_not_allowed(node: tuple[LabHost, Any]) -> None:
    test_host, host = node
    ruleset = host.check_output("nft list chain inet sovereign input")
    assert "policy drop" in ruleset and f"ip saddr {test_host.host_end} tcp dport 22 accept" in ruleset
    # a port a service listens on, but which the firewall does not open, is unreachable from outside
    host.run_expect([0], "systemd-run --unit=probe-listener python3 -m http.server 8088 --bind 0.0.0.0")
    try:
        assert host.run("timeout 5 bash -c 'until ss -ltn | grep -q :8088; do sleep 0.2; done'").rc == 0
        with pytest.raises(OSError):
            socket.create_connection((test_host.address, 8088), timeout=3).close()
    finally:
        host.run("systemctl stop probe-listener")


def test_a_pod_reaches_its_node_and_a_reload_keeps_the_tables_kubernetes_writes(
    node: tuple[LabHost, Any],
) -> None:
    test_host, host = node
    pod = "10.42.7.9"  # RKE2's default cluster-cidr, 10.42.0.0/16
    # kube-proxy and Canal write their own tables (iptables-nft); the role's reload must keep them
    host.run_expect([0], "nft add table ip lab-kube-proxy && nft add chain ip lab-kube-proxy probe")
    host.run_expect([0], "systemctl reload nftables")  # what the role's handler and an operator do
    assert host.run("nft list chain ip lab-kube-proxy probe").rc == 0, "a reload wiped another table"
    # a restart or a stop (an operator, a package upgrade) too: Debian's unit flushes on stop
    host.run_expect([0], "systemctl restart nftables")
    assert host.run("nft list chain ip lab-kube-proxy probe").rc == 0, "a restart wiped another table"
    assert host.run("nft list table inet sovereign").rc == 0  # and the role's own rules are back
    host.run_expect([0], "systemctl stop nftables")
    assert host.run("nft list chain ip lab-kube-proxy probe").rc == 0, "a stop wiped another table"
    host.run_expect([0], "systemctl start nftables")
    host.run("nft delete table ip lab-kube-proxy")
    # a pod's address on this machine's end of the link; the node routes it back over the link,
    # as the CNI routes its pods
    subprocess.run(["ip", "addr", "add", f"{pod}/32", "dev", test_host.link], check=True)
    host.run_expect([0], f"ip route replace {pod}/32 dev host0")
    host.run_expect([0], "systemd-run --unit=pod-probe python3 -m http.server 8089 --bind 0.0.0.0")
    try:
        assert host.run("timeout 5 bash -c 'until ss -ltn | grep -q :8089; do sleep 0.2; done'").rc == 0
        with socket.create_connection((test_host.address, 8089), timeout=5, source_address=(pod, 0)):
            pass  # accepted: pods reach their own node
        with pytest.raises(OSError):  # but never its SSH
            socket.create_connection((test_host.address, 22), timeout=3, source_address=(pod, 0)).close()
        with pytest.raises(OSError):  # the same port from a source that is neither pod nor allowed
            socket.create_connection((test_host.address, 8089), timeout=3).close()
    finally:
        host.run("systemctl stop pod-probe")
        host.run(f"ip route del {pod}/32 dev host0")
        subprocess.run(["ip", "addr", "del", f"{pod}/32", "dev", test_host.link], check=False)


def test_a_bastion_forwards_and_masquerades_only_the_private_network_to_declared_addresses(
    lab: Lab, node: tuple[LabHost, Any]
) -> None:
    _, host = node
    playbook = REPO_ROOT / "tests" / "hosts" / "playbooks" / "firewall.yml"
    bastion = lab.inventory()
    bastion["all"]["vars"] |= {
        "hardening_kubernetes_node": False,
        "hardening_nat_sources": ["10.20.0.0/16"],
        "hardening_nat_interface": "host0",
        # the declared destinations only (infra/egress.py nat_flows; documentation addresses)
        "hardening_nat_destinations": [
            {"name": "objectstorage", "cidrs": ["192.0.2.16/28"], "tcp_ports": [443], "udp_ports": []},
            {"name": "ntp", "cidrs": ["203.0.113.81/32"], "tcp_ports": [], "udp_ports": [123]},
        ],
        "hardening_private_cidrs": [],
    }
    try:
        assert run_playbook(playbook, bastion).rc == 0
        nat = host.check_output("nft list table ip sovereign_nat")
        # nft lists a rule's anonymous set in braces, a single /32 as the bare address
        assert "ip saddr 10.20.0.0/16 ip daddr { 192.0.2.16/28, 203.0.113.81 }" in nat and "masquerade" in nat
        forward = host.check_output("nft list chain inet sovereign forward")
        assert "policy drop" in forward
        assert 'ip saddr 10.20.0.0/16 ip daddr 192.0.2.16/28 oifname "host0" tcp dport 443 accept' in forward
        assert 'ip saddr 10.20.0.0/16 ip daddr 203.0.113.81 oifname "host0" udp dport 123 accept' in forward
        # never to any address
        assert 'ip saddr 10.20.0.0/16 oifname "host0" accept' not in forward
        assert host.sysctl("net.ipv4.ip_forward") == 1
        assert "tcp dport { 6443" not in host.check_output("nft list chain inet sovereign input")
    finally:  # back to a Kubernetes node, as the other tests expect
        assert run_playbook(playbook, lab.inventory()).rc == 0
    assert host.run("nft list table ip sovereign_nat").rc != 0
    assert "policy accept" in host.check_output("nft list chain inet sovereign forward")
