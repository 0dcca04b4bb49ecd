"""``sovereign weights fetch`` / ``verify``: the command the weights Job and the vLLM pods' init
container run (infra/k8s_platform/inference.py renders them; infra/weights/fetch.py does the work).
Its refusals print ``sovereign weights: <message>`` and exit 1, as the pods' logs have always shown.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from infra.weights.fetch import fetch, verify
from infra.weights.manifest import ModelsError, WeightsError, load_public_keys


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
    try:
        pin = args.manifest_sha256
        if pin is not None and not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise WeightsError("--manifest-sha256: give the manifest's SHA-256 as 64 lowercase hex digits")
        if args.weights_command == "fetch":
            keys = None
            if args.public_key:
                try:
                    keys = load_public_keys(args.public_key)
                except ModelsError as exc:
                    raise WeightsError(str(exc)) from None
            count = fetch(args.source, args.endpoint, args.dest, args.manifest, keys, pin)
        else:
            count = verify(args.dir, args.manifest, pin)
    except WeightsError as exc:
        print(f"sovereign weights: {exc}", file=sys.stderr)
        return 1
    print(f"sovereign weights: {count} files verified against {args.manifest}")
    return 0
