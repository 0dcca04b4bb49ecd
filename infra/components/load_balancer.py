"""Private load balancer for the gateway: no public interface, targets the workers' ingress."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.components.network import PrivateNetwork
from infra.config import StackConfig


class GatewayLoadBalancer(pulumi.ComponentResource):
    def __init__(
        self, name: str, cfg: StackConfig, network: PrivateNetwork, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("sovereign:infra:GatewayLoadBalancer", name, None, opts)
        lb_cfg = cfg.load_balancer
        child = pulumi.ResourceOptions(parent=self)
        self.lb = hcloud.LoadBalancer(
            f"{name}-lb",
            name=f"{cfg.stack}-gateway",
            load_balancer_type=lb_cfg.type,
            location=lb_cfg.location,
            labels=cfg.labels("load-balancer"),
            opts=child,
        )
        lb_id = self.lb.id.apply(int)
        self.attachment = hcloud.LoadBalancerNetwork(
            f"{name}-net",
            load_balancer_id=lb_id,
            network_id=network.network_id,
            ip=str(lb_cfg.private_ip),
            enable_public_interface=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[network.nodes_subnet]),
        )
        self.service = hcloud.LoadBalancerService(
            f"{name}-https",
            load_balancer_id=self.lb.id,
            protocol="tcp",  # TLS passes through to the ingress; the LB never sees plaintext
            listen_port=lb_cfg.listen_port,
            destination_port=lb_cfg.target_port,
            health_check=hcloud.LoadBalancerServiceHealthCheckArgs(
                protocol="tcp", port=lb_cfg.target_port, interval=10, timeout=5, retries=3
            ),
            opts=child,
        )
        self.target = hcloud.LoadBalancerTarget(
            f"{name}-workers",
            load_balancer_id=lb_id,
            type="label_selector",
            label_selector=f"stack={cfg.stack},role=worker",
            use_private_ip=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.attachment]),
        )
        self.private_ip = str(lb_cfg.private_ip)
        self.register_outputs({"private_ip": self.private_ip})
