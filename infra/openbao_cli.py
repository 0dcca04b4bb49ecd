"""``sovereign openbao snapshot|snapshots|restore|import-file``: OpenBao's Raft snapshots in the Object
Lock bucket and its copy location, the restore into a fresh OpenBao, and the DR takeover's
``pulumi import --file`` JSON (infra/openbao_backup.py and infra/openbao_import.py do the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from infra.paths import STACKS_DIR


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


def add_parser(sub: Any) -> None:
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
        p.add_argument("--stacks-dir", default=str(STACKS_DIR))
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
