"""``sovereign``: the command line of sovereign-llm.

sovereign up | down | status                 the local sovereign stack (stacks/local.yaml)
sovereign gateway serve --config FILE        run the gateway
sovereign gateway keys create --tenant NAME  issue a client API key (shown once)
sovereign gateway keys list | revoke KEY_ID [--kubeconfig F]   (--kubeconfig: in the cluster's Secret)
sovereign audit verify FILE [--stack S]      verify the audit trail's chain and signatures (and archive)
sovereign audit ship FILE --stack S          ship sealed audit segments to the Object Lock archive
sovereign plan --stack NAME                  the region stack under Pulumi's mocks: table, plan.json,
                                             kubernetes.yaml, completeness findings; non-zero on a
                                             residency/policy violation
sovereign images list --stack NAME           every image the stack needs: upstream -> EU mirror, digest
sovereign charts list --stack NAME           every Helm chart: upstream -> EU mirror (OCI), digest
sovereign charts check --stack N --chart-dir D   render the pulled charts with the stack's values, check them
sovereign converge --playbook FILE           run the host playbook via ansible-runner (pulumi up calls it)
sovereign tunnel open|close|status --stack N SSH tunnel through the bastion to the Kubernetes API
sovereign harden --stack NAME                harden the stack's hosts (inventory from the stack's outputs)
sovereign verify --stack NAME                testinfra checks of the stack's hosts, JUnit report
sovereign loadtest --target URL --profile P  Locust suite headless against a gateway, SLA verdict
sovereign loadtest compare A B [--json]      difference between two runs, verdict on regressions
sovereign weights fetch|verify …             model weights from EU object storage, SHA-256 verified
sovereign bootstrap-backend --stack NAME     state, model and audit-archive buckets (infra/storage_cli.py)
sovereign models import|verify|public-key …  approved weights with a signed manifest in the model bucket
sovereign evidence --stack NAME              compliance evidence: data flow, residency, controls (md, html)
sovereign openbao snapshot --stack S         a Raft snapshot into the Object Lock bucket and the copy location
sovereign openbao snapshots --stack S        list the snapshots in both locations [--location primary|copy]
sovereign openbao restore SNAPSHOT --stack S restore one into a fresh OpenBao, then unseal it [--from-copy]
sovereign openbao import-file --stack S      DR takeover: `pulumi import --file` JSON of the restored objects
sovereign incident suspend --use-case N --reason T   the kill switch: refuse a use case (or --all) at
                                             once (503 use_case_suspended); resume | status
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import BAD_INPUT, FAILED, BadInput, SovereignError

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings
    from infra.local.profile import LocalProfile

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO_ROOT / "stacks" / "local.yaml"


def _profile(args: argparse.Namespace) -> LocalProfile:
    from infra.local.profile import load_profile

    return load_profile(Path(args.profile), base=REPO_ROOT, state_dir=args.state_dir)


def cmd_up(args: argparse.Namespace) -> int:
    from infra.local.stack import LocalStack

    LocalStack(_profile(args)).up()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from infra.local.stack import LocalStack

    stopped = LocalStack(_profile(args)).down()
    print("stopped: " + ", ".join(stopped) if stopped else "the local stack is not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from infra.local.stack import COMPONENTS, Paths, running

    profile = _profile(args)
    alive = running(Paths(profile.state_dir))
    for name in COMPONENTS:
        state = f"running (pid {alive[name]['pid']})" if name in alive else "stopped"
        print(f"{name:<9} {state:<22} {profile.url(name)}")
    return 0 if alive else 3


def _keys_file(args: argparse.Namespace) -> Path:
    if args.keys_file:
        return Path(args.keys_file)
    from infra.local.stack import Paths

    return Paths(_profile(args).state_dir).keys_file


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

        profile = _profile(args)
        address = address or profile.url("openbao")
        token_file = token_file or str(Paths(profile.state_dir).secrets / token_name)
    return address, token_file


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.audit import verify
    from gateway.kms import transit_unwrapper

    address, token_file = openbao_target(args, "auditor.token")
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise BadInput(f"--token-file {token_file} does not exist; pass an auditor token file") from None
    path = Path(args.file)
    if not path.exists() and not path.with_name(path.name + ".segments").is_dir():
        raise BadInput(f"audit file {path} does not exist")
    unwrap = transit_unwrapper(address, token, args.transit_key, args.transit_mount)
    from infra import storage_cli

    archived = storage_cli.archived_segments(args)  # the Object Lock archive, with --stack or --config
    result = verify(path, unwrap, check_head=not args.no_head, archived=archived)
    for line in result.report():  # the verdict, then unfinished and abandoned requests by id
        print(line)
    if result.ok and args.require_complete and result.unfinished:
        print(f"--require-complete: {len(result.unfinished)} admitted requests have no final record")
        return 1
    return 0 if result.ok else 1


def _gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The gateway's settings: --config, else the local stack's generated config."""
    from gateway.settings import load_settings

    config = Path(args.config) if args.config else None
    if config is None:
        from infra.local.stack import Paths

        config = Paths(_profile(args).state_dir).gateway_config
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

    settings = _gateway_settings(args)
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

    settings = _gateway_settings(args)
    KeyProvider(settings.openbao, settings.openbao.wrapped_keys_dir).rotate_tenant_key(args.tenant)
    print(
        f"tenant {args.tenant}: new data key; gateways use it within {settings.openbao.key_ttl_s:.0f} s "
        "(openbao.key_ttl_s), answers in flight still restore"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from infra import catalogue
    from infra import plan as planner
    from infra.policy.rules import RULES

    if stale := catalogue.load().stale(datetime.date.today()):
        print(stale, file=sys.stderr)
    result = planner.plan_stack(Path(args.stacks_dir), args.stack)
    out_dir = Path(args.out) if args.out else REPO_ROOT / ".sovereign" / "plan" / args.stack
    plan_path, k8s_path = planner.write(result, out_dir)
    print(planner.table(result))
    print()
    custom = result.custom()
    print(
        f"stack {result.stack}: {len(custom)} resources, "
        f"{len(result.declared_hosts)} declared dedicated hosts, "
        f"{len(result.kubernetes_objects())} Kubernetes objects"
    )
    provider = result.secrets_provider or "not set (pulumi stack init --secrets-provider='hashivault://…')"
    print(f"secrets provider: {provider}")
    if result.config["backend"]["allow_saas"]:
        print(f"WARNING: Pulumi SaaS backend allowed: {result.config['backend']['justification']}")
    print(f"plan:       {plan_path}\nkubernetes: {k8s_path}")
    for blocker in result.blockers:
        print(f"WARNING: `pulumi up` would stop before creating anything: {blocker}", file=sys.stderr)
    if result.findings_as_blockers:
        print(
            f"completeness: {len(result.findings_as_blockers)} image and chart finding(s) are the image and "
            "chart deploy blockers above (plan.json completeness.deploy_blockers)",
            file=sys.stderr,
        )
    if result.findings:
        verdict = "" if planner.COMPLETENESS_FAILS_PLAN else " (reported, not yet failing the plan)"
        print(f"\n{len(result.findings)} completeness finding(s){verdict}:", file=sys.stderr)
        for finding in result.findings:
            print(f"  {finding}", file=sys.stderr)
    else:
        print("completeness: every kind, StorageClass, reference, image and namespace policy is provided")
    if result.violations:
        print(f"\n{len(result.violations)} policy violation(s):", file=sys.stderr)
        for violation in result.violations:
            print(f"  {violation}", file=sys.stderr)
        return 1
    print(f"policy: {len(custom)} resources checked against {len(RULES)} rules, no violation")
    return 1 if result.findings and planner.COMPLETENESS_FAILS_PLAN else 0


def cmd_images_list(args: argparse.Namespace) -> int:
    from infra import config, images

    cfg = config.load(Path(args.stacks_dir), args.stack)
    needed = images.required(cfg)
    mirror = cfg.endpoints.registry_mirror or "(endpoints.registry_mirror not set)"
    print(
        f"# stack {cfg.stack}: {len(needed)} images, each to mirror to {mirror}, "
        "then its digest in platform.images"
    )
    missing = 0
    for image in needed:
        target = image.mirror(cfg) or f"<endpoints.registry_mirror>/{images.mirror_path_hint(image.upstream)}"
        digest = image.digest(cfg)
        missing += digest is None
        print(f"{image.upstream} -> {target} {digest or '(no digest)'}  # {'; '.join(image.used_by)}")
    if missing:
        print(
            f"{missing} image(s) without a digest: `crane digest <mirror reference>` after mirroring",
            file=sys.stderr,
        )
    return 0


def cmd_charts_list(args: argparse.Namespace) -> int:
    from infra import chart_sources, config

    cfg = config.load(Path(args.stacks_dir), args.stack)
    needed = chart_sources.installed(cfg)
    mirror = cfg.endpoints.registry_mirror or "(endpoints.registry_mirror not set)"
    print(
        f"# stack {cfg.stack}: {len(needed)} Helm charts, each to push to {mirror} as an OCI artefact, "
        "then its digest in platform.charts"
    )
    missing = 0
    for chart in needed:
        target = (
            chart.mirror(cfg)
            or f"oci://<endpoints.registry_mirror>/{chart_sources.MIRROR_FOLDER}/{chart.name}"
        )
        digest = chart.digest(cfg)
        missing += digest is None
        print(f"{chart.key} from {chart.upstream} -> {target} {digest or '(no digest)'}  # {chart.used_for}")
        print(f"    {chart.pull_and_push(cfg)}")
    if missing:
        print(
            f"{missing} chart(s) without a digest: add the Digest `helm push` prints to platform.charts",
            file=sys.stderr,
        )
    return 0


def cmd_charts_check(args: argparse.Namespace) -> int:
    from infra.policy import chart_render

    if not Path(args.chart_dir).is_dir():
        raise BadInput("--chart-dir: no such folder; `helm pull` each chart there first")
    try:
        findings = chart_render.check_charts(args.chart_dir, args.stack, stacks_dir=args.stacks_dir)
    except ImportError:
        raise BadInput("helm-python-sdk is not installed: `pip install -e '.[dev]'` (make install)") from None
    for finding in findings:
        print(f"  {finding}", file=sys.stderr)
    if findings:
        print(f"{len(findings)} finding(s) in the rendered charts of {args.stack}", file=sys.stderr)
        return 1
    print(f"charts of {args.stack}: rendered with the stack's values, no finding")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from infra.weights import cli

    return cli.main(args.weights_args)


def _hosts_inventory(args: argparse.Namespace) -> dict[str, Any]:
    from infra.hosts import operate

    return operate.load_inventory(args.stack, args.inventory)  # HostsError: bad input, exit 2


def cmd_harden(args: argparse.Namespace) -> int:
    from infra.hosts import operate

    return operate.harden(_hosts_inventory(args), verbosity=args.verbose)


def cmd_verify(args: argparse.Namespace) -> int:
    from infra.hosts import operate

    hosts = _hosts_inventory(args)
    junit = args.junit or Path("reports") / f"verify-{args.stack or 'inventory'}.xml"
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


def cmd_loadtest(args: argparse.Namespace) -> int:
    from loadtests import cli as loadtest

    argv = loadtest.command(
        target=args.target, profile=args.profile, users=args.users, spawn_rate=args.spawn_rate,
        run_time=args.run_time, out=args.out, api_key_file=args.api_key_file,
        arrival_rate=args.arrival_rate, processes=args.processes, use_cases=args.use_cases,
        stamps=args.stamps, arrival=args.arrival, max_in_flight=args.max_in_flight, warm_up=args.warm_up,
        workload=args.workload, seed=args.seed, ca_file=args.ca_file, insecure=args.insecure,
    )  # fmt: skip
    return loadtest.run(argv, args.out)


def cmd_converge(args: argparse.Namespace) -> int:
    from infra.hosts import converge

    return converge.main(args.playbook, verbosity=args.verbose, token_stdin=args.token_stdin)


def _snapshot_stores(args: argparse.Namespace, only: str | None = None) -> list[Any]:
    """The primary store, then the copy's (storage.openbao_snapshot_copy); *only* one of them."""
    from infra import config, objectstore, openbao_backup

    if args.stack:
        cfg = config.load(Path(args.stacks_dir), args.stack)
        if only == "copy":
            return [openbao_backup.store_from_stack(cfg, "copy", args.copy_profile)]
        if only == "primary":
            return [openbao_backup.store_from_stack(cfg)]
        return openbao_backup.stores_from_stack(cfg, args.copy_profile)
    stores = openbao_backup.stores_from_settings(openbao_backup.load_settings(args.config))
    if only is not None:
        stores = [s for s in stores if s.location == only]
        if not stores:
            raise objectstore.StorageError(f"{args.config}: names no {only} location")
    return stores


def cmd_openbao_snapshot(args: argparse.Namespace) -> int:
    from infra import openbao_backup, storage_cli

    store, *copies = _snapshot_stores(args)
    if args.config:  # in the CronJob's pod: Kubernetes auth as its own role
        bao = openbao_backup.kubernetes_login(openbao_backup.load_settings(args.config))
    else:
        address, token = storage_cli.openbao_access(args)
        bao = openbao_backup.client(address, token, args.ca_file)
    name, snap = openbao_backup.take_and_upload(bao, store, *copies)
    for s in (store, *copies):
        print(f"sovereign openbao: snapshot {s.url(name)} on {s.endpoint} ({s.location}; {snap.size} bytes, "
              f"sha256 {snap.sha256}), locked for {s.retention_days} days ({s.lock_mode})")  # fmt: skip
    return 0


def cmd_openbao_snapshots(args: argparse.Namespace) -> int:
    from infra import openbao_backup

    for store in _snapshot_stores(args, args.location):
        found = openbao_backup.snapshots(store)
        for s in found:
            print(f"{s.name}  {s.size:>12} bytes  {s.modified.isoformat()}  {store.location}")
        print(f"{len(found)} snapshot(s) under {store.url()} on {store.endpoint} ({store.location})",
              file=sys.stderr)  # fmt: skip
    return 0


def _unseal_keys() -> list[str]:
    """Unseal keys from the custodians: typed without echo at a terminal, else one per line on stdin."""
    if sys.stdin.isatty():
        import getpass

        keys = []
        while key := getpass.getpass("unseal key (empty line: done): ").strip():
            keys.append(key)
        return keys
    return [line.strip() for line in sys.stdin if line.strip()]


def cmd_openbao_restore(args: argparse.Namespace) -> int:
    import tempfile

    from infra import openbao_backup, storage_cli

    address, token = storage_cli.openbao_access(args)
    [store] = _snapshot_stores(args, "copy" if args.from_copy else "primary")
    with tempfile.TemporaryDirectory(prefix="openbao-restore-") as tmp:
        snap = openbao_backup.download(store, args.snapshot, Path(tmp) / "raft.snap")
        openbao_backup.restore(openbao_backup.client(address, token, args.ca_file), snap.path)
    print(f"sovereign openbao: restored {args.snapshot} from the {store.location} location "
          f"({store.endpoint}; sha256 {snap.sha256}) into {address}", file=sys.stderr)  # fmt: skip
    if not openbao_backup.after_restore(address, args.ca_file):
        print(f"sovereign openbao: {address} stays unsealed: the snapshot is of this cluster (its own keys)")
        return 0
    if not args.unseal:
        print("sovereign openbao: sealed; the custodians unseal it with the ORIGINAL unseal keys "
              "(`bao operator unseal`, or this command with --unseal)", file=sys.stderr)  # fmt: skip
        return 0
    openbao_backup.unseal(address, _unseal_keys(), args.ca_file)
    print(f"sovereign openbao: {address} unsealed and active with the snapshot's state")
    return 0


def _openbao_parsers(sub: Any) -> None:
    ob = sub.add_parser("openbao", help="OpenBao Raft snapshots: take, list, restore")
    osub = ob.add_subparsers(dest="openbao_command", required=True)
    snap = osub.add_parser("snapshot", help="take a Raft snapshot into the stack's Object Lock bucket")
    listing = osub.add_parser("snapshots", help="list the snapshots in the bucket")
    rest = osub.add_parser("restore", help="restore a snapshot into a fresh, unsealed OpenBao, then unseal")
    rest.add_argument("snapshot", help="a name from `sovereign openbao snapshots`, or `latest`")
    from infra import openbao_import  # `import-file`: the DR takeover's `pulumi import --file` JSON

    openbao_import.add_parser(osub)
    commands = ((snap, cmd_openbao_snapshot), (listing, cmd_openbao_snapshots), (rest, cmd_openbao_restore))
    for p, func in commands:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--stack", help="region stack whose Object Lock bucket holds the snapshots")
        where.add_argument("--config", type=Path, help="the snapshot CronJob's settings file (in the pod)")
        p.add_argument("--stacks-dir", default=str(REPO_ROOT / "stacks"))
        p.add_argument(
            "--copy-profile",
            help="AWS profile with the copy location's key (storage.openbao_snapshot_copy; default: the "
            "same credentials as the primary's)",
        )
        if p is not listing:
            p.add_argument("--openbao-address", help="OpenBao URL (default: VAULT_ADDR)")
            p.add_argument("--token-file", help="file with an OpenBao token (default: VAULT_TOKEN)")
            p.add_argument("--ca-file", type=Path, help="CA certificate OpenBao's TLS certificate chains to")
        p.set_defaults(func=func)
    listing.add_argument(
        "--location", choices=("primary", "copy"),
        help="only the primary bucket or only the copy (storage.openbao_snapshot_copy); default: both",
    )  # fmt: skip
    rest.add_argument(
        "--from-copy", action="store_true",
        help="read the snapshot from the copy location (storage.openbao_snapshot_copy): the DR takeover, "
        "when the primary region's object storage is lost",
    )  # fmt: skip
    rest.add_argument(
        "--unseal", action="store_true",
        help="then read the original unseal keys (without echo at a terminal, else one per line on stdin)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sovereign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--profile", default=str(DEFAULT_PROFILE), help="local profile (default: %(default)s)")
        p.add_argument("--state-dir", default=None, help="override the profile's state_dir")
        return p

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

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    ver = with_profile(audit.add_parser("verify", help="verify chain, signatures and head"))
    ver.add_argument("file")
    ver.add_argument("--openbao-address", help="default: the local stack's OpenBao")
    ver.add_argument("--token-file", help="auditor token (decrypt on the audit key); default: local stack's")
    ver.add_argument("--transit-key", default="audit-hmac")
    ver.add_argument("--transit-mount", default="transit")
    ver.add_argument("--no-head", action="store_true", help="skip the truncation check against FILE.head")
    ver.add_argument(
        "--require-complete",
        action="store_true",
        help="exit 1 also when a request forwarded to the model has no final record (a stopped trail)",
    )
    ver.set_defaults(func=cmd_audit_verify)
    from infra import storage_cli

    storage_cli.add_archive_flags(ver)
    ship = audit.add_parser("ship", help="ship sealed audit segments to the Object Lock archive, in order")
    ship.add_argument("file", help="the audit trail (its sealed segments are in FILE.segments/)")
    storage_cli.add_archive_flags(ship, required=True)
    ship.add_argument(
        "--prune", action="store_true", help="delete local segments the archive holds (not the newest)"
    )
    ship.add_argument(
        "--every", type=float, help="keep running, shipping every N seconds (the pod's sidecar)"
    )
    ship.add_argument("--heartbeat", type=Path, help="with --every: file touched after each round (liveness)")
    ship.set_defaults(func=storage_cli.cmd_audit_ship)

    plan = sub.add_parser("plan", help="offline plan of a region stack (Pulumi mocks, no credentials)")
    plan.add_argument("--stack", required=True, help="stack name: stacks/Pulumi.<stack>.yaml")
    plan.add_argument("--stacks-dir", default=str(REPO_ROOT / "stacks"))
    plan.add_argument("--out", help="output folder (default .sovereign/plan/<stack>)")
    plan.set_defaults(func=cmd_plan)

    img = sub.add_parser("images", help="the container images of a region stack").add_subparsers(
        dest="images_command", required=True
    )
    img_list = img.add_parser(
        "list", help="every image the stack needs: upstream -> EU mirror reference, digest"
    )
    img_list.add_argument("--stack", required=True, help="stack name: stacks/Pulumi.<stack>.yaml")
    img_list.add_argument("--stacks-dir", default=str(REPO_ROOT / "stacks"))
    img_list.set_defaults(func=cmd_images_list)

    chart = sub.add_parser("charts", help="the Helm charts of a region stack").add_subparsers(
        dest="charts_command", required=True
    )
    chart_list = chart.add_parser(
        "list", help="every chart the stack installs: upstream -> EU mirror (OCI), digest, helm pull/push"
    )
    chart_list.add_argument("--stack", required=True, help="stack name: stacks/Pulumi.<stack>.yaml")
    chart_list.add_argument("--stacks-dir", default=str(REPO_ROOT / "stacks"))
    chart_list.set_defaults(func=cmd_charts_list)
    chart_check = chart.add_parser(
        "check", help="render the pulled charts with the stack's values (real templates) and check them"
    )
    chart_check.add_argument("--stack", required=True, help="stack name: stacks/Pulumi.<stack>.yaml")
    chart_check.add_argument("--stacks-dir", default=str(REPO_ROOT / "stacks"))
    chart_check.add_argument(
        "--chart-dir", required=True, help="folder with <chart>-<version>.tgz as `helm pull` writes them"
    )
    chart_check.set_defaults(func=cmd_charts_check)

    weights = sub.add_parser(
        "weights", help="model weights: fetch from EU object storage / verify against the SHA-256 manifest"
    )
    weights.add_argument("weights_args", nargs=argparse.REMAINDER, help="fetch … | verify …")
    weights.set_defaults(func=cmd_weights)

    from infra import storage_cli

    storage_cli.add_parsers(sub)
    from infra.evidence import cli as evidence_cli

    evidence_cli.add_parser(sub)
    _openbao_parsers(sub)
    from infra import incident as incident_cli

    incident_cli.add_parsers(sub, with_profile)

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

    lt = sub.add_parser(
        "loadtest",
        help="Locust suite headless against a gateway; exits 1 on an SLA miss",
        description="The Locust suite headless against a gateway, with the SLA verdict (docs/load-tests.md). "
        "`sovereign loadtest compare A B` compares two runs' report folders.",
    )
    lt.add_argument(
        "--target", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080 or https://..."
    )
    lt.add_argument(
        "--profile", required=True, help="SLA profile: gpu-interactive, gpu-standard, cpu-local or a .yaml"
    )
    lt.add_argument("--users", type=int, default=4, help="concurrent users (closed loop: streams in flight)")
    lt.add_argument("--spawn-rate", type=float, default=1.0, help="users started per second (ramp-up)")
    lt.add_argument("--run-time", default="60s", help="e.g. 90s, 10m")
    lt.add_argument(
        "--warm-up", default="0s",
        help="streams started in the first DURATION (or before all users run) are reported, not judged",
    )  # fmt: skip
    lt.add_argument(
        "--arrival-rate", type=float, default=0.0,
        help="open loop: requests/s over all users, started on schedule whether or not earlier ones ended "
        "(0: closed loop, each user sends its next request when the last one ended)",
    )  # fmt: skip
    lt.add_argument(
        "--arrival", choices=("poisson", "constant"), default="poisson",
        help="open-loop arrivals: poisson (exponential gaps, default) or constant (evenly spaced)",
    )  # fmt: skip
    lt.add_argument(
        "--max-in-flight", type=int, default=1000,
        help="open loop: streams in flight per process at most; arrivals beyond are dropped and counted",
    )  # fmt: skip
    lt.add_argument("--processes", type=int, default=0, help="fork a master and N worker processes")
    lt.add_argument(
        "--workload", default="",
        help="workload: a name in loadtests/workloads or a .yaml path (default healthcare-default)",
    )  # fmt: skip
    lt.add_argument(
        "--use-cases", default="", help="comma list of the workload's use cases (default: all, weighted)"
    )
    lt.add_argument("--seed", type=int, default=7, help="seed of the synthetic requests and arrival schedule")
    lt.add_argument(
        "--stamps", choices=("kernel", "read"), default="kernel",
        help="when a token arrived: the kernel's receive stamp (default) or the clock when Python read it",
    )  # fmt: skip
    lt.add_argument(
        "--ca-file", type=Path, help="https: PEM file of the CA that signed the gateway's certificate"
    )
    lt.add_argument(
        "--insecure", action="store_true", help="https: skip certificate verification (test stacks)"
    )
    lt.add_argument("--api-key-file", type=Path, help="API key file (default: the local stack's demo key)")
    lt.add_argument("--out", type=Path, default=Path("reports") / "loadtest", help="report folder")
    lt.set_defaults(func=cmd_loadtest)

    conv = sub.add_parser("converge", help="run the host playbook through ansible-runner (used by pulumi up)")
    conv.add_argument("--playbook", required=True, help="playbook, relative to the repository root")
    conv.add_argument(
        "--token-stdin", action="store_true", help="read the cluster's join token from stdin (pulumi up does)"
    )
    conv.add_argument("-v", "--verbose", action="count", default=0)
    conv.set_defaults(func=cmd_converge)
    return parser


def _command(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """The command's words in *argv* (``gateway keys revoke``), for the error line."""
    words: list[str] = []
    for token in argv:
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if token not in choices:
            break
        words.append(token)
        parser = choices[token]
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A refused or failed command (``SovereignError``) prints
    ``sovereign <command>: <message>``, its problems one per line, and exits with the error's
    code: 2 for input the command refuses (a stack config, a profile, a flag, an input file), 1
    for a check or an operation that failed (README.md, Errors and exit codes)."""
    given = sys.argv[1:] if argv is None else argv
    if given[:2] == ["loadtest", "compare"]:  # two runs' report folders (loadtests/compare.py)
        from loadtests import compare

        return int(compare.main(given[2:]))
    parser = build_parser()
    args = parser.parse_args(given)
    from pydantic import ValidationError

    from gateway import validation

    command = f"sovereign {_command(parser, given)}"
    try:
        return int(args.func(args))
    except SovereignError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # the gateway's settings: bad input, its keys never their values
        for problem in validation.problems(exc):
            print(f"{command}: {exc.title}: {problem.path or 'settings'}: {problem.message}", file=sys.stderr)
        return BAD_INPUT
    except FileNotFoundError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
