"""Firewalls, deny by default.

Hetzner Cloud Firewalls filter a cloud server's public interfaces only, never traffic in a
private Network (https://docs.hetzner.com/cloud/firewalls/faq, "Can Firewalls secure traffic to
my private Hetzner Cloud Networks?"), and they cannot be applied to dedicated (Robot) servers.
Inbound is denied unless a rule allows it. The bastion allows SSH and ICMP from the admin
ranges only. The nodes are created without a public interface, so their firewall (no inbound
rule at all) filters nothing today: it is a guard that denies everything the moment a node
gets a public interface by mistake, not a second layer for the private network, which the
hosts' own nftables rules filter (roles/hardening). The GPU servers' public uplinks are closed
by the host firewall and the Robot firewall (docs/host-roles.md).
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
            rules=[],  # deny all inbound on a public interface, should a node ever get one
            apply_tos=[
                hcloud.FirewallApplyToArgs(
                    label_selector=f"stack={cfg.stack},role in ({','.join(NODE_ROLES)})"
                )
            ],
            labels=cfg.labels("firewall"),
            opts=child,
        )
        self.register_outputs({"bastion": self.bastion.id, "nodes": self.nodes.id})
