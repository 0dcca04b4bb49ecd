"""``sovereign catalog load``: a use case's product catalogue, as a client of the gateway's API.

The command POSTs the products (a JSON list of the gateway API's Product objects: sku, name,
category, price, and cost and margin, which the gateway never embeds, stores or shows) to the
gateway's ``/v1/sovereign/catalogue`` (gateway/catalogue.py), which filters, embeds and stores
them, replacing the catalogue loaded before, and writes the audit records; the command never
touches the database. The API key comes from ``--key-file`` or ``SOVEREIGN_API_KEY`` (default:
the local stack's demo key), as for ``sovereign memory`` (infra/memory_cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.clientkeys import TENANT_RE
from gateway.errors import BadInput
from infra.memory_cli import MemoryCommandError, _api_key

PATH = "/v1/sovereign/catalogue"


def _products(source: str) -> list[Any]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--file: cannot read {source} ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise BadInput(
            '--file: not JSON; give a JSON list of products ([{"sku": ..., "name": ...}])'
        ) from None
    if not isinstance(data, list):
        raise BadInput("--file: must be a JSON list of products (the Product objects of the gateway API)")
    return data


def cmd_catalog(args: argparse.Namespace) -> int:
    import httpx

    if args.tenant and not TENANT_RE.match(args.tenant):
        raise BadInput("--tenant: lower-case letters, digits and '-', 1-63 characters")
    body = {"sovereign": {"use_case": args.use_case}, "products": _products(args.file)}
    if args.target:
        target = args.target.rstrip("/")
    else:
        from infra.local.cli import local_profile

        target = local_profile(args).url("gateway")
    headers = {"authorization": f"Bearer {_api_key(args)}"}
    if args.tenant:
        headers["x-sovereign-tenant"] = args.tenant
    try:
        resp = httpx.post(target + PATH, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise MemoryCommandError(f"the gateway at {target} did not answer ({type(exc).__name__})") from None
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise MemoryCommandError(
            f"the gateway answered HTTP {resp.status_code}: {error.get('code', '-')}: "
            f"{error.get('message', 'no error message')}"
            + (f" (field {error['param']})" if error.get("param") else "")
        )
    print(
        f"catalogue of use case {answer['use_case']}: {answer['items']} products loaded, "
        f"{answer['replaced']} replaced"
    )
    return 0


def add_parser(sub: Any) -> None:
    from infra.local.cli import with_profile

    cat = sub.add_parser("catalog", help="a use case's product catalogue for retrieval: load")
    csub = cat.add_subparsers(dest="catalog_command", required=True)
    p = csub.add_parser("load", help="load (replace) the catalogue of a use case with retrieval")
    with_profile(p)
    p.add_argument("--file", required=True, help="JSON list of products; - for stdin")
    p.add_argument("--use-case", default="catalog-search", help="the use case (its policy has retrieval)")
    p.add_argument("--tenant", help="the tenant (must be the API key's; checked by the gateway)")
    p.add_argument("--target", help="the gateway's URL (default: the local stack's)")
    p.add_argument("--key-file", help="file with a client API key of the tenant (or SOVEREIGN_API_KEY)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_catalog)
