"""``sovereign audit verify|ship``: the audit trail's chain, signatures and head, and shipping its
sealed segments to the Object Lock archive (the archive's code: infra/storage_cli.py,
infra/audit_archive.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.local.cli import with_profile


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.audit import verify
    from gateway.kms import transit_unwrapper
    from infra.local.cli import openbao_target

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


def add_parser(sub: Any) -> None:
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
