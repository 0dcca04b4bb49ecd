"""In-process egress guard: refuse every outbound connection outside the allowlist.

A Python audit hook (PEP 578) sees every ``socket.connect`` and ``socket.getaddrinfo`` made
by Python code in this process, including those of httpx, hvac and any library a future
change pulls in. Names are checked against the allowlist before they are resolved (no DNS
lookups of outside names), and addresses are checked before the connect: an address passes
when it is inside an allowlisted CIDR or is one of the addresses that the configured
destinations resolved to at start. Anything else raises ``PermissionError`` and is counted.

Audit hooks cannot be removed; :func:`install` is idempotent and later calls update the
allowlist. The hook only sees connects made through Python's socket module: uvloop, the
gateway's event loop, connects and looks up names inside libuv, unseen. So the gateway runs on
:class:`GuardedLoop`, uvloop's loop with the same checks on its own connects and lookups
(``create_connection``, ``sock_connect``, ``create_datagram_endpoint``, ``create_server``,
``getaddrinfo``; a datagram endpoint without a remote address is refused, since its ``sendto``
goes out through libuv unchecked): the hook for every connect and datagram through the socket
module, the loop for every connect through the loop. Not covered: ``getnameinfo`` (a reverse
lookup of an address the process already has).
The network namespace in the boundary proof is the second, kernel-level line of defence.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

import uvloop
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


def check_lookup(host: str | bytes | None) -> None:
    """Refuse a name lookup of *host* unless the allowlist holds it (or it is an allowed address)."""
    if host is None:
        return
    name = host.decode() if isinstance(host, bytes) else str(host)
    if not host_allowed(name, _state["allowlist"]) and not _address_allowed(name):
        _refuse("lookup", name)


def check_connect(family: int, address: Any) -> None:
    """Refuse a connect to *address* (an IP address and port) unless the address is allowed."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets and netlink stay local by construction
    ip = str(address[0])
    if not _address_allowed(ip):
        _refuse("connect", f"{ip}:{address[1]}")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        check_lookup(args[0])
    elif event == "socket.connect":
        sock, address = args
        check_connect(getattr(sock, "family", -1), address)
    elif event in ("socket.sendto", "socket.sendmsg"):  # a datagram to an address of its own
        sock, address = args
        if address is not None:
            check_connect(getattr(sock, "family", -1), address)


def _literal(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])  # an IPv6 scope ("fe80::1%eth0") aside
    except ValueError:
        return False
    return True


class GuardedLoop(uvloop.Loop):
    """uvloop's event loop, whose own connects and name lookups (made in libuv, where the audit
    hook does not see them) pass the same checks as the hook's: a name is checked before it is
    resolved, every address before it is connected to. A name given to ``create_connection`` is
    resolved here (checked) and its addresses tried in turn, as asyncio's loop does; a name given
    to ``sock_connect`` or as a datagram's remote address is resolved here too, and its first
    address used (uvloop and asyncio take the first). With no allowlist installed the loop is
    uvloop's, unchanged."""

    async def getaddrinfo(self, host: Any, port: Any, **kwargs: Any) -> Any:
        if _state["installed"]:
            check_lookup(host)
        return await super().getaddrinfo(host, port, **kwargs)

    @staticmethod
    def _check_names(hosts: Any) -> None:
        """A local name to bind to (``local_addr``, a server's host) is still looked up by libuv."""
        if not _state["installed"]:
            return
        for host in [hosts] if isinstance(hosts, str | bytes) else list(hosts or []):
            if not _literal(host) and host not in ("", b""):
                check_lookup(host)

    async def create_server(
        self, protocol_factory: Callable[[], Any], host: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        self._check_names(host)
        return await super().create_server(protocol_factory, host, *args, **kwargs)

    async def _first_address(self, family: int, address: Any, type_: int) -> Any:
        if family not in (0, socket.AF_INET, socket.AF_INET6):
            return address  # a unix socket's path: local by construction
        if _literal(address[0]):
            check_connect(socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET, address)
            return address
        infos = await self.getaddrinfo(address[0], address[1], family=family, type=type_)
        check_connect(infos[0][0], infos[0][4])
        return infos[0][4]

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        if _state["installed"]:
            address = await self._first_address(sock.family, address, sock.type)
        return await super().sock_connect(sock, address)

    async def create_connection(
        self, protocol_factory: Callable[[], Any], host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        self._check_names((kwargs.get("local_addr") or (None,))[0])
        if not _state["installed"] or host is None:
            sock = kwargs.get("sock")
            if _state["installed"] and sock is not None:
                check_connect(sock.family, sock.getpeername())  # connected elsewhere: still checked
            return await super().create_connection(protocol_factory, host, port, **kwargs)
        if _literal(host):
            check_connect(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, (host, port))
            return await super().create_connection(protocol_factory, host, port, **kwargs)
        infos = await self.getaddrinfo(
            host,
            port,
            family=kwargs.get("family", 0),
            type=socket.SOCK_STREAM,
            proto=kwargs.get("proto", 0),
            flags=kwargs.get("flags", 0),
        )
        if kwargs.get("ssl") and kwargs.get("server_hostname") is None:
            kwargs["server_hostname"] = host  # the certificate is still checked against the name
        errors: list[OSError] = []
        for family, _, _, _, address in infos:
            try:
                check_connect(family, address)
                return await super().create_connection(
                    protocol_factory, address[0], address[1], **{**kwargs, "family": family}
                )
            except ssl.SSLError:
                raise  # the address answered: its certificate or handshake failed, no retry
            except OSError as exc:  # PermissionError too: the next address, as asyncio does
                errors.append(exc)
        if not errors:
            raise OSError(f"getaddrinfo({host!r}) returned no address")
        if len(errors) == 1:
            raise errors[0]
        raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: Any = None,
        remote_addr: Any = None,
        **kwargs: Any,
    ) -> Any:
        self._check_names((local_addr or (None,))[0])
        sock = kwargs.get("sock")
        if _state["installed"] and remote_addr is not None:
            remote_addr = await self._first_address(kwargs.get("family", 0), remote_addr, socket.SOCK_DGRAM)
        elif _state["installed"] and sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                check_connect(sock.family, sock.getpeername())
            except OSError as exc:
                if isinstance(exc, PermissionError):
                    raise
                _unconnected()
        elif _state["installed"] and kwargs.get("family", 0) != socket.AF_UNIX and sock is None:
            _unconnected()
        return await super().create_datagram_endpoint(protocol_factory, local_addr, remote_addr, **kwargs)


def _unconnected() -> None:
    """A datagram endpoint without a remote address sends wherever each ``sendto`` says, in
    libuv, unchecked: the guarded loop makes none (the gateway uses no UDP)."""
    EGRESS_REFUSED.labels(kind="connect").inc()
    log.warning("egress refused: a datagram endpoint without a remote address")
    raise PermissionError(
        "egress refused: a datagram endpoint without remote_addr could send to any address; "
        "give remote_addr (an allowlisted destination)"
    )


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
