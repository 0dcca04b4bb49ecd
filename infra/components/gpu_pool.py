"""The GPU pool: dedicated servers joined to the cloud network through a vSwitch subnet.

Hetzner Cloud offers no GPU server types. GPU workers are dedicated (Robot) GEX servers:
ordered in Robot, attached there to a vSwitch, and declared in the stack config. Pulumi owns
the cloud side of the link, an ``hcloud.NetworkSubnet`` of type ``vswitch``; the host side
(VLAN interface, routes, drivers, RKE2 agent) is the Ansible roles' job. Robot has no Pulumi
provider, so the servers themselves are inventory, not resources; the plan lists them as
declared hosts so change control still sees every machine.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from infra import residency
from infra.components.network import PrivateNetwork
from infra.config import StackConfig


def declared_hosts(cfg: StackConfig) -> list[dict[str, Any]]:
    """The dedicated GPU servers as the inventory and the plan show them."""
    pool = cfg.gpu_pool
    return [
        {
            "name": s.name,
            "private_ip": str(s.private_ip),
            "server_number": s.server_number,
            "datacenter": s.datacenter,
            "location": residency.ROBOT_SITE_LOCATION[s.datacenter.split("-")[0]],
            "product": s.product,
            "gpus": s.gpus,
            "vswitch_id": pool.vswitch_id,
            "vlan_id": pool.vlan_id,
        }
        for s in pool.servers
    ]


class GpuPool(pulumi.ComponentResource):
    def __init__(
        self, name: str, cfg: StackConfig, network: PrivateNetwork, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("sovereign:infra:GpuPool", name, None, opts)
        pool = cfg.gpu_pool
        self.subnet: hcloud.NetworkSubnet | None = None
        if pool.servers:
            self.subnet = hcloud.NetworkSubnet(
                f"{name}-vswitch",
                network_id=network.network_id,
                type="vswitch",
                vswitch_id=pool.vswitch_id,
                network_zone=cfg.network.zone,
                ip_range=str(cfg.network.vswitch_subnet),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[network.nodes_subnet]),
            )
        self.hosts = declared_hosts(cfg)
        self.register_outputs({"hosts": self.hosts})
