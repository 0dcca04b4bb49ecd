"""Input checks and derived names for the vswitch role (the host side of a Hetzner vSwitch).

Plain ``ipaddress`` arithmetic, kept out of Jinja so that it is unit-tested
(tests/infra/test_vswitch.py). Every problem names the variable, what is wrong and how to fix
it, and never repeats the value it was given.

Hetzner's rules it applies:

- VLAN ids of a vSwitch are 4000-4091
  (https://docs.hetzner.com/robot/dedicated-server/network/vswitch, "How do I create a vSwitch?").
- The vSwitch interface's MTU must be at most 1400 (same page, server configuration).
- In a vSwitch subnet of a Cloud Network the first usable address is the vSwitch gateway, the
  router to the rest of the network; a dedicated server routes the whole network through it
  (https://docs.hetzner.com/networking/networks/technical-concepts/architecture, "Example routes":
  10.0.0.0/16 via 10.0.1.1 on the dedicated server, 10.0.1.0/24 on-link).
"""

from __future__ import annotations

import ipaddress
from typing import Any

VLAN_IDS = range(4000, 4092)  # 4000-4091
MAX_MTU = 1400
IFNAMSIZ = 15  # Linux interface names: at most 15 characters (IFNAMSIZ 16 with the NUL)


def _network(value: Any) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        return None


def _address(value: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        return None


def vswitch_gateway(subnet: Any) -> str:
    """The vSwitch gateway of *subnet*: its first usable address (Hetzner's router), or ''."""
    net = _network(subnet)
    return str(net.network_address + 1) if net is not None and net.num_addresses > 2 else ""


def vswitch_interface_name(parent: Any, vlan_id: Any) -> str:
    """``<parent>.<vlan id>`` (what Hetzner's examples and ``ip`` use), or ``vlan<id>`` when that
    is longer than Linux allows (long predictable names such as enp193s0f0np0)."""
    name = f"{parent}.{vlan_id}"
    return name if len(name) <= IFNAMSIZ else f"vlan{vlan_id}"


def vswitch_problems(
    vlan_id: Any,
    address: Any,
    subnet: Any,
    cloud_network: Any,
    gateway: Any,
    mtu: Any,
    interface: Any,
    parent: Any,
    interfaces: list[str] | None = None,
) -> list[str]:
    """Every problem with the role's inputs; an empty list when they are usable."""
    problems: list[str] = []
    try:
        vid = int(vlan_id)
    except (TypeError, ValueError):
        vid = -1
    if isinstance(vlan_id, bool) or vid not in VLAN_IDS:
        problems.append(
            "vswitch_vlan_id: not a vSwitch VLAN id; Hetzner's are 4000-4091. Use the VLAN id of the "
            "vSwitch in Robot (the stack's gpu_pool.vlan_id)"
        )
    net = _network(subnet)
    if net is None:
        problems.append(
            "vswitch_subnet: not an IPv4 network in CIDR form (host bits clear). Use the stack's "
            "network.vswitch_subnet, e.g. 10.20.2.0/24"
        )
    cloud = _network(cloud_network)
    if cloud is None:
        problems.append(
            "vswitch_cloud_network: not an IPv4 network in CIDR form. Use the stack's network.ip_range, "
            "e.g. 10.20.0.0/16"
        )
    elif net is not None and not net.subnet_of(cloud):
        problems.append(
            "vswitch_subnet: not inside vswitch_cloud_network; the vSwitch subnet is a subnet of the "
            "Cloud Network. Check network.vswitch_subnet and network.ip_range of the stack"
        )
    ip = _address(address)
    gw = _address(gateway)
    if ip is None:
        problems.append(
            "vswitch_address: not an IPv4 address. Set the server's private_ip "
            "(gpu_pool.servers[].private_ip)"
        )
    elif net is not None:
        if ip not in net:
            problems.append(
                "vswitch_address: not inside vswitch_subnet. Give the server an address of "
                "network.vswitch_subnet (gpu_pool.servers[].private_ip)"
            )
        elif ip in (net.network_address, net.broadcast_address):
            problems.append(
                "vswitch_address: the network or broadcast address of vswitch_subnet. Pick a host address"
            )
        elif gw is not None and ip == gw:
            problems.append(
                "vswitch_address: the vSwitch gateway's address (Hetzner reserves the subnet's first "
                "usable address for it). Pick another host address of vswitch_subnet"
            )
    if gw is None:
        problems.append(
            "vswitch_gateway: not an IPv4 address. Leave it empty for Hetzner's vSwitch gateway (the "
            "first usable address of vswitch_subnet)"
        )
    elif net is not None and gw not in net:
        problems.append(
            "vswitch_gateway: not inside vswitch_subnet; the route to the Cloud Network goes through the "
            "vSwitch gateway on the link. Leave it empty for Hetzner's (the subnet's first usable address)"
        )
    try:
        mtu_value = int(mtu)
    except (TypeError, ValueError):
        mtu_value = -1
    if isinstance(mtu, bool) or not 576 <= mtu_value <= MAX_MTU:
        problems.append(
            "vswitch_mtu: outside 576-1400; Hetzner's vSwitch carries at most 1400 bytes. Use 1400"
        )
    name = str(interface)
    if not name or len(name) > IFNAMSIZ or any(c in name for c in " /:") or name in (".", ".."):
        problems.append(
            "vswitch_interface: not a usable Linux interface name (1-15 characters, no blank, '/' or ':'). "
            "Leave it empty for <parent>.<vlan id>"
        )
    if not str(parent):
        problems.append(
            "vswitch_parent_interface: empty, and the host has no default route to take it from. Set it "
            "to the NIC that carries the server's main IP (the vSwitch uses that uplink)"
        )
    elif interfaces is not None and str(parent) not in interfaces:
        problems.append(
            "vswitch_parent_interface: no such interface on this host. Set it to the NIC that carries "
            "the server's main IP (see `ip -br link`)"
        )
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "vswitch_problems": vswitch_problems,
            "vswitch_gateway": vswitch_gateway,
            "vswitch_interface_name": vswitch_interface_name,
        }
