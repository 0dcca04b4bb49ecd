"""Cloud servers: the bastion (the only public IPv4) and the private node pools."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pulumi
import pulumi_hcloud as hcloud

from infra import catalogue
from infra.components import cloud_init
from infra.components.network import PrivateNetwork
from infra.config import ControlPlaneConfig, StackConfig, WorkersConfig


class Bastion(pulumi.ComponentResource):
    """SSH jump host and NAT gateway; the network routes 0.0.0.0/0 through it."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        network: PrivateNetwork,
        ssh_keys: Sequence[pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:infra:Bastion", name, None, opts)
        self.private_ip = str(cfg.network.bastion_ip)
        self.server = hcloud.Server(
            f"{name}-server",
            name=f"{cfg.stack}-bastion",
            server_type=cfg.bastion.server_type,
            image=cfg.bastion.image,
            location=cfg.bastion.location,
            ssh_keys=list(ssh_keys),
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=False)],
            networks=[hcloud.ServerNetworkArgs(network_id=network.network_id, ip=self.private_ip)],
            user_data=cloud_init.bastion(cfg),
            labels=cfg.labels("bastion"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[network.nodes_subnet]),
        )
        self.route = hcloud.NetworkRoute(
            f"{name}-default-route",
            network_id=network.network_id,
            destination="0.0.0.0/0",
            gateway=self.private_ip,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.server]),
        )
        self.public_ip: pulumi.Output[str] = self.server.ipv4_address
        self.register_outputs({"public_ip": self.public_ip, "private_ip": self.private_ip})


class NodePool(pulumi.ComponentResource):
    """N private servers of one role: no public IPv4 or IPv6, one fixed address each."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        *,
        role: str,
        pool: ControlPlaneConfig | WorkersConfig,
        addresses: Sequence[ipaddress.IPv4Address],
        network: PrivateNetwork,
        placement_groups: Sequence[hcloud.PlacementGroup],
        ssh_keys: Sequence[pulumi.Input[str]],
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:infra:NodePool", name, None, opts)
        self.role = role
        count = pool.count
        known = catalogue.load()
        per_group = known.spread_max_servers
        if len(placement_groups) < (needed := known.spread_groups(count)):
            raise ValueError(f"{role}: {count} servers need {needed} spread placement groups")
        self.private_ips = [str(a) for a in addresses[:count]]
        self.names = [f"{cfg.stack}-{role}-{i + 1}" for i in range(count)]
        self.servers = [
            hcloud.Server(
                f"{name}-{i + 1}",
                name=self.names[i],
                server_type=pool.server_type,
                image=pool.image,
                location=pool.location,
                # in order, filling each group to Hetzner's limit before the next
                placement_group_id=placement_groups[i // per_group].id.apply(int),
                ssh_keys=list(ssh_keys),
                public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=False, ipv6_enabled=False)],
                networks=[hcloud.ServerNetworkArgs(network_id=network.network_id, ip=self.private_ips[i])],
                user_data=cloud_init.private_node(cfg),
                labels=cfg.labels(role),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[network.nodes_subnet, *depends_on]),
            )
            for i in range(count)
        ]
        self.ids: list[pulumi.Output[str]] = [s.id for s in self.servers]
        self.register_outputs({"names": self.names, "private_ips": self.private_ips})
