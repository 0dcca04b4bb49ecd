"""``sovereign up|down|status``, ``gateway serve|keys|tenant-key`` and ``anonymize``: the local
stack (stacks/local.yaml) and the gateway's operator commands, whose defaults come from the local
profile (``--profile``, ``--state-dir``; :func:`with_profile`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import BadInput
from infra.paths import LOCAL_PROFILE, REPO_ROOT

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings
    from infra.local.profile import LocalProfile


def with_profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """*p* with ``--profile`` and ``--state-dir``: the local stack whose defaults the command uses."""
    p.add_argument("--profile", default=str(LOCAL_PROFILE), help="local profile (default: %(default)s)")
    p.add_argument("--state-dir", default=None, help="override the profile's state_dir")
    return p


def local_profile(args: argparse.Namespace) -> LocalProfile:
    from infra.local.profile import load_profile

    return load_profile(Path(args.profile), base=REPO_ROOT, state_dir=args.state_dir)


def cmd_up(args: argparse.Namespace) -> int:
    from infra.local.stack import LocalStack

    LocalStack(local_profile(args)).up()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from infra.local.stack import LocalStack

    stopped = LocalStack(local_profile(args)).down()
    print("stopped: " + ", ".join(stopped) if stopped else "the local stack is not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from infra.local.stack import COMPONENTS, Paths, running

    profile = local_profile(args)
    alive = running(Paths(profile.state_dir))
    for name in COMPONENTS:
        state = f"running (pid {alive[name]['pid']})" if name in alive else "stopped"
        print(f"{name:<9} {state:<22} {profile.url(name)}")
    return 0 if alive else 3


def _keys_file(args: argparse.Namespace) -> Path:
    if args.keys_file:
        return Path(args.keys_file)
    from infra.local.stack import Paths

    return Paths(local_profile(args).state_dir).keys_file


def cmd_keys_create(args: argparse.Namespace) -> int:
    from gateway.clientkeys import ClientKeyStore

    record, key = ClientKeyStore(_keys_file(args)).create(args.tenant)
    print(f"key id {record.key_id} for tenant {record.tenant} (the key is shown only now):", file=sys.stderr)
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from gateway.clientkeys import ClientKeyStore

    for k in ClientKeyStore(_keys_file(args)).list():
        print(f"{k.key_id}  tenant={k.tenant}  created={k.created}  {'revoked' if k.revoked else 'active'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from gateway.clientkeys import ClientKeyStore

    if args.kubeconfig:  # the cluster's Secret gateway-client-keys (infra/cluster_keys.py)
        from infra import cluster_keys

        return cluster_keys.cmd_revoke(Path(args.kubeconfig), args.context, args.key_id)
    ClientKeyStore(_keys_file(args)).revoke(args.key_id)
    print(f"revoked {args.key_id}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    serve(Path(args.config) if args.config else None, args.host, args.port, args.log_level)
    return 0


def openbao_target(args: argparse.Namespace, token_name: str) -> tuple[str, str]:
    """(--openbao-address, --token-file), each defaulting to the local stack's: its OpenBao and
    the token file *token_name* among its secrets."""
    address, token_file = args.openbao_address, args.token_file
    if address is None or token_file is None:
        from infra.local.stack import Paths

        profile = local_profile(args)
        address = address or profile.url("openbao")
        token_file = token_file or str(Paths(profile.state_dir).secrets / token_name)
    return address, token_file


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The gateway's settings: --config, else the local stack's generated config."""
    from gateway.settings import load_settings

    config = Path(args.config) if args.config else None
    if config is None:
        from infra.local.stack import Paths

        config = Paths(local_profile(args).state_dir).gateway_config
    if not config.exists():
        raise BadInput(f"--config: {config} does not exist; start the local stack or pass the file")
    return load_settings(config)


def cmd_anonymize(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from gateway.kms import KeyProvider
    from gateway.phi.batch import anonymize
    from gateway.phi.filter import recognizers
    from gateway.policy import load_policies

    settings = gateway_settings(args)
    policies = load_policies(settings.policies_dir)
    if args.policy not in policies:
        raise BadInput(f"--policy: unknown use case; known: {', '.join(sorted(policies))}")
    source = Path(args.input)
    if not source.exists():
        raise BadInput(f"input file {source} does not exist")
    keys = KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir)
    data_key = asyncio.run(keys.tenant_key(args.tenant))
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.2:
            last[0] = now
            print(
                f"\r  {done}/{total} conversations ({100 * done // max(total, 1)} %)", end="", file=sys.stderr
            )

    # the gateway's own recognisers: a batch export gets what a request gets
    plugins = recognizers(settings.phi_names, settings.phi_plugins)
    summary = anonymize(
        policies[args.policy], source, Path(args.output), data_key, args.tenant, progress, plugins
    )
    print("", file=sys.stderr)
    print(summary.render())
    return 0


def cmd_tenant_key_rotate(args: argparse.Namespace) -> int:
    from gateway.kms import KeyProvider

    settings = gateway_settings(args)
    KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir).rotate_tenant_key(args.tenant)
    print(
        f"tenant {args.tenant}: new data key; gateways use it within {settings.openbao.key_ttl_s:.0f} s "
        "(openbao.key_ttl_s), answers in flight still restore"
    )
    return 0


def add_parser(sub: Any) -> None:
    with_profile(sub.add_parser("up", help="start the local sovereign stack")).set_defaults(func=cmd_up)
    with_profile(sub.add_parser("down", help="stop what `up` started")).set_defaults(func=cmd_down)
    with_profile(sub.add_parser("status", help="show the local stack's components")).set_defaults(
        func=cmd_status
    )

    gw = sub.add_parser("gateway", help="the gateway").add_subparsers(dest="gateway_command", required=True)
    serve = gw.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="gateway settings YAML (else environment variables only)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    keys = gw.add_parser("keys", help="client API keys").add_subparsers(dest="keys_command", required=True)
    for name, func, helptext in (
        ("create", cmd_keys_create, "issue a key for a tenant"),
        ("list", cmd_keys_list, "list keys (ids and tenants, never secrets)"),
        ("revoke", cmd_keys_revoke, "revoke a key by id"),
    ):
        p = with_profile(keys.add_parser(name, help=helptext))
        p.add_argument("--keys-file", help="key store (default: the local stack's)")
        if name == "create":
            p.add_argument("--tenant", required=True, help="tenant the key belongs to")
        if name == "revoke":
            p.add_argument("key_id")
            p.add_argument("--kubeconfig", help="revoke in the cluster's Secret gateway-client-keys instead")
            p.add_argument("--context", help="with --kubeconfig: its context (default: current-context)")
        p.set_defaults(func=func)

    rot = with_profile(
        gw.add_parser("tenant-key", help="tenant data keys")
        .add_subparsers(dest="tk_command", required=True)
        .add_parser("rotate", help="give a tenant a new data key (no downtime)")
    )
    rot.add_argument("--tenant", required=True)
    rot.add_argument("--config", help="gateway settings YAML (default: the local stack's)")
    rot.set_defaults(func=cmd_tenant_key_rotate)

    anon = with_profile(
        sub.add_parser("anonymize", help="run the PHI filter over exported conversations (JSONL)")
    )
    anon.add_argument("--policy", required=True, help="use case whose policy applies")
    anon.add_argument(
        "--tenant", required=True, help="tenant whose keys tokenise (same tokens as the gateway)"
    )
    anon.add_argument("--config", help="gateway settings YAML (default: the local stack's)")
    anon.add_argument("input", help="JSONL: {messages: [...], context: {...}} per line")
    anon.add_argument("output", help="JSONL written with filtered messages only")
    anon.set_defaults(func=cmd_anonymize)
