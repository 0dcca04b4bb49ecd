"""``sovereign harden``, ``verify``, ``tunnel open|close|status`` and ``converge``: a region stack's
dedicated hosts (inventory from the stack's outputs; infra/hosts/operate.py, tunnel.py,
converge.py do the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.paths import CWD_REPORTS


def _hosts_inventory(args: argparse.Namespace) -> dict[str, Any]:
    from infra.hosts import operate

    return operate.load_inventory(args.stack, args.inventory)  # HostsError: bad input, exit 2


def cmd_harden(args: argparse.Namespace) -> int:
    from infra.hosts import operate

    return operate.harden(_hosts_inventory(args), verbosity=args.verbose)


def cmd_verify(args: argparse.Namespace) -> int:
    from infra.hosts import operate

    hosts = _hosts_inventory(args)
    junit = args.junit or CWD_REPORTS / f"verify-{args.stack or 'inventory'}.xml"
    return operate.verify(hosts, junit, stack=args.stack)


def cmd_tunnel(args: argparse.Namespace) -> int:
    import json
    import os

    from infra.hosts import tunnel
    from infra.hosts.converge import INVENTORY_ENV

    if args.stack is None and args.inventory is None and os.environ.get(INVENTORY_ENV):
        try:  # how `pulumi up` calls it (infra/components/api_access.py)
            hosts: dict[str, Any] = json.loads(os.environ[INVENTORY_ENV])
        except json.JSONDecodeError as exc:
            raise BadInput(f"{INVENTORY_ENV} is not valid JSON ({exc.msg} at {exc.pos})") from None
    else:
        hosts = _hosts_inventory(args)
    t = tunnel.Tunnel.from_inventory(hosts)
    if args.tunnel_command == "open":
        target = tunnel.open_tunnel(t)
        print(f"sovereign tunnel: 127.0.0.1:{t.local_port} -> {target}:{tunnel.API_PORT} via {t.bastion}",
              file=sys.stderr)  # fmt: skip
        print(target)
    elif args.tunnel_command == "close":
        closed = tunnel.close(t)
        print(f"sovereign tunnel: {'closed' if closed else 'was not open'}", file=sys.stderr)
    else:
        state = tunnel.status(t)
        print(json.dumps(state))
        return 0 if state["answers"] else 1
    return 0


def cmd_converge(args: argparse.Namespace) -> int:
    from infra.hosts import converge

    return converge.main(args.playbook, verbosity=args.verbose, token_stdin=args.token_stdin)


def add_parser(sub: Any) -> None:
    for name, helptext, func in (
        ("harden", "harden a stack's hosts (playbooks/hardening.yml through ansible-runner)", cmd_harden),
        ("verify", "check a stack's hosts with the testinfra suite; JUnit report", cmd_verify),
    ):
        hp = sub.add_parser(name, help=helptext)
        source = hp.add_mutually_exclusive_group(required=True)
        source.add_argument("--stack", help="region stack; its inventory output is read with the Pulumi CLI")
        source.add_argument(
            "--inventory", type=Path, help="inventory JSON (`pulumi stack output inventory --json`)"
        )
        if name == "verify":
            hp.add_argument("--junit", type=Path, help="JUnit report path (default reports/verify-STACK.xml)")
        else:
            hp.add_argument("-v", "--verbose", action="count", default=0)
        hp.set_defaults(func=func)

    tun = sub.add_parser(
        "tunnel", help="SSH tunnel through the bastion to the Kubernetes API (pulumi up opens it)"
    )
    tun.add_argument("tunnel_command", choices=("open", "close", "status"))
    tsource = tun.add_mutually_exclusive_group()
    tsource.add_argument("--stack", help="region stack; its inventory output is read with the Pulumi CLI")
    tsource.add_argument(
        "--inventory", type=Path, help="inventory JSON (`pulumi stack output inventory --json`)"
    )
    tun.set_defaults(func=cmd_tunnel)

    conv = sub.add_parser("converge", help="run the host playbook through ansible-runner (used by pulumi up)")
    conv.add_argument("--playbook", required=True, help="playbook, relative to the repository root")
    conv.add_argument(
        "--token-stdin", action="store_true", help="read the cluster's join token from stdin (pulumi up does)"
    )
    conv.add_argument("-v", "--verbose", action="count", default=0)
    conv.set_defaults(func=cmd_converge)
