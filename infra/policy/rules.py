"""Residency and isolation rules, checked over every resource's inputs.

The same functions run in two places: ``sovereign plan`` applies them to the resources the
program registers under Pulumi's mocks, and the policy pack (``infra/policy/__main__.py``,
``pulumi preview --policy-pack infra/policy``) applies them during a real preview or update.
They see resources as the engine does: type tokens and wire property names (camelCase).
The stack config validation catches the same mistakes earlier; these rules are the second,
independent layer, so a program change that bypasses the config still cannot plan cleanly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from infra import residency

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
LB_NETWORK = "hcloud:index/loadBalancerNetwork:LoadBalancerNetwork"
SUBNET = "hcloud:index/networkSubnet:NetworkSubnet"
# hcloud resources that take labels (all of them must carry the residency labels)
LABELLED = frozenset(
    {
        SERVER,
        FIREWALL,
        "hcloud:index/network:Network",
        "hcloud:index/placementGroup:PlacementGroup",
        "hcloud:index/loadBalancer:LoadBalancer",
        "hcloud:index/sshKey:SshKey",
        "hcloud:index/volume:Volume",
        "hcloud:index/floatingIp:FloatingIp",
        "hcloud:index/primaryIp:PrimaryIp",
    }
)
REQUIRED_LABELS = ("residency", "data-classification", "jurisdiction", "stack")


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


Rule = Callable[[str, str, Mapping[str, Any]], list[str]]


def eu_location(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Every location, network zone and data centre is in the EU."""
    problems = []
    location = props.get("location")
    if location is not None and location not in residency.HCLOUD_EU_LOCATIONS:
        problems.append(f"location {location!r} is outside the EU; {residency.ART_44}")
    zone = props.get("networkZone")
    if zone is not None and zone not in residency.HCLOUD_EU_NETWORK_ZONES:
        problems.append(f"network zone {zone!r} is outside the EU; {residency.ART_44}")
    datacenter = props.get("datacenter")
    if datacenter and not str(datacenter).startswith(tuple(residency.HCLOUD_EU_LOCATIONS)):
        problems.append(f"datacenter {datacenter!r} is outside the EU; {residency.ART_44}")
    if type_.startswith("hcloud:") and type_ == SERVER and location is None and not datacenter:
        problems.append("server has no location: Hetzner would pick one, possibly outside the EU")
    return problems


def residency_labels(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Every resource that takes labels carries residency=eu and its data classification."""
    if type_ not in LABELLED:
        return []
    labels = props.get("labels") or {}
    missing = [k for k in REQUIRED_LABELS if not labels.get(k)]
    problems = [f"missing label(s) {', '.join(missing)}"] if missing else []
    if labels.get("residency") not in (None, "eu"):
        problems.append(f"label residency={labels['residency']!r}, must be 'eu'")
    return problems


def private_nodes(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Only the bastion has a public address; every other server is private-network only."""
    if type_ != SERVER:
        return []
    role = (props.get("labels") or {}).get("role")
    nets = props.get("publicNets") or []
    if not nets:
        return ["no publicNets given: Hetzner then assigns a public IPv4 and IPv6"]
    ipv4 = any(n.get("ipv4Enabled", True) for n in nets)
    ipv6 = any(n.get("ipv6Enabled", True) for n in nets)
    if role == "bastion":
        return ["bastion has an IPv6 address; only its IPv4 is firewalled for SSH"] if ipv6 else []
    problems = []
    if ipv4:
        problems.append(f"role {role!r} has a public IPv4; nodes reach out through the bastion NAT")
    if ipv6:
        problems.append(f"role {role!r} has a public IPv6")
    if not props.get("networks"):
        problems.append("not attached to the private network")
    return problems


def _opens_to_world(source: str) -> bool:
    try:
        return ipaddress.ip_network(source, strict=False).prefixlen < 8
    except ValueError:
        return True


def firewall_rules(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Inbound rules never open to the internet; SSH only on the bastion."""
    if type_ != FIREWALL:
        return []
    problems = []
    for rule in props.get("rules") or []:
        if rule.get("direction") != "in":
            continue
        port = str(rule.get("port") or "any")
        wide = [s for s in rule.get("sourceIps") or [] if _opens_to_world(s)]
        if wide:
            problems.append(f"inbound {rule.get('protocol')}/{port} open to {', '.join(wide)}")
        selectors = " ".join(a.get("labelSelector", "") for a in props.get("applyTos") or [])
        if port == "22" and "role=bastion" not in selectors:
            problems.append("SSH allowed on servers other than the bastion")
    return problems


def private_load_balancer(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """The gateway's load balancer has no public interface."""
    if type_ == LB_NETWORK and props.get("enablePublicInterface", True):
        return ["load balancer keeps its public interface; set enable_public_interface=False"]
    return []


RULES: dict[str, Rule] = {
    "eu-location": eu_location,
    "residency-labels": residency_labels,
    "private-nodes": private_nodes,
    "firewall-deny-by-default": firewall_rules,
    "private-load-balancer": private_load_balancer,
}


def check(type_: str, name: str, props: Mapping[str, Any]) -> list[Violation]:
    return [Violation(rule, name, msg) for rule, fn in RULES.items() for msg in fn(type_, name, props)]
