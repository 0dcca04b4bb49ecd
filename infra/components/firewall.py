"""Firewalls, deny by default.

Hetzner Cloud firewalls filter the public interface. Inbound is denied unless a rule allows
it, so the node firewall has no inbound rule at all (the nodes have no public interface
either: two independent layers). The bastion allows SSH and ICMP from the admin ranges only.
Firewalls attach by label selector, so a server created later is covered from its first boot.
"""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.config import StackConfig

NODE_ROLES = ("control-plane", "worker")


class Firewalls(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:infra:Firewalls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        admin = [str(c) for c in cfg.admin.cidrs]
        self.bastion = hcloud.Firewall(
            f"{name}-bastion",
            name=f"{cfg.stack}-bastion",
            rules=[
                hcloud.FirewallRuleArgs(
                    direction="in", protocol="tcp", port="22", source_ips=admin, description="SSH from admins"
                ),
                hcloud.FirewallRuleArgs(
                    direction="in", protocol="icmp", source_ips=admin, description="ping"
                ),
            ],
            apply_tos=[hcloud.FirewallApplyToArgs(label_selector=f"stack={cfg.stack},role=bastion")],
            labels=cfg.labels("firewall"),
            opts=child,
        )
        self.nodes = hcloud.Firewall(
            f"{name}-nodes",
            name=f"{cfg.stack}-nodes",
            rules=[],  # deny all inbound on any public interface
            apply_tos=[
                hcloud.FirewallApplyToArgs(
                    label_selector=f"stack={cfg.stack},role in ({','.join(NODE_ROLES)})"
                )
            ],
            labels=cfg.labels("firewall"),
            opts=child,
        )
        self.register_outputs({"bastion": self.bastion.id, "nodes": self.nodes.id})
