"""``sovereign weights fetch`` / ``verify``: the command the weights Job and the vLLM pods' init
container run (infra/k8s_platform/inference.py renders them; infra/weights/fetch.py does the work).
Its refusals print ``sovereign weights fetch: <message>`` (or ``verify``; infra/cli.py's one
handler) and exit 1; a malformed ``--manifest-sha256`` is refused input and exits 2.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from gateway.errors import BadInput
from infra.weights.fetch import fetch, verify
from infra.weights.manifest import load_public_keys


def add_parser(sub: Any) -> None:
    weights = sub.add_parser(
        "weights", help="model weights: fetch from EU object storage / verify against the SHA-256 manifest"
    )
    wsub = weights.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="download a model from EU object storage and verify it")
    f.add_argument("--source", required=True, help="s3://bucket/prefix/")
    f.add_argument("--endpoint", required=True, help="S3 endpoint URL (the stack's object storage)")
    f.add_argument(
        "--dest", required=True, type=Path,
        help="the model's folder; with --manifest-sha256 the release goes to DEST/<manifest-sha256>/",
    )  # fmt: skip
    f.add_argument("--manifest", default="SHA256SUMS")
    f.add_argument("--public-key", type=Path, help="signing key file: the manifest must be signed")
    v = wsub.add_parser("verify", help="verify a model folder against its SHA-256 manifest")
    v.add_argument("--dir", required=True, type=Path)
    v.add_argument("--manifest", default="SHA256SUMS")
    for p in (f, v):
        p.add_argument(
            "--manifest-sha256", help="the approved release: refuse a manifest with another SHA-256"
        )
        p.set_defaults(func=cmd_weights)


def cmd_weights(args: argparse.Namespace) -> int:
    pin = args.manifest_sha256
    if pin is not None and not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise BadInput("--manifest-sha256: give the manifest's SHA-256 as 64 lowercase hex digits")
    if args.weights_command == "fetch":
        keys = load_public_keys(args.public_key) if args.public_key else None
        count = fetch(args.source, args.endpoint, args.dest, args.manifest, keys, pin)
    else:
        count = verify(args.dir, args.manifest, pin)
    print(f"sovereign weights: {count} files verified against {args.manifest}")
    return 0
