"""Real Debian 12 test hosts: systemd-nspawn containers booted from a debootstrap image
(../shared/TEST-HOSTS.md). The roles are converged on them over SSH, as on real servers.

- The image is built once from Debian's mirror and cached as a tarball, keyed on suite and
  package list (``~/.cache/sovereign-llm/hosts``).
- Each host boots with ``systemd -b`` in its own veth link: 10.199.<n>.2/30, host end
  10.199.<n>.1. Nothing is routed beyond the link: a guest reaches only this machine. A zone
  lab puts its hosts on one bridge instead (10.199.50.0/24, this machine .1), so a bastion
  and the nodes behind it reach each other as on the private network.
- A key-only sudo user ``ops`` is the login, as on the cloud servers.
- Packages: an apt-cacher-ng started by the lab, bound only to the host ends of the veths and
  forwarding only to Debian's mirror (``ForceManaged``); its cache persists in the cache folder.
  The image carries no package lists (debootstrap's name its build mirror, not the proxy): the
  roles fetch them, as on a new server. Where this machine's own apt needs the mirror's Release
  checks relaxed (``Acquire::Check-Valid-Until``/``Check-Date`` set false here, for a mirror that
  serves a snapshot whose Release files are past their Valid-Until), the guests get the same
  setting in their own apt.conf.d, written by the lab: the roles never relax apt's checks.
- Teardown stops exactly the nspawn processes this lab started (clean poweroff on SIGTERM,
  SIGKILL after a grace period) and removes their root folders; the veths go with them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,netbase,iproute2,sudo,"
    "ca-certificates,procps,nftables,auditd"
)
CACHE = Path(os.environ.get("SOVEREIGN_HOSTS_CACHE", Path.home() / ".cache" / "sovereign-llm" / "hosts"))
USER = "ops"
SUBNET = "10.199"
# the lab's hosts are created fresh each run: their host keys are new every time
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
ZONE_NET = 50  # 10.199.50.0/24: the bridge of a zone lab (its hosts' indexes stay below 50 elsewhere)
PROXY_PORT = 13142  # not apt-cacher-ng's 3142, which a system-wide instance may hold on 0.0.0.0
# bump when image() changes what it makes from the same suite and packages
IMAGE_RECIPE = 2
# this machine's apt settings that the guests inherit (they reach the same mirror through the proxy)
HOST_APT_CHECKS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")
APT_FALSE = ("0", "no", "false", "without", "off", "disable")
# labs share host names, subnets, the proxy's port and its cache: one lab at a time on a machine
LOCK = Path(os.environ.get("SOVEREIGN_LAB_LOCK", "/tmp/sovereign-lab.lock"))


class LabError(RuntimeError):
    pass


def _run(*argv: str, timeout: float = 600) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise LabError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-800:]}")


def host_apt_checks(dump: str | None = None) -> str:
    """The apt.conf lines that give a guest this machine's relaxed Release checks, if any.

    *dump* is ``apt-config dump`` output (read from this machine when None). Only the settings in
    HOST_APT_CHECKS, only when this machine turns them off: a guest never gets a check this
    machine keeps."""
    if dump is None:
        dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    canonical = {name.lower(): name for name in HOST_APT_CHECKS}  # apt's keys ignore case
    lines = []
    for line in dump.splitlines():
        name, _, value = line.strip().rstrip(";").partition(" ")
        # apt's StringToBool (apt-pkg/contrib/strutl.cc) reads these as false
        if name.lower() in canonical and value.strip('"').lower() in APT_FALSE:
            lines.append(f'{canonical[name.lower()]} "false";')
    return "".join(f"{line}\n" for line in sorted(set(lines)))


def image() -> Path:
    """The cached root image (a zstd tarball); built with debootstrap when missing."""
    key = hashlib.sha256(f"{SUITE}|{PACKAGES}|{IMAGE_RECIPE}".encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-{SUITE}-{key}.tar.zst"
    if tarball.exists():
        return tarball
    for tool in ("debootstrap", "systemd-nspawn", "zstd"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing: run ./scripts/bootstrap.sh (it installs the test-host tools)")
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"build-{key}"
    shutil.rmtree(build, ignore_errors=True)
    _run("debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(build), MIRROR, timeout=1200)
    for host_key in (build / "etc" / "ssh").glob("ssh_host_*"):
        host_key.unlink()
    (build / "etc" / "machine-id").write_text("")
    # debootstrap's package lists name its build mirror, which the guests do not use; left in the
    # image they only make /var/lib/apt/lists look freshly updated
    for lists in (build / "var" / "lib" / "apt" / "lists").glob("*"):
        if lists.is_file():
            lists.unlink()
    partial = tarball.with_suffix(".partial")
    _run("tar", "--zstd", "-cf", str(partial), "-C", str(build), ".")
    partial.replace(tarball)
    shutil.rmtree(build)
    return tarball


@dataclass
class LabHost:
    """One booted host. Alone on its veth (10.199.<index>.2/30), or, with *zone*, on a bridge it
    shares with the zone's other hosts (10.199.<ZONE_NET>.<index + 1>/24; systemd-nspawn's
    --network-zone), as a bastion and the nodes behind it are."""

    name: str
    index: int
    root: Path
    key: Path
    zone: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root.parent / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{ZONE_NET}.{self.index + 1}" if self.zone else f"{SUBNET}.{self.index}.2"

    @property
    def host_end(self) -> str:
        return f"{SUBNET}.{ZONE_NET}.1" if self.zone else f"{SUBNET}.{self.index}.1"

    @property
    def prefix(self) -> int:
        return 24 if self.zone else 30

    @property
    def link(self) -> str:
        """This machine's end of the host's network: its veth, or the zone's bridge."""
        return f"vz-{self.zone}"[:15] if self.zone else f"ve-{self.name}"[:15]

    @property
    def apt_mirror(self) -> str:
        return f"http://{self.host_end}:{PROXY_PORT}"

    def _prepare(self, tarball: Path) -> None:
        self.root.mkdir(parents=True)
        _run("tar", "--zstd", "-xf", str(tarball), "-C", str(self.root))
        etc = self.root / "etc"
        (etc / "hostname").write_text(f"{self.name}\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n")
        _run("chroot", str(self.root), "ssh-keygen", "-A")
        _run("chroot", str(self.root), "useradd", "-m", "-s", "/bin/bash", USER)
        ssh_dir = self.root / "home" / USER / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        _run("chroot", str(self.root), "chown", "-R", f"{USER}:{USER}", f"/home/{USER}/.ssh")
        (etc / "apt" / "sources.list").write_text(
            f"deb {self.apt_mirror}/debian {SUITE} main\n"
            f"deb {self.apt_mirror}/debian {SUITE}-updates main\n"
            f"deb {self.apt_mirror}/debian-security {SUITE}-security main\n"
        )
        if checks := host_apt_checks():
            (etc / "apt" / "apt.conf.d" / "99sovereign-lab-mirror").write_text(
                "// written by the test lab (tests/hosts/lab.py): the host machine's own apt relaxes\n"
                "// these checks for the mirror it reaches; the guests reach the same mirror\n" + checks
            )
        (etc / "sudoers.d" / USER).write_text(f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
        network = etc / "systemd" / "network"
        network.mkdir(parents=True, exist_ok=True)
        (network / "10-host0.network").write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={self.address}/{self.prefix}\n"  # no gateway
        )
        _run("chroot", str(self.root), "systemctl", "enable", "systemd-networkd")

    def start(self, tarball: Path, timeout_s: float = 60) -> None:
        self._prepare(tarball)
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-b", "-D", str(self.root), f"--machine={self.name}", "--register=no",
                 "--keep-unit", "--console=passive",
                 f"--network-zone={self.zone}" if self.zone else "--network-veth"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while subprocess.run(["ip", "link", "show", self.link], capture_output=True).returncode != 0:
            self._check_alive(deadline)
        # a zone's bridge is shared: the first of its hosts gives it this machine's address
        if (
            f"{self.host_end}/"
            not in subprocess.run(
                ["ip", "-4", "-o", "addr", "show", "dev", self.link], capture_output=True, text=True
            ).stdout
        ):
            _run("ip", "addr", "add", f"{self.host_end}/{self.prefix}", "dev", self.link)
        _run("ip", "link", "set", self.link, "up")
        while True:
            try:
                with socket.create_connection((self.address, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            self._check_alive(deadline)

    def _check_alive(self, deadline: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise LabError(f"{self.name}: systemd-nspawn exited; see {self.log}")
        if time.monotonic() > deadline:
            raise LabError(f"{self.name}: not reachable over SSH in time; see {self.log}")
        time.sleep(0.2)

    def ssh(self, command: str, user: str = USER, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", *SSH_ARGS.split(), "-o", "ConnectTimeout=5",
             f"{user}@{self.address}", command],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def ansible_vars(self) -> dict[str, Any]:
        """How Ansible reaches this host: as ``ops`` with the lab's key; SSH allowed from the host end."""
        return {
            "ansible_host": self.address,
            "ansible_user": USER,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": SSH_ARGS,
            "hardening_ssh_allowed_sources": [self.host_end],
        }

    def stop(self, grace_s: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn powers the container off cleanly
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


class PackageProxy:
    """apt-cacher-ng for the guests: listens only on the veths' host ends, fetches only from
    Debian's mirror (ForceManaged refuses every other origin), cache kept between runs."""

    def __init__(self, workdir: Path, addresses: list[str]) -> None:
        self.conf = workdir / "acng"
        self.addresses = addresses
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        if shutil.which("apt-cacher-ng") is None:
            raise LabError(
                "apt-cacher-ng is missing: run ./scripts/bootstrap.sh (it installs the test-host tools)"
            )
        cache = CACHE / "apt"
        for folder in (self.conf, cache, self.conf / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.conf / "acng.conf").write_text(
            f"CacheDir: {cache}\nLogDir: {self.conf / 'log'}\nSupportDir: /usr/lib/apt-cacher-ng\n"
            f"Port: {PROXY_PORT}\nBindAddress: {' '.join(self.addresses)}\nForceManaged: 1\n"
            "Remap-debrep: /debian ; deb.debian.org/debian\n"
            "Remap-secdeb: /debian-security ; deb.debian.org/debian-security\n"
            "ForeGround: 1\nExThreshold: 4\n"
        )
        with (self.conf / "log" / "stdout.log").open("wb") as out:
            self.proc = subprocess.Popen(
                ["apt-cacher-ng", "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection((self.addresses[0], PROXY_PORT), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise LabError(f"apt-cacher-ng did not start; see {self.conf / 'log'}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class Lab:
    """A set of test hosts in *workdir*, with their package proxy; use as a context manager."""

    def __init__(
        self, workdir: Path, names: list[str], first_index: int = 1, zone: str | None = None
    ) -> None:
        self.workdir = workdir
        self.key = workdir / "id_ed25519"
        self.hosts = [LabHost(n, first_index + i, workdir / n, self.key, zone) for i, n in enumerate(names)]
        self.proxy = PackageProxy(workdir, sorted({h.host_end for h in self.hosts}))

    def inventory(self) -> dict[str, Any]:
        """An Ansible inventory of every host, the lab's range as the private network."""
        return {
            "all": {
                "hosts": {h.name: h.ansible_vars() for h in self.hosts},
                "vars": {"hardening_private_cidrs": [f"{SUBNET}.0.0/16"]},
            }
        }

    # labs of one process (a session's lab and a module's) are made to coexist; only another
    # process's labs clash: the lock is taken by the first lab of a process, released by its last
    _lock_file: Any = None
    _lock_holders = 0

    @classmethod
    def _acquire(cls) -> None:
        if cls._lock_holders == 0:
            cls._lock_file = LOCK.open("a")
            fcntl.flock(cls._lock_file, fcntl.LOCK_EX)  # waits while another process's lab runs
        cls._lock_holders += 1

    @classmethod
    def _release(cls) -> None:
        cls._lock_holders -= 1
        if cls._lock_holders == 0 and cls._lock_file is not None:
            cls._lock_file.close()  # releases the flock
            cls._lock_file = None

    def __enter__(self) -> Lab:
        self._acquire()
        try:
            tarball = image()
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
            for host in self.hosts:
                host.start(tarball)
            self.proxy.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.proxy.stop()
            for host in self.hosts:
                host.stop()
        finally:
            self._release()
