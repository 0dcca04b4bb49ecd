"""Kubernetes bootstrap: RKE2 (CIS profile) installed by the Ansible roles via ansible-runner.

A ``pulumi_command`` local command runs ``sovereign converge`` (infra/hosts/converge.py) on the
machine running ``pulumi up``. Its triggers are the ids of every cloud server, the declared GPU
servers and a digest of the roles and playbooks: replacing a host or editing a role re-runs
it; an unchanged stack does not. The kubeconfig it prints is a secret output (encrypted in
state by the stack's secrets provider, never shown in clear by the CLI, and never written to
the ``pulumi up`` log: the command logs its stderr only).

The cluster's join token is a ``random.RandomPassword``, generated once and kept as a secret in
state; the command reads it on stdin (``--token-stdin``; not in its environment, where other
processes of the same user could read it) and passes it to the rke2 role.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_random as random

from infra.config import ETCD_SECRET_KEYS, PROJECT, StackConfig
from infra.hosts.content import content_hash


def converge_stdin(cfg: StackConfig, token: pulumi.Input[str]) -> pulumi.Output[str]:
    """One line of JSON for `sovereign converge --token-stdin`: the join token and, with
    rke2.etcd_snapshots, the S3 keys (stack secrets; absent ones make the rke2 role refuse, naming
    the `pulumi config set --secret` to run). Secret throughout; never an argv or an environment."""
    values: dict[str, pulumi.Input[str]] = {"token": token}
    if cfg.rke2.etcd_snapshots is not None:
        config = pulumi.Config(PROJECT)
        for key in ETCD_SECRET_KEYS:  # etcd_s3_access_key, etcd_s3_secret_key
            value = config.get_secret(key)
            if value is not None:
                values[key] = value
    line = pulumi.Output.json_dumps(values).apply(lambda text: text + "\n")
    return pulumi.Output.secret(line)


def converge_command(cfg: StackConfig) -> str:
    return f"sovereign converge --playbook {cfg.rke2.playbook} --token-stdin"


class Rke2Cluster(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        *,
        inventory: pulumi.Input[dict[str, Any]],
        host_ids: Sequence[pulumi.Input[str]],
        depends_on: Sequence[pulumi.Resource],
        role_digest: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("sovereign:infra:Rke2Cluster", name, None, opts)
        self.role_digest = role_digest or content_hash()
        gpu_keys = [f"robot:{s.server_number}" for s in cfg.gpu_pool.servers]
        self.token = random.RandomPassword(
            f"{name}-join-token", length=64, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        self.bootstrap = command.local.Command(
            f"{name}-bootstrap",
            create=converge_command(cfg),
            update=converge_command(cfg),
            environment={"SOVEREIGN_INVENTORY": pulumi.Output.json_dumps(inventory)},
            # pulumi's stubs type Output.secret's argument as Never; it takes any Input
            stdin=converge_stdin(cfg, self.token.result),
            triggers=[*host_ids, *gpu_keys, f"roles:{self.role_digest}", f"rke2:{cfg.rke2.version}"],
            # stdout is the cluster-admin kubeconfig: captured (secret), never logged; pulumi-command
            # logs both streams by default (its docs: "If there might be secrets in the output, you
            # can disable logging here"). Ansible's progress goes to stderr and stays visible.
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(depends_on), additional_secret_outputs=["stdout"]
            ),
        )
        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(self.bootstrap.stdout)
        self.register_outputs({"kubeconfig": self.kubeconfig})
