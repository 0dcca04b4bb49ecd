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
from typing import Any

from gateway.clientkeys import TENANT_RE
from gateway.errors import BadInput
from infra.memory_cli import post_to_gateway, read_json_option

PATH = "/v1/sovereign/catalogue"


def _products(source: str) -> list[Any]:
    products: list[Any] = read_json_option(
        source, "--file", list,
        'a JSON list of products (the Product objects of the gateway API: [{"sku": ..., "name": ...}])',
    )  # fmt: skip
    return products


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.tenant and not TENANT_RE.match(args.tenant):
        raise BadInput("--tenant: lower-case letters, digits and '-', 1-63 characters")
    body = {"sovereign": {"use_case": args.use_case}, "products": _products(args.file)}
    answer = post_to_gateway(args, PATH, body)
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
