"""A network namespace with only loopback, in which nftables records every connection attempt.

The namespace has no interface but ``lo``, so nothing can leave it. On its own that would also
hide an attempt: a connect() to an outside address fails with "network unreachable" before any
packet exists, and nothing could observe it. So every IPv4 and IPv6 address is routed *local*
(``local 0.0.0.0/0 dev lo``): an attempt to reach 203.0.113.5:443 becomes a real packet on
loopback, nftables' output hook records its destination (address, protocol, port) in a set,
and the kernel answers it with a refusal (nobody listens there). Every new connection or
datagram flow, TCP, UDP (DNS too) or anything else, from any process in the namespace.

Processes started from a thread that has entered the namespace (``Namespace.entered``) live in
it, and so do the sockets that thread opens. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and
``nft`` (scripts/bootstrap.sh installs nftables).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

CLONE_NEWNET = 0x40000000

RULESET = """
table inet observe {
  set v4 { type ipv4_addr . inet_proto . inet_service; flags dynamic; }
  set v6 { type ipv6_addr . inet_proto . inet_service; flags dynamic; }
  chain output {
    type filter hook output priority 0; policy accept;
    ct state new counter
    ct state new meta nfproto ipv4 add @v4 { ip daddr . meta l4proto . th dport }
    ct state new meta nfproto ipv6 add @v6 { ip6 daddr . meta l4proto . th dport }
  }
}
"""


class Destination(NamedTuple):
    address: str
    protocol: str  # "tcp", "udp", ... (nft's name, or the protocol number)
    port: int


def unavailable() -> str:
    """Why this machine cannot make an observed namespace ("" when it can)."""
    if os.geteuid() != 0:
        return "network namespaces and nftables need root"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    return f"missing {' and '.join(missing)} (scripts/bootstrap.sh installs them)" if missing else ""


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass(frozen=True)
class Namespace:
    name: str

    def _run(self, *argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def nft(self, *argv: str, stdin: str | None = None) -> str:
        return self._run("ip", "netns", "exec", self.name, "nft", *argv, stdin=stdin)

    def interfaces(self) -> list[str]:
        return [link["ifname"] for link in json.loads(self._run("ip", "-n", self.name, "-j", "link"))]

    def attempts(self) -> set[Destination]:
        """Every destination something in the namespace tried to reach so far."""
        seen = set()
        for family in ("v4", "v6"):
            listing = json.loads(self.nft("-j", "list", "set", "inet", "observe", family))["nftables"]
            for entry in listing:
                for element in entry.get("set", {}).get("elem", []):
                    address, protocol, port = element["concat"]
                    seen.add(Destination(address, str(protocol), int(port)))
        return seen

    def forget(self) -> None:
        """Start recording destinations afresh (the connection counter keeps counting)."""
        for family in ("v4", "v6"):
            self.nft("flush", "set", "inet", "observe", family)

    def new_connections(self) -> int:
        """How many new connections and flows the namespace has made, allowed or not."""
        chain = json.loads(self.nft("-j", "list", "chain", "inet", "observe", "output"))["nftables"]
        rules = [entry["rule"] for entry in chain if "rule" in entry]
        return sum(e["counter"]["packets"] for r in rules for e in r["expr"] if "counter" in e)

    @contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread inside the namespace for the block (and the processes and
        threads it starts, for their whole life); back home afterwards."""
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)


@contextmanager
def observed_namespace(prefix: str) -> Iterator[Namespace]:
    """A fresh namespace (only ``lo``, every address routed to it, nftables recording every
    new connection), deleted afterwards (stop the processes started in it first)."""
    ns = Namespace(f"{prefix}-{os.getpid()}")
    ns._run("ip", "netns", "add", ns.name)
    try:
        ns._run("ip", "-n", ns.name, "link", "set", "lo", "up")
        ns._run("ip", "-n", ns.name, "route", "add", "local", "0.0.0.0/0", "dev", "lo")
        ns._run("ip", "-n", ns.name, "-6", "route", "add", "local", "::/0", "dev", "lo")
        ns.nft("-f", "-", stdin=RULESET)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False)
