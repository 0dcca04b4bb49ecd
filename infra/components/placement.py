"""Spread placement groups: no two control-plane servers (or workers) on one physical host."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.config import StackConfig


class PlacementGroups(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:infra:PlacementGroups", name, None, opts)
        self.control_plane = self._spread(name, cfg, "control-plane")
        self.workers = self._spread(name, cfg, "workers")
        self.register_outputs({"control_plane": self.control_plane.id, "workers": self.workers.id})

    def _spread(self, name: str, cfg: StackConfig, group: str) -> hcloud.PlacementGroup:
        return hcloud.PlacementGroup(
            f"{name}-{group}",
            name=f"{cfg.stack}-{group}",
            type="spread",
            labels=cfg.labels("placement-group"),
            opts=pulumi.ResourceOptions(parent=self),
        )
