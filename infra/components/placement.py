"""Spread placement groups: no two control-plane servers (or workers) on one physical host."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.config import StackConfig


class PlacementGroups(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:infra:PlacementGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.control_plane = hcloud.PlacementGroup(
            f"{name}-control-plane",
            name=f"{cfg.stack}-control-plane",
            type="spread",
            labels=cfg.labels("placement-group"),
            opts=child,
        )
        self.workers = hcloud.PlacementGroup(
            f"{name}-workers",
            name=f"{cfg.stack}-workers",
            type="spread",
            labels=cfg.labels("placement-group"),
            opts=child,
        )
        self.register_outputs({"control_plane": self.control_plane.id, "workers": self.workers.id})
