"""The admins' SSH public keys, installed on every cloud server at creation."""

from __future__ import annotations

import pulumi
import pulumi_hcloud as hcloud

from infra.config import StackConfig


class SshKeys(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sovereign:infra:SshKeys", name, None, opts)
        self.keys = [
            hcloud.SshKey(
                f"{name}-{key.name}",
                name=f"{cfg.stack}-{key.name}",
                public_key=key.public_key,
                labels=cfg.labels("ssh-key"),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for key in cfg.admin.ssh_keys
        ]
        self.names: list[pulumi.Output[str]] = [k.name for k in self.keys]
        self.register_outputs({"names": self.names})
