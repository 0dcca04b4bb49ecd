"""The test-host lab itself: a real booted Debian 12 host, reachable only over its veth."""

from __future__ import annotations

import subprocess

from tests.hosts.lab import Lab, host_apt_checks


def test_host_boots_systemd_and_takes_key_logins(lab: Lab) -> None:
    (host,) = lab.hosts
    result = host.ssh("cat /etc/debian_version; ps -p 1 -o comm=; sudo -n id -u")
    assert result.returncode == 0, result.stderr
    version, init, uid = result.stdout.split()
    assert version.startswith("12.") and init == "systemd" and uid == "0"


def test_a_key_the_host_does_not_know_is_refused(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (host,) = lab.hosts
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    original = host.key
    host.key = stranger
    try:
        assert host.ssh("true").returncode == 255
    finally:
        host.key = original


def test_the_host_reaches_nothing_beyond_its_link(lab: Lab) -> None:
    (host,) = lab.hosts
    assert host.ssh("ip -4 route show default").stdout.strip() == ""
    link = host.ssh("ip -4 -o addr show dev host0").stdout
    assert f"{host.address}/30" in link
    beyond = host.ssh("timeout 3 bash -c 'echo > /dev/tcp/9.9.9.9/443' && echo open || echo unreachable")
    assert beyond.stdout.strip() == "unreachable"


def test_packages_come_through_the_lab_proxy_from_debian_only(lab: Lab) -> None:
    (host,) = lab.hosts
    update = host.ssh("sudo -n apt-get update -q", timeout=300)
    assert update.returncode == 0, update.stderr
    assert f"{host.apt_mirror}/debian-security" in update.stdout
    # the proxy forwards only to Debian's mirror: any other origin is refused
    other = host.ssh(
        f"python3 -c \"import urllib.request as u; u.urlopen('{host.apt_mirror}/pypi.org/simple/')\""
    )
    assert other.returncode != 0 and "403" in other.stderr + other.stdout


def test_the_guests_inherit_only_the_release_checks_this_machine_relaxes() -> None:
    relaxed = 'Acquire::Check-Valid-Until "false";\nacquire::check-date "off";\nAcquire::Retries "0";\n'
    assert host_apt_checks(relaxed) == 'Acquire::Check-Date "false";\nAcquire::Check-Valid-Until "false";\n'
    kept = 'Acquire::Check-Valid-Until "true";\nAPT::Sandbox::User "_apt";\n'
    assert host_apt_checks(kept) == ""  # a check this machine keeps, the guests keep too
    assert host_apt_checks("") == ""


def test_the_guests_apt_checks_match_this_machines(lab: Lab) -> None:
    (host,) = lab.hosts
    there = host.ssh("apt-config dump").stdout
    assert host_apt_checks(there) == host_apt_checks()


def test_the_image_carries_no_package_lists(lab: Lab) -> None:
    (host,) = lab.hosts
    # debootstrap's lists name the build mirror; the guests fetch their own through the proxy
    assert "deb.debian.org" not in host.ssh("ls /var/lib/apt/lists").stdout
