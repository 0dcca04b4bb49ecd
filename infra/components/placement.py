"""Spread placement groups: no two control-plane servers (or workers) on one physical host.

A spread group holds at most 10 servers (docs.hetzner.com/cloud/placement-groups/overview;
the number lives in infra/catalogue/hetzner-cloud.yaml): the workers get one group per 10."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra import catalogue
from infra.config import StackConfig


class PlacementGroups(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:infra:PlacementGroups", name, None, opts)
        self.control_plane = [self._spread(name, cfg, "control-plane")]  # at most 5: one group
        n = catalogue.load().spread_groups(cfg.workers.count)
        # the first group keeps its name (and so its URN) when a pool grows past 10
        self.workers = [self._spread(name, cfg, f"workers-{g + 1}" if g else "workers") for g in range(n)]
        self.register_outputs(
            {"control_plane": [g.id for g in self.control_plane], "workers": [g.id for g in self.workers]}
        )

    def _spread(self, name: str, cfg: StackConfig, group: str) -> hcloud.PlacementGroup:
        return hcloud.PlacementGroup(
            f"{name}-{group}",
            name=f"{cfg.stack}-{group}",
            type="spread",
            labels=cfg.labels("placement-group"),
            opts=pulumi.ResourceOptions(parent=self),
        )
