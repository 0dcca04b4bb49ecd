"""The hardening role, converged through ansible-runner on a real booted Debian 12 host, then
verified by behaviour with testinfra (../shared/TEST-HOSTS.md)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import testinfra

from infra.hosts.content import REPO_ROOT
from infra.hosts.converge import PlaybookRun, run_playbook
from tests.hosts.lab import SSH_ARGS, USER, Lab, LabHost

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


def test_empty_ssh_source_list_is_refused_before_anything_changes(lab: Lab) -> None:
    inv = lab.inventory()
    for vars_ in inv["all"]["hosts"].values():
        vars_["hardening_ssh_allowed_sources"] = []
    run = run_playbook(PLAYBOOK, inv)
    assert run.rc != 0
    assert "hardening_ssh_allowed_sources is empty" in run.failures[0]


def test_sshd_effective_settings(node: tuple[LabHost, Any]) -> None:
    _, host = node
    effective = dict(
        line.split(" ", 1)
        for line in host.check_output("sshd -T -C user=ops,host=x,addr=10.199.1.1").splitlines()
    )
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["maxauthtries"] == "3"
    assert effective["x11forwarding"] == "no"
    assert set(effective["ciphers"].split(",")) <= {
        "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"
    }  # fmt: skip
    assert effective["kexalgorithms"].startswith("sntrup761x25519-sha512@openssh.com")


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


def test_kernel_parameters_know_this_is_a_kubernetes_node(node: tuple[LabHost, Any]) -> None:
    _, host = node
    config = host.file("/etc/sysctl.d/60-sovereign-hardening.conf").content_string
    assert "net.ipv4.ip_forward = 1" in config and "net.ipv4.conf.all.accept_redirects = 0" in config
    # net.* lives in the container's own network namespace: the live values are checkable here
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.ip_forward") == 1


def test_journal_is_persistent_with_limits(node: tuple[LabHost, Any]) -> None:
    _, host = node
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in config and "SystemMaxUse=1G" in config
    assert host.file("/var/log/journal").is_directory
    assert host.check_output("find /var/log/journal -name '*.journal' | head -1")  # journald writes there now


def test_audit_rules_are_written_and_auditd_enabled(node: tuple[LabHost, Any]) -> None:
    _, host = node
    rules = host.file("/etc/audit/rules.d/60-sovereign-hardening.rules").content_string
    for key in ("identity", "privilege", "time-change", "modules", "secrets"):
        assert f"-k {key}" in rules
    assert "-w /etc/rancher/rke2 -p wa -k secrets" in rules
    assert host.service("auditd").is_enabled


def test_audit_rules_are_live() -> None:
    pytest.skip("VM/GPU tier: auditd cannot run in a container (no audit netlink); checked on real hosts")


def test_unused_modules_cannot_load(node: tuple[LabHost, Any]) -> None:
    _, host = node
    config = host.file("/etc/modprobe.d/60-sovereign-hardening.conf").content_string
    assert "install usb-storage /bin/false" in config and "blacklist cramfs" in config


def test_unattended_upgrades_take_security_origins_only(node: tuple[LabHost, Any]) -> None:
    _, host = node
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    # unattended-upgrade itself reads the configuration (through the lab's package proxy)
    dry = host.run("unattended-upgrade --dry-run --debug 2>&1")
    assert dry.rc == 0, dry.stdout[-2000:]
    allowed = next(line for line in dry.stdout.splitlines() if line.startswith("Allowed origins are:"))
    origins = allowed.removeprefix("Allowed origins are:").split(", ")
    assert origins and all(o.strip().endswith("label=Debian-Security") for o in origins), origins
    assert "nvidia-" in host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    assert host.service("apt-daily-upgrade.timer").is_enabled


def test_time_is_synced_from_eu_servers(node: tuple[LabHost, Any]) -> None:
    _, host = node
    config = host.check_output("systemd-analyze cat-config systemd/timesyncd.conf")
    assert "NTP=ntp1.hetzner.de ntp2.hetzner.com ntp3.hetzner.net" in config
    assert host.service("systemd-timesyncd").is_enabled


def test_time_sync_is_live() -> None:
    pytest.skip("VM/GPU tier: systemd-timesyncd does not run in a container (the host's clock is shared)")


def test_system_file_permissions(node: tuple[LabHost, Any]) -> None:
    _, host = node
    shadow = host.file("/etc/shadow")
    assert (shadow.user, shadow.group, shadow.mode) == ("root", "shadow", 0o640)
    assert host.file("/etc/passwd").mode == 0o644
    assert host.file("/etc/ssh/sshd_config").mode == 0o600
    keys = host.check_output("find /etc/ssh -name 'ssh_host_*_key' -printf '%m %u\\n' | sort -u")
    assert keys == "600 root"


def test_a_bastion_forwards_and_masquerades_only_the_private_network(
    lab: Lab, node: tuple[LabHost, Any]
) -> None:
    _, host = node
    playbook = REPO_ROOT / "tests" / "hosts" / "playbooks" / "firewall.yml"
    bastion = lab.inventory()
    bastion["all"]["vars"] |= {
        "hardening_kubernetes_node": False,
        "hardening_nat_sources": ["10.20.0.0/16"],
        "hardening_nat_interface": "host0",
        "hardening_private_cidrs": [],
    }
    try:
        assert run_playbook(playbook, bastion).rc == 0
        nat = host.check_output("nft list table ip sovereign_nat")
        assert 'ip saddr 10.20.0.0/16 oifname "host0" masquerade' in nat
        forward = host.check_output("nft list chain inet sovereign forward")
        assert "policy drop" in forward and 'ip saddr 10.20.0.0/16 oifname "host0" accept' in forward
        assert host.sysctl("net.ipv4.ip_forward") == 1
        assert "tcp dport { 6443" not in host.check_output("nft list chain inet sovereign input")
    finally:  # back to a Kubernetes node, as the other tests expect
        assert run_playbook(playbook, lab.inventory()).rc == 0
    assert host.run("nft list table ip sovereign_nat").rc != 0
    assert "policy accept" in host.check_output("nft list chain inet sovereign forward")
