"""Private network and the cloud subnet every node and the load balancer live in."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.config import StackConfig


class PrivateNetwork(pulumi.ComponentResource):
    """``hcloud.Network`` + the ``cloud`` subnet for servers (the vSwitch subnet is the GPU pool's)."""

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:infra:PrivateNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.network = hcloud.Network(
            f"{name}-net",
            name=f"{cfg.stack}-net",
            ip_range=str(cfg.network.ip_range),
            # routes of the cloud network (the NAT default route) also reach the GPU servers
            expose_routes_to_vswitch=bool(cfg.gpu_pool.servers),
            delete_protection=cfg.region.environment == "prod",
            labels=cfg.labels("network"),
            opts=child,
        )
        self.network_id: pulumi.Output[int] = self.network.id.apply(int)
        self.nodes_subnet = hcloud.NetworkSubnet(
            f"{name}-nodes",
            network_id=self.network_id,
            type="cloud",
            network_zone=cfg.network.zone,
            ip_range=str(cfg.network.nodes_subnet),
            opts=child,
        )
        self.register_outputs({"network_id": self.network.id, "nodes_subnet": self.nodes_subnet.ip_range})
