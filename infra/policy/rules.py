"""Residency and isolation rules, checked over every resource's inputs.

The same functions run in two places: ``sovereign plan`` applies them to the resources the
program registers under Pulumi's mocks, and the policy pack (``infra/policy/__main__.py``,
``pulumi preview --policy-pack infra/policy``) applies them during a real preview or update.
They see resources as the engine does: type tokens and wire property names (camelCase).
The stack config validation catches the same mistakes earlier; these rules are the second,
independent layer, so a program change that bypasses the config still cannot plan cleanly.

Issue #23 adds three over the Kubernetes objects: ``egress-declared-only`` (every NetworkPolicy
egress to a public address lies within a declared EU destination: the ones the policy carries in
``EGRESS_ANNOTATION`` and, where the stack's declaration is known, the stack's), and
``images-from-eu-mirror`` / ``charts-from-eu-mirror`` (from the registry mirror's host, by digest),
which need the stack's declaration: ``configure(declared_from(cfg))`` before ``check``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra import egress, residency
from infra.policy.completeness import pod_spec_of

if TYPE_CHECKING:
    from infra.config import StackConfig

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


# --- egress, images and charts (issue #23) -------------------------------------------------------

NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
# the NetworkPolicy annotation listing the declared destinations its public ipBlocks are for
# (infra/k8s_platform/network_policies.py): [{"name", "host", "cidrs", "jurisdiction", "operator"}]
EGRESS_ANNOTATION = "sovereign-llm.eu/egress-destinations"
# never egress: the private network, the cluster, link-local
_PRIVATE = tuple(ipaddress.ip_network(n) for n in egress.PRIVATE_RANGES)


@dataclass(frozen=True)
class Declared:
    """What the stack declares, for the rules that need it: the registry mirror's host, the egress
    destinations' (name, cidrs), and the image and chart references a deploy blocker already names
    (an image without a digest: `pulumi up` stops before it reaches a cluster; reported there once)."""

    registry_mirror: str | None = None
    destinations: tuple[tuple[str, tuple[str, ...]], ...] = ()
    blocked_images: frozenset[str] = field(default_factory=frozenset)
    blocked_charts: frozenset[str] = field(default_factory=frozenset)


# None: no stack declaration known (a pack run without --policy-pack-config); the image and chart
# rules then have nothing to hold a reference against and pass, the egress rule reads the
# destinations each NetworkPolicy carries (EGRESS_ANNOTATION)
_DECLARED: list[Declared | None] = [None]


def configure(declared: Declared | None) -> None:
    """Hold the rules to *declared* (``declared_from(cfg)``); None forgets it."""
    _DECLARED[0] = declared


def declared_from(cfg: StackConfig) -> Declared:
    from infra import chart_sources, images

    return Declared(
        registry_mirror=images.mirror_host(cfg),
        destinations=tuple((d.name, tuple(d.cidrs)) for d in cfg.egress.destinations),
        blocked_images=frozenset(images.blocked(cfg)),
        blocked_charts=frozenset(chart_sources.blocked(cfg)),
    )


def _networks(cidrs: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for c in cidrs or []:
        try:
            out.append(ipaddress.ip_network(str(c), strict=False))
        except ValueError:
            continue
    return out


def _covered(net: ipaddress.IPv4Network | ipaddress.IPv6Network, by: list[Any]) -> bool:
    return any(d.version == net.version and net.subnet_of(d) for d in by)


def egress_declared_only(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Every NetworkPolicy egress to a public address lies within a declared, EU-resident destination."""
    if type_ != NETWORK_POLICY:
        return []
    annotations = (props.get("metadata") or {}).get("annotations") or {}
    try:
        carried = json.loads(annotations.get(EGRESS_ANNOTATION) or "[]")
    except ValueError:
        return [f"annotation {EGRESS_ANNOTATION} is not JSON"]
    problems: list[str] = []
    allowed: list[Any] = []
    for d in carried:
        host = str(d.get("host", ""))
        on_list = residency.match_endpoint(host) is not None
        reviewed = str(d.get("jurisdiction", "")).upper() in residency.EU_EEA_COUNTRIES
        if not (on_list or reviewed):
            problems.append(
                f"destination {d.get('name')!r} ({host}) is not inside the EU boundary; {residency.ART_44}"
            )
            continue
        allowed.extend(_networks(d.get("cidrs")))
    declared = _DECLARED[0]
    # the stack's own declaration, where known, bounds too: a policy cannot widen it by annotating itself
    stack = [n for _, cidrs in declared.destinations for n in _networks(cidrs)] if declared else None
    for rule in (props.get("spec") or {}).get("egress") or []:
        # a rule without peers matches every destination ("If this field is empty or missing, this
        # rule matches all destinations": Kubernetes API reference, NetworkPolicyEgressRule.to)
        for peer in (rule.get("to") if isinstance(rule, Mapping) else None) or egress.ANYWHERE:
            block = peer.get("ipBlock")
            if not block:
                continue
            try:
                net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
            except ValueError:
                problems.append("an egress ipBlock is not a CIDR")
                continue
            if _covered(net, list(_PRIVATE)):
                continue  # the private network or the cluster: not egress
            if not _covered(net, allowed) or (stack is not None and not _covered(net, stack)):
                problems.append(
                    f"egress to {net} is not within a declared destination: declare its host and addresses "
                    "under egress.destinations (never 0.0.0.0/0); NetworkPolicy matches addresses, not names"
                )
    return problems


def images_from_eu_mirror(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Every container image of a Kubernetes object is pulled from the EU registry mirror, by digest."""
    declared = _DECLARED[0]
    if declared is None or not type_.startswith("kubernetes:") or type_ == HELM_RELEASE:
        return []
    from infra import images

    problems = []
    spec = pod_spec_of(props) or {}
    containers = [c for group in ("initContainers", "containers", "ephemeralContainers")
                  for c in spec.get(group) or []]  # fmt: skip
    if str(props.get("apiVersion", "")).startswith("postgresql.cnpg.io/") and props.get("kind") == "Cluster":
        # a CloudNativePG Cluster names the image its operator runs in every instance pod
        image_name = (props.get("spec") or {}).get("imageName")
        if image_name:
            containers.append({"name": "postgres (spec.imageName)", "image": image_name})
    for container in containers:
        image = str(container.get("image") or "")
        try:
            ref = images.parse(image)
        except ValueError:
            problems.append(f"container {container.get('name')!r}: its image is not an image reference")
            continue
        if ref.registry != declared.registry_mirror:
            if images.normalize(image) in declared.blocked_images:
                continue  # a deploy blocker names it (no mirror, no digest)
            problems.append(
                f"container {container.get('name')!r}: image {ref.name} is pulled from "
                f"{ref.registry}, not from the stack's EU registry mirror "
                "(endpoints.registry_mirror; infra/images.py reference())"
            )
        elif ref.digest is None and images.normalize(image) not in declared.blocked_images:
            problems.append(
                f"container {container.get('name')!r}: image {ref.name} has no digest: a tag can be "
                "moved; pull it by @sha256 (platform.images)"
            )
    return problems


def charts_from_eu_mirror(type_: str, name: str, props: Mapping[str, Any]) -> list[str]:
    """Every Helm chart is installed from the stack's EU registry mirror (OCI), by digest."""
    declared = _DECLARED[0]
    if declared is None or type_ != HELM_RELEASE:
        return []
    chart = str(props.get("chart") or "")
    repo = str((props.get("repositoryOpts") or {}).get("repo") or "")
    if chart in declared.blocked_charts:
        return []  # a deploy blocker names it (no mirror, no digest)
    mirror = declared.registry_mirror
    host = chart.removeprefix("oci://").split("/", 1)[0].lower() if chart.startswith("oci://") else None
    if repo or host is None or host != mirror:
        return [
            f"chart {chart.rsplit('/', 1)[-1].split('@')[0]} is not installed from the stack's EU registry "
            "mirror (oci://<endpoints.registry_mirror>/charts/<chart>@sha256:…, infra/chart_sources.py)"
        ]
    if "@sha256:" not in chart:
        return [f"chart {chart.rsplit('/', 1)[-1]} is not pinned by digest (platform.charts)"]
    return []


RULES: dict[str, Rule] = {
    "eu-location": eu_location,
    "residency-labels": residency_labels,
    "private-nodes": private_nodes,
    "firewall-deny-by-default": firewall_rules,
    "private-load-balancer": private_load_balancer,
    "egress-declared-only": egress_declared_only,
    "images-from-eu-mirror": images_from_eu_mirror,
    "charts-from-eu-mirror": charts_from_eu_mirror,
}


def check(type_: str, name: str, props: Mapping[str, Any]) -> list[Violation]:
    return [Violation(rule, name, msg) for rule, fn in RULES.items() for msg in fn(type_, name, props)]
