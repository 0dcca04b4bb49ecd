"""In-process egress guard: refuse every outbound connection outside the allowlist.

A Python audit hook (PEP 578) sees every ``socket.connect`` and ``socket.getaddrinfo`` made
by Python code in this process, including those of httpx, hvac and any library a future
change pulls in. Names are checked against the allowlist before they are resolved (no DNS
lookups of outside names), and addresses are checked before the connect: an address passes
when it is inside an allowlisted CIDR or is one of the addresses that the configured
destinations resolved to at start. Anything else raises ``PermissionError`` and is counted.

Audit hooks cannot be removed; :func:`install` is idempotent and later calls update the
allowlist. The hook only sees connects made through Python's socket module, so the gateway
runs on the standard asyncio event loop (uvloop connects inside libuv, unseen). The network
namespace in the boundary proof is the second, kernel-level line of defence.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from typing import Any

from prometheus_client import Counter

from gateway.settings import host_allowed

log = logging.getLogger("sovereign.egress")

EGRESS_REFUSED = Counter(
    "sovereign_egress_refused_total",
    "Outbound connections or lookups refused because the destination is not allowlisted.",
    ["kind"],
)
for _kind in ("connect", "lookup"):
    EGRESS_REFUSED.labels(kind=_kind)  # exported as 0 from the start, so "none refused" is visible

_state: dict[str, Any] = {"installed": False, "allowlist": [], "addresses": set()}


def _resolve(host: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}


def _address_allowed(ip: str) -> bool:
    if ip in _state["addresses"]:
        return True
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return host_allowed(ip, _state["allowlist"])


def _refuse(kind: str, destination: str) -> None:
    EGRESS_REFUSED.labels(kind=kind).inc()
    log.warning("egress refused: %s to %s is not on the allowlist", kind, destination)
    raise PermissionError(f"egress to {destination} refused: not on the gateway's egress allowlist")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        host = args[0]
        if host is None:
            return
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not host_allowed(name, _state["allowlist"]) and not _address_allowed(name):
            _refuse("lookup", name)
    elif event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            return  # unix sockets and netlink stay local by construction
        ip = str(address[0])
        if not _address_allowed(ip):
            _refuse("connect", f"{ip}:{address[1]}")


def install(allowlist: list[str], destinations: list[str]) -> None:
    """Allow *allowlist* entries plus the current addresses of *destinations*; refuse the rest."""
    addresses: set[str] = set()
    for host in destinations:
        addresses |= _resolve(host)
    _state["allowlist"] = list(allowlist)
    _state["addresses"] = addresses
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True
