"""What every host of a region stack must show after the roles ran, checked on the host."""

from __future__ import annotations

from typing import Any

import pytest

from infra.hosts.checks.conftest import needs_kernel

KUBERNETES_GROUPS = {"control_plane", "workers", "gpu"}


def _sshd(host: Any, addr: str) -> dict[str, str]:
    out = host.check_output(f"sshd -T -C user=ops,host=check,addr={addr}")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_sshd_is_key_only_without_root(host: Any, hostvars: dict[str, Any]) -> None:
    sources = hostvars.get("hardening_ssh_allowed_sources") or ["10.0.0.1"]
    effective = _sshd(host, str(sources[0]).split("/")[0])
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert int(effective["maxauthtries"]) <= 3
    assert effective["x11forwarding"] == "no" and effective["allowtcpforwarding"] == "no"
    assert all(
        c.endswith(("-gcm@openssh.com", "poly1305@openssh.com")) for c in effective["ciphers"].split(",")
    )


def test_firewall_denies_by_default_and_allows_ssh_only_from_the_allowed_sources(
    host: Any, hostvars: dict[str, Any]
) -> None:
    chain = host.check_output("nft list chain inet sovereign input")
    assert "policy drop" in chain
    ssh_rules = [
        line.strip()
        for line in chain.splitlines()
        if "dport 22 " in line or line.rstrip().endswith("dport 22 accept")
    ]
    assert ssh_rules and all("ip saddr" in rule for rule in ssh_rules)
    for source in hostvars.get("hardening_ssh_allowed_sources", []):
        assert str(source) in chain
    assert host.service("nftables").is_enabled


def test_forwarding_matches_the_role_of_the_host(host: Any, groups: set[str]) -> None:
    forward = host.check_output("nft list chain inet sovereign forward")
    if groups & KUBERNETES_GROUPS:
        assert host.sysctl("net.ipv4.ip_forward") == 1 and "policy accept" in forward
    else:
        assert "policy drop" in forward


def test_network_kernel_parameters_are_live(host: Any) -> None:
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.conf.all.send_redirects") == 0
    assert host.sysctl("net.ipv4.tcp_syncookies") == 1


def test_journal_is_persistent(host: Any) -> None:
    assert "Storage=persistent" in host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert host.file("/var/log/journal").is_directory


def test_audit_rules_are_configured(host: Any) -> None:
    rules = host.file("/etc/audit/rules.d/60-sovereign-hardening.rules").content_string
    for key in ("identity", "privilege", "time-change", "modules", "secrets"):
        assert f"-k {key}" in rules
    assert host.service("auditd").is_enabled


def test_audit_rules_are_live(host: Any, container: bool) -> None:
    needs_kernel(container, "auditd needs the audit netlink")
    loaded = host.check_output("auditctl -l")
    assert "-k identity" in loaded and "-k secrets" in loaded


def test_security_upgrades_are_unattended(host: Any) -> None:
    assert 'Unattended-Upgrade "1"' in host.check_output("apt-config dump APT::Periodic")
    origins = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    assert "security" in origins.lower()
    assert host.service("apt-daily-upgrade.timer").is_enabled


def test_time_sync_is_configured(host: Any) -> None:
    assert "NTP=" in host.check_output("systemd-analyze cat-config systemd/timesyncd.conf")
    assert host.service("systemd-timesyncd").is_enabled


def test_time_is_synchronised(host: Any, container: bool) -> None:
    needs_kernel(container, "timesyncd does not run in a container")
    assert host.check_output("timedatectl show -p NTPSynchronized --value") == "yes"


def test_system_file_permissions(host: Any) -> None:
    shadow = host.file("/etc/shadow")
    assert shadow.user == "root" and shadow.mode & 0o027 == 0
    assert host.file("/etc/ssh/sshd_config").mode == 0o600


def test_unused_modules_are_disabled(host: Any) -> None:
    assert (
        "install usb-storage /bin/false"
        in host.file("/etc/modprobe.d/60-sovereign-hardening.conf").content_string
    )


def test_rke2_is_installed_and_configured(host: Any, groups: set[str]) -> None:
    if not groups & KUBERNETES_GROUPS:
        pytest.skip("not a Kubernetes node (bastion)")
    config = host.file("/etc/rancher/rke2/config.yaml")
    assert (config.user, config.mode) == ("root", 0o600)
    assert "profile: cis" in config.content_string
    kind = "server" if "control_plane" in groups else "agent"
    assert host.service(f"rke2-{kind}").is_enabled


def test_rke2_is_running(host: Any, groups: set[str], container: bool) -> None:
    if not groups & KUBERNETES_GROUPS:
        pytest.skip("not a Kubernetes node (bastion)")
    needs_kernel(container, "RKE2 cannot run in a container")
    kind = "server" if "control_plane" in groups else "agent"
    assert host.service(f"rke2-{kind}").is_running


def test_gpus_are_served_by_the_pinned_driver(host: Any, groups: set[str], hostvars: dict[str, Any]) -> None:
    if "gpu" not in groups:
        pytest.skip("not a GPU host")
    smi = host.run("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader")
    assert smi.rc == 0, smi.stderr
    branch = str(hostvars.get("nvidia_gpu_driver_branch", "580"))
    lines = smi.stdout.strip().splitlines()
    assert len(lines) == int(hostvars.get("gpu_count", len(lines)))
    assert all(line.rsplit(", ", 1)[-1].startswith(branch + ".") for line in lines)
    assert host.service("nvidia-persistenced").is_running
