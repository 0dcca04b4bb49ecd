"""What every host of a region stack must show after the roles ran, checked on the host.

This suite is the one place for host state: `sovereign verify` runs it after `pulumi up`, and
tests/hosts runs it against the lab's booted Debian hosts (tests/hosts keeps only the roles'
behaviour: idempotence, refusals, failure messages). A check that needs a kernel or a GPU of its
own skips on a container or a host without one, naming the tier that checks it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra.hosts.checks.conftest import needs_kernel

KUBERNETES_GROUPS = {"control_plane", "workers", "gpu"}
# where the rke2 role unpacks the release; share/rke2/rke2-cis-sysctl.conf is RKE2's own list
# of the kernel parameters its CIS profile checks at start (docs.rke2.io/security/hardening_guide)
RKE2_CIS_SYSCTL = "/usr/local/share/rke2/rke2-cis-sysctl.conf"


def _sshd(host: Any, addr: str) -> dict[str, str]:
    out = host.check_output(f"sshd -T -C user=ops,host=check,addr={addr}")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _kubernetes_node(groups: set[str]) -> None:
    if not groups & KUBERNETES_GROUPS:
        pytest.skip("not a Kubernetes node (bastion)")


def test_sshd_is_key_only_without_root(host: Any, hardening: dict[str, Any], groups: set[str]) -> None:
    sources = hardening["hardening_ssh_allowed_sources"] or ["10.0.0.1"]
    effective = _sshd(host, str(sources[0]).split("/")[0])
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert int(effective["maxauthtries"]) == hardening["hardening_ssh_max_auth_tries"] <= 3
    assert effective["x11forwarding"] == "no"
    # the bastion forwards only what ProxyJump needs (direct-tcpip, i.e. "local"; OpenSSH's
    # serverloop.c refuses that channel under "no"); every other host forwards nothing
    assert effective["allowtcpforwarding"] == ("local" if "bastion" in groups else "no")
    assert set(effective["ciphers"].split(",")) <= set(hardening["hardening_ssh_ciphers"])
    assert all(
        c.endswith(("-gcm@openssh.com", "poly1305@openssh.com")) for c in effective["ciphers"].split(",")
    )
    assert effective["kexalgorithms"].split(",")[0] == hardening["hardening_ssh_kex"][0]
    # both above 0: OpenSSH >= 8.2 reads ClientAliveCountMax 0 as "never drop" (CIS Debian 12 5.1.x)
    assert int(effective["clientaliveinterval"]) > 0 and int(effective["clientalivecountmax"]) > 0


def test_idle_interactive_shells_end(host: Any, hardening: dict[str, Any], hostvars: dict[str, Any]) -> None:
    timeout = int(hardening["hardening_shell_timeout"])
    if timeout == 0:
        pytest.skip("hardening_shell_timeout is 0: no shell timeout configured")
    # what a login shell of the admin user gets, and that the user cannot lift it (CIS 5.4.3.2)
    user = hostvars.get("ansible_user", "ops")
    probe = "echo $TMOUT; (TMOUT=0) 2>/dev/null && echo lifted || echo kept"
    shell = host.run(f"sudo -u {user} bash -lc '{probe}'")
    assert shell.stdout.split() == [str(timeout), "kept"], shell.stdout
    assert 0 < timeout <= 900


def test_firewall_denies_by_default_and_allows_ssh_only_from_the_allowed_sources(
    host: Any, hardening: dict[str, Any]
) -> None:
    chain = host.check_output("nft list chain inet sovereign input")
    assert "policy drop" in chain
    ssh_rules = [
        line.strip()
        for line in chain.splitlines()
        if "dport 22 " in line or line.rstrip().endswith("dport 22 accept")
    ]
    assert ssh_rules and all("ip saddr" in rule for rule in ssh_rules)
    for source in hardening["hardening_ssh_allowed_sources"]:
        assert str(source) in chain
    assert host.service("nftables").is_enabled


def test_forwarding_matches_the_role_of_the_host(host: Any, groups: set[str]) -> None:
    forward = host.check_output("nft list chain inet sovereign forward")
    if groups & KUBERNETES_GROUPS:
        assert host.sysctl("net.ipv4.ip_forward") == 1 and "policy accept" in forward
    else:
        assert "policy drop" in forward


def test_network_kernel_parameters_are_live(host: Any) -> None:
    # net.* lives in the host's (or container's) own network namespace: checkable on every tier
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.conf.all.send_redirects") == 0
    assert host.sysctl("net.ipv4.tcp_syncookies") == 1


def test_journal_is_persistent_with_limits(host: Any, hardening: dict[str, Any]) -> None:
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in config
    assert f"SystemMaxUse={hardening['hardening_journal_max_use']}" in config
    assert host.file("/var/log/journal").is_directory
    assert host.check_output("find /var/log/journal -name '*.journal' | head -1")  # journald writes there


def test_audit_rules_are_configured(host: Any, hardening: dict[str, Any]) -> None:
    rules = host.file("/etc/audit/rules.d/60-sovereign-hardening.rules").content_string
    for key in ("identity", "privilege", "time-change", "modules", "secrets"):
        assert f"-k {key}" in rules
    for path in hardening["hardening_audit_secret_paths"]:
        assert f"-w {path} -p wa -k secrets" in rules
    assert host.service("auditd").is_enabled


def test_audit_rules_are_live(host: Any, container: bool) -> None:
    needs_kernel(container, "auditd needs the audit netlink")
    loaded = host.check_output("auditctl -l")
    assert "-k identity" in loaded and "-k secrets" in loaded


def test_security_upgrades_are_unattended_and_take_security_origins_only(host: Any) -> None:
    assert 'APT::Periodic::Unattended-Upgrade "1";' in host.check_output("apt-config dump APT::Periodic")
    # unattended-upgrade itself reads the configuration
    dry = host.run("unattended-upgrade --dry-run --debug 2>&1")
    assert dry.rc == 0, dry.stdout[-2000:]
    allowed = next(line for line in dry.stdout.splitlines() if line.startswith("Allowed origins are:"))
    origins = allowed.removeprefix("Allowed origins are:").split(", ")
    # Debian: label=Debian-Security; Ubuntu: the -security archives (and ESM's), never -updates
    security = re.compile(r"label=Debian-Security|archive=[a-z]+-(apps-|infra-)?security\b")
    assert origins and all(security.search(o) for o in origins), origins
    assert "nvidia-" in host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    assert host.service("apt-daily-upgrade.timer").is_enabled


def test_time_is_synced_from_the_configured_eu_servers(host: Any, hardening: dict[str, Any]) -> None:
    config = host.check_output("systemd-analyze cat-config systemd/timesyncd.conf")
    assert f"NTP={' '.join(hardening['hardening_ntp_servers'])}" in config
    assert host.service("systemd-timesyncd").is_enabled


def test_time_is_synchronised(host: Any, container: bool) -> None:
    needs_kernel(container, "timesyncd does not run in a container (the host's clock is shared)")
    assert host.check_output("timedatectl show -p NTPSynchronized --value") == "yes"


def test_system_file_permissions(host: Any) -> None:
    # CIS Debian 12 7.1.x: shadow and gshadow 0640 or stricter, owner root, group root or shadow
    for path in ("/etc/shadow", "/etc/gshadow"):
        secret = host.file(path)
        assert secret.user == "root" and secret.group in ("root", "shadow"), path
        assert secret.mode & 0o137 == 0, f"{path} {secret.mode:o}"
    for path in ("/etc/passwd", "/etc/group"):
        assert host.file(path).mode == 0o644, path
    assert host.file("/etc/ssh/sshd_config").mode == 0o600
    keys = host.check_output("find /etc/ssh -name 'ssh_host_*_key' -printf '%m %u\\n' | sort -u")
    assert keys == "600 root"


def test_unused_modules_are_disabled(host: Any, hardening: dict[str, Any]) -> None:
    config = host.file("/etc/modprobe.d/60-sovereign-hardening.conf").content_string
    for module in hardening["hardening_disabled_modules"]:
        assert f"install {module} /bin/false" in config and f"blacklist {module}" in config


def test_rke2_is_installed_and_configured(host: Any, groups: set[str]) -> None:
    _kubernetes_node(groups)
    folder, config = host.file("/etc/rancher/rke2"), host.file("/etc/rancher/rke2/config.yaml")
    assert (folder.user, folder.mode) == ("root", 0o700)
    assert (config.user, config.mode) == ("root", 0o600)
    assert "profile: cis" in config.content_string
    # RKE2's CIS profile refuses to start without these (docs.rke2.io/security/hardening_guide)
    installed = host.file("/etc/sysctl.d/60-rke2-cis.conf").content_string
    assert installed == host.file(RKE2_CIS_SYSCTL).content_string
    kind = "server" if "control_plane" in groups else "agent"
    if kind == "server":
        assert "secrets-encryption: true" in config.content_string
        assert host.user("etcd").shell == "/sbin/nologin"
    assert host.service(f"rke2-{kind}").is_enabled


def test_cis_kernel_parameters_are_live(host: Any, groups: set[str], container: bool) -> None:
    _kubernetes_node(groups)
    needs_kernel(container, "vm.* and kernel.* are host-global and read-only in a container")
    for line in host.file(RKE2_CIS_SYSCTL).content_string.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            assert str(host.sysctl(name)) == value, name


def test_rke2_is_running_and_a_server_serves_the_api(host: Any, groups: set[str], container: bool) -> None:
    _kubernetes_node(groups)
    needs_kernel(container, "RKE2 needs a kernel of its own (modules, cgroups, etcd)")
    kind = "server" if "control_plane" in groups else "agent"
    assert host.service(f"rke2-{kind}").is_running
    if kind == "server":
        kubectl = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
        # a server just converged may need a moment: wait up to a minute for the first "ok"
        wait = f"for i in $(seq 30); do {kubectl} get --raw /readyz && exit 0; sleep 2; done; exit 1"
        ready = host.run(wait)
        assert ready.rc == 0 and ready.stdout.strip() == "ok", ready.stderr


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


def test_the_container_toolkit_describes_every_gpu(host: Any, groups: set[str]) -> None:
    if "gpu" not in groups:
        pytest.skip("not a GPU host")
    assert host.exists("nvidia-container-runtime")  # RKE2's agent adds the runtime when it finds it
    devices = host.run("nvidia-ctk cdi list")
    assert devices.rc == 0, devices.stderr
    gpus = sum(1 for line in host.check_output("nvidia-smi -L").splitlines() if line.startswith("GPU "))
    assert "nvidia.com/gpu=all" in devices.stdout
    assert sum(1 for line in devices.stdout.splitlines() if line.strip().startswith("nvidia.com/gpu=")) > gpus
