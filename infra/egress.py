"""Every way out of the cluster and the private network, computed from the stack config.

NetworkPolicies and the bastion's NAT match addresses, not names, so each public endpoint anything
reaches is declared in ``egress.destinations`` with its host and addresses (infra/config.py
``EgressConfig``; config validation refuses a needed host left undeclared and a host outside the EU
boundary). This module is the one place that says who reaches which destination:

- ``pod_flows(cfg)``: the pods with egress to a public address (the NetworkPolicies of
  infra/k8s_platform/network_policies.py are built from it, rule for rule);
- ``nat_flows(cfg)``: what the private hosts (and through them the pods) reach through the
  bastion's NAT (the cloud-init bootstrap, infra/components/cloud_init.py, and the hardening role's
  nftables ruleset through infra/hosts/inventory.py are built from it), and what the GPU servers
  and their pods reach by their own public uplink (the same list, as the hardening role's
  ``hardening_uplink_destinations``);
- ``allowed(cfg)``: both, as ``Egress`` records (what the config allows; the tests compare it with
  what the rendered manifests allow);
- ``from_network_policies(cfg, objects)``: the same records read back from rendered NetworkPolicy
  objects (every public ``ipBlock`` mapped to its declared destination; one that no destination
  covers, and a rule without ``to``, which reaches every address, come back as ``UNDECLARED``).

It is also the one place that says which addresses are not a way out at all (``PRIVATE_RANGES``:
the NetworkPolicies, the policy rule ``egress-declared-only`` of infra/policy/rules.py and the
flows here; ``INTERNAL_RANGES``: the evidence report's data-flow map, infra/evidence/model.py).

The evidence report's data-flow map does not use ``allowed(cfg)``: it reads what the plan renders
back (infra/evidence/model.py ``public_egress``: the NetworkPolicies' public ``ipBlock``s;
``bastion_nat``: the NAT rules of the bastion's cloud-init), so a rule added elsewhere is on the map.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from infra import residency

if TYPE_CHECKING:
    from infra.config import EgressDestinationConfig, StackConfig

# Hetzner's recursive resolvers (in Hetzner's EU network), reached through the NAT: the private
# nodes' /etc/resolv.conf (infra/components/cloud_init.py). Built in: they are addresses, not names.
HETZNER_RESOLVERS = ("185.12.64.1", "185.12.64.2")
DNS_DESTINATION = "hetzner-dns"
UNDECLARED = "UNDECLARED"
# the peers of a NetworkPolicy egress rule without `to`
ANYWHERE = ({"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}})
# never egress: the private network, the cluster (RKE2's pod and service CIDRs are in 10.0.0.0/8),
# link-local. A NetworkPolicy ipBlock inside them is not a way out of the boundary.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
# what does not reach past the private network and the cluster, for the data-flow map: the private
# ranges, loopback, CGNAT and their IPv6 counterparts. Documentation ranges (TEST-NET, which the
# examples use) are not in it: they stand for real public addresses.
INTERNAL_RANGES = (*PRIVATE_RANGES, "127.0.0.0/8", "100.64.0.0/10", "fc00::/7", "fe80::/10", "::1/128")

SourceKind = Literal["pod", "host"]
# the memory store's instances (infra/k8s_platform/memory_store.py): the policy with their backup egress
MEMORY_STORE_POLICY = "memory-store"


@dataclass(frozen=True)
class Egress:
    """One allowed flow: who (``source``) may reach which declared destination, where, and why."""

    source: str  # "<namespace>/<pod app>" for pods, "private-network" for the hosts behind the NAT
    source_kind: SourceKind
    destination: str  # the egress.destinations name (or DNS_DESTINATION / UNDECLARED)
    host: str
    cidrs: tuple[str, ...]
    ports: tuple[int, ...]
    protocols: tuple[str, ...]
    purpose: str
    policy: str = ""  # the NetworkPolicy (namespace/name) or "bastion-nat"


@dataclass(frozen=True)
class PodFlow:
    """A pod selection's egress to the destinations serving one endpoint."""

    namespace: str
    policy: str  # NetworkPolicy name
    app: str  # app.kubernetes.io/name of the pods (their source in the map)
    key: str  # the config key of the endpoint
    host: str
    port: int
    purpose: str
    destinations: tuple[EgressDestinationConfig, ...]


def _host(endpoint: str) -> str:
    return residency.host_of(endpoint)


def _port(endpoint: str) -> int:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return parts.port or (80 if parts.scheme == "http" else 443)


def _internal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.endswith(residency.CLUSTER_LOCAL_SUFFIXES)


def pod_flows(cfg: StackConfig) -> list[PodFlow]:
    """The pods' egress to public endpoints; each to the declared destinations serving its host."""
    from infra.k8s_platform.common import GATEWAY_NS, INFERENCE_NS, OPENBAO_NS

    storage = cfg.endpoints.object_storage
    wanted: list[tuple[str, str, str, str, str, str]] = []  # ns, policy, app, key, endpoint, purpose
    if cfg.storage.audit_archive is not None:
        wanted.append(
            (GATEWAY_NS, "gateway-audit-ship", "gateway", "endpoints.object_storage", storage,
             "sealed audit segments to the Object Lock bucket (storage.audit_archive)")
        )  # fmt: skip
    if cfg.platform.models:
        wanted.append(
            (INFERENCE_NS, "weights-fetch-egress", "weights-fetch", "endpoints.object_storage", storage,
             "model weights and their signed manifest (platform.models)")
        )  # fmt: skip
    if cfg.storage.audit_archive is not None:
        wanted.append(
            (OPENBAO_NS, "openbao-snapshot-egress", "openbao-snapshot", "endpoints.object_storage", storage,
             "OpenBao Raft snapshots into the Object Lock bucket")
        )  # fmt: skip
        copy = cfg.storage.openbao_snapshot_copy
        if copy is not None:
            wanted.append(
                (OPENBAO_NS, "openbao-snapshot-egress", "openbao-snapshot",
                 "storage.openbao_snapshot_copy.endpoint", copy.endpoint,
                 "the OpenBao snapshot copy in another region")
            )  # fmt: skip
    store = cfg.platform.memory_store
    if store.enabled:
        from infra.k8s_platform.common import MEMORY_NS

        wanted.append(
            (MEMORY_NS, MEMORY_STORE_POLICY, "memory",
             "platform.memory_store.backup_endpoint" if store.backup_endpoint else "endpoints.object_storage",
             store.endpoint(storage),
             "the memory store's base backups and WAL archive (platform.memory_store.backup_bucket)")
        )  # fmt: skip
    monitoring = cfg.platform.monitoring_namespace
    for i, receiver in enumerate(cfg.platform.alerting.receivers):
        wanted.append(
            (monitoring, "alertmanager", "alertmanager", f"platform.alerting.receivers.{i}.url", receiver.url,
             f"alert notifications (receiver {receiver.name})")
        )  # fmt: skip
    flows = []
    for ns, policy, app, key, endpoint, purpose in wanted:
        host = _host(endpoint)
        if not host or _internal(host):
            continue  # inside the private network or the cluster: the NetworkPolicies' own rules
        flows.append(
            PodFlow(ns, policy, app, key, host, _port(endpoint), purpose, tuple(cfg.egress.serving(host)))
        )
    return flows


def policy_rules(cfg: StackConfig, namespace: str, policy: str) -> list[dict[str, Any]]:
    """The public egress rules of one NetworkPolicy: per port, the addresses of every destination
    its flows need (none when no destination is declared: config validation refuses such a stack)."""
    by_port: dict[int, set[str]] = {}
    for flow in pod_flows(cfg):
        if (flow.namespace, flow.policy) == (namespace, policy):
            by_port.setdefault(flow.port, set()).update(c for d in flow.destinations for c in d.cidrs)
    return [
        {
            "to": [{"ipBlock": {"cidr": c}} for c in sorted(cidrs)],
            "ports": [{"protocol": "TCP", "port": port}],
        }
        for port, cidrs in by_port.items()
        if cidrs
    ]


@dataclass(frozen=True)
class NatDestination:
    """One destination the bastion forwards and masquerades to (IPv4 only: the private network is)."""

    name: str
    host: str
    cidrs: tuple[str, ...]
    tcp_ports: tuple[int, ...]
    udp_ports: tuple[int, ...]
    purpose: str

    def as_vars(self) -> dict[str, Any]:
        """The hardening role's ``hardening_nat_destinations`` entry."""
        return {
            "name": self.name,
            "cidrs": list(self.cidrs),
            "tcp_ports": list(self.tcp_ports),
            "udp_ports": list(self.udp_ports),
        }


def nat_flows(cfg: StackConfig) -> list[NatDestination]:
    """What the private network reaches through the bastion: Hetzner's resolvers (DNS) and every
    declared destination (the hosts' package, artefact and registry mirrors, time servers, and the
    pods' object storage and receivers, whose packets leave through the same NAT)."""
    out = [
        NatDestination(
            DNS_DESTINATION, "", tuple(f"{ip}/32" for ip in HETZNER_RESOLVERS), (53,), (53,),
            "name resolution for the private hosts (Hetzner's resolvers)",
        )
    ]  # fmt: skip
    for d in cfg.egress.destinations:
        v4 = tuple(c for c in d.cidrs if ipaddress.ip_network(c).version == 4)
        if not v4:
            continue
        tcp = tuple(d.ports) if "tcp" in d.protocols else ()
        udp = tuple(d.ports) if "udp" in d.protocols else ()
        out.append(NatDestination(d.name, d.host, v4, tcp, udp, d.purpose))
    return out


def allowed(cfg: StackConfig) -> list[Egress]:
    """Every egress the manifests and the hosts allow, one record per (source, destination)."""
    records: list[Egress] = []
    for flow in pod_flows(cfg):
        for d in flow.destinations:
            records.append(
                Egress(
                    source=f"{flow.namespace}/{flow.app}",
                    source_kind="pod",
                    destination=d.name,
                    host=flow.host,
                    cidrs=tuple(d.cidrs),
                    ports=(flow.port,),
                    protocols=("tcp",),
                    purpose=flow.purpose,
                    policy=f"{flow.namespace}/{flow.policy}",
                )
            )
    for nat in nat_flows(cfg):
        records.append(
            Egress(
                source="private-network",
                source_kind="host",
                destination=nat.name,
                host=nat.host,
                cidrs=nat.cidrs,
                ports=tuple(sorted({*nat.tcp_ports, *nat.udp_ports})),
                protocols=tuple(p for p, ports in (("tcp", nat.tcp_ports), ("udp", nat.udp_ports)) if ports),
                purpose=nat.purpose,
                policy="bastion-nat",
            )
        )
    return records


def _within(cidr: str, declared: Iterable[str]) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    for other in declared:
        d = ipaddress.ip_network(other, strict=False)
        if d.version == net.version and net.subnet_of(d):  # type: ignore[arg-type]
            return True
    return False


def from_network_policies(cfg: StackConfig, objects: Iterable[Mapping[str, Any]]) -> list[Egress]:
    """The pods' public egress as the rendered NetworkPolicies allow it (``{"metadata": …, "spec":
    …}`` objects): each ipBlock outside the private ranges, mapped to the declared destination that
    covers it, or to ``UNDECLARED``."""
    records: list[Egress] = []
    for obj in objects:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        selector = (spec.get("podSelector") or {}).get("matchLabels") or {}
        app = (
            selector.get("app.kubernetes.io/name")
            or selector.get("app")
            or next(iter(selector.values()), "*")
        )
        ns = meta.get("namespace", "")
        for rule in spec.get("egress") or []:
            ports = tuple(int(p["port"]) for p in rule.get("ports") or [] if "port" in p)
            protocols = tuple(
                sorted({str(p.get("protocol", "TCP")).lower() for p in rule.get("ports") or []})
            )
            # no `to`: every destination (NetworkPolicyEgressRule: "If this field is empty or
            # missing, this rule matches all destinations")
            for peer in rule.get("to") or ANYWHERE:
                block = peer.get("ipBlock")
                if not block or _within(block["cidr"], PRIVATE_RANGES):
                    continue
                dest = next((d for d in cfg.egress.destinations if _within(block["cidr"], d.cidrs)), None)
                records.append(
                    Egress(
                        source=f"{ns}/{app}",
                        source_kind="pod",
                        destination=dest.name if dest else UNDECLARED,
                        host=dest.host if dest else "",
                        cidrs=(block["cidr"],),
                        ports=ports,
                        protocols=protocols or ("tcp",),
                        purpose=dest.purpose if dest else "not declared in egress.destinations",
                        policy=f"{ns}/{meta.get('name', '')}",
                    )
                )
    return records
