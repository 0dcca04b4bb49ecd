"""How ``pulumi up`` reaches the cluster it just built: the SSH tunnel through the bastion.

The Kubernetes provider of the platform layer connects to 127.0.0.1:<admin.api_tunnel_port>
(the kubeconfig ``sovereign converge`` prints). Before it may, ``sovereign tunnel open``
(infra/hosts/tunnel.py) must have made that port reach a control-plane server's API. It runs
as a pulumi-command ``local.run`` invoke, which the engine executes on every preview and
update (pulumi-command's docs: "A local command to be executed unconditionally"), unlike a
``local.Command`` resource, which would run once and leave later runs without a tunnel. Its
inputs are the inventory and the kubeconfig, so it runs only once the cluster exists (on the
first ``pulumi up`` right after the bootstrap; on later runs from the start, during preview
too), and the provider's kubeconfig waits for its result. It opens nothing under ``sovereign
plan``: Pulumi's mocks answer the invoke there.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_command as command

from infra.hosts.converge import INVENTORY_ENV

OPEN = "sovereign tunnel open"


def tunnelled(kubeconfig: pulumi.Output[str], inventory: pulumi.Input[dict[str, Any]]) -> pulumi.Output[str]:
    """*kubeconfig*, resolved only after the tunnel it points at has been opened."""
    env = pulumi.Output.all(pulumi.Output.from_input(inventory), kubeconfig).apply(
        lambda values: {INVENTORY_ENV: json.dumps(values[0])}  # the kubeconfig only orders it
    )
    opened = command.local.run_output(command=OPEN, environment=env)
    return pulumi.Output.secret(pulumi.Output.all(kubeconfig, opened.stdout).apply(lambda values: values[0]))
