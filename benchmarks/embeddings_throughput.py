"""Embeddings through the gateway against the same upstream direct (issue #27): texts embedded
per second, side by side in one run, with the load generator's CPU beside every figure.

    .venv/bin/python -m benchmarks.embeddings_throughput [--seconds 5] [--rounds 2] [--double]

The upstream is the local stack's embedding model when this tree has it
(infra/local/embedding_model.py: all-MiniLM-L6-v2 converted to GGUF, served by llama-cpp-python
0.3.36's server exactly as ``sovereign up`` starts it, infra/local/stack.py
``embedding_server_argv``); with ``--double``, or without that module, the scripted upstream
(tests/doubles/scripted_upstream.py, a hash of the words: no model's cost, so the gateway's share
is as large as it can be). The table names which it was.

Both targets get the same texts: ``direct`` is the upstream's ``/v1/embeddings`` with floats
asked for; ``gateway`` is a real gateway process with its default settings (fdatasync'd audit
records, egress guard on) in front of it, use case patient-support (``embedding_model: embed``),
``encoding_format: float``. Runs (closed loop, connections back to back; two rounds, direct and
gateway alternating, medians; only requests that end inside the window count, so against the
model, whose requests of 32 texts take seconds, the window must be long: ``--seconds 20``):

- ``plain-1``: one product text per request, no patient data (the filter runs and finds none);
- ``plain-32``: 32 such texts per request (one upstream call: the batch a store writes);
- ``phi-32``: 32 short patient texts with a name, a phone number and a customer id each, and
  the patient context (every text filtered, tokens of the tenant).

The load generator, its CPU accounting and the ``client-bound`` mark are
benchmarks/gateway_overhead.py's (``load``, ``merge``, ``build_request``), not a copy.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.gateway_overhead import CLIENT_BOUND, Target, build_request, load, merge
from gateway.clientkeys import ClientKeyStore
from tests.support import (
    Upstream,
    free_port,
    gateway_config,
    running_gateway,
    start_bao,
    start_process,
    start_upstream,
)

PATH = "/v1/embeddings"
USE_CASE = "patient-support"
PRODUCTS = [
    "Blutdruckmessgerät für das Handgelenk mit Speicher für zwei Personen",
    "Sterile Kompressen 10 x 10 cm, 8-fach, 50 Stück",
    "Inhalierhilfe für Dosieraerosole, für Kinder ab 5 Jahren",
    "Fieberthermometer digital, flexible Spitze, wasserdicht",
]
NAMES = ["Erika Müller", "Jonas Schmidt", "Aylin Demir", "Piotr Nowak"]


def plain_texts(n: int) -> list[str]:
    return [f"{PRODUCTS[i % len(PRODUCTS)]} (Artikel {i})" for i in range(n)]


def phi_texts(n: int) -> tuple[list[str], dict[str, Any]]:
    """*n* short patient texts (a name, a phone number, a customer id each) and a context."""
    texts = [
        f"{NAMES[i % len(NAMES)]} fragt nach {PRODUCTS[i % len(PRODUCTS)]}, Kundennr. {4711 + i}, "
        f"Rückruf unter +49 30 12345{i:02d}"
        for i in range(n)
    ]
    return texts, {"name": NAMES[0], "phone": "+49 30 1234500", "customer_id": "4711"}


RUNS: list[tuple[str, int, bool, int]] = [
    # name, texts per request, patient data, connections
    ("plain-1", 1, False, 4),
    ("plain-32", 32, False, 4),
    ("phi-32", 32, True, 4),
]


def start_model(tmp: Path, double: bool) -> tuple[Upstream, str, dict[str, Any]]:
    """(the upstream, what it is, its gateway settings): the local stack's embedding model, or
    the scripted upstream."""
    if not double:
        try:  # by name: the module came with the local embedding model (issue #27, helper A)
            embedding_model = importlib.import_module("infra.local.embedding_model")
            stack = importlib.import_module("infra.local.stack")
        except ImportError:
            print("no infra/local/embedding_model.py in this tree: the scripted upstream", file=sys.stderr)
        else:
            gguf, _ = embedding_model.ensure_model(tmp / "models")
            port = free_port()
            argv = stack.embedding_server_argv(gguf, "127.0.0.1", port, 1)
            proc = start_process(
                "embedding",
                argv,
                f"http://127.0.0.1:{port}",
                "/v1/models",
                tmp / "embedding.log",
                timeout_s=300,
            )
            settings = {"model": stack.EMBEDDING_NAME_UPSTREAM, "dimensions": embedding_model.DIMENSIONS}
            return Upstream(proc), f"{embedding_model.MODEL_NAME} (llama-cpp-python, 1 thread)", settings
    upstream = start_upstream(tmp)
    return (
        upstream,
        "scripted upstream (tests/doubles, no model)",
        {"model": "scripted-embed", "dimensions": 384},
    )


async def measure(
    targets: list[Target], upstream_model: str, seconds: float, rounds: int, connections: int | None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, n, phi, run_connections in RUNS:
        texts, context = phi_texts(n) if phi else (plain_texts(n), None)
        per_target: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for _ in range(rounds):
            for target in targets:
                body: dict[str, Any] = {"input": texts, "encoding_format": "float"}
                if target.gateway:
                    body["model"] = "embed"
                    if context is not None:
                        body["sovereign"] = {"context": context}
                else:
                    body["model"] = upstream_model
                request = build_request(target, body, PATH)
                per_target[target.name].append(
                    await load(target, request, connections or run_connections, seconds)
                )
        results[name] = {k: {**merge(v), "texts_per_request": n} for k, v in per_target.items()}
        print(
            f"{name}: " + ", ".join(f"{k} {v['rps'] * n:.0f} texts/s" for k, v in results[name].items()),
            file=sys.stderr,
            flush=True,
        )
    return results


def report(results: dict[str, Any], upstream: str) -> str:
    rows = [
        f"upstream: {upstream}",
        "| run | target | texts/s | req/s | p50 ms | p95 ms | server CPU ms/request "
        "| client CPU (share of a core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, by_target in results.items():
        for target, r in by_target.items():
            bound = " **client-bound**" if r["client_cpu_share"] > CLIENT_BOUND else ""
            rows.append(
                f"| {name} | {target} | {r['rps'] * r['texts_per_request']:.0f} | {r['rps']:.1f} "
                f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['server_cpu_ms_per_request']:.2f} "
                f"| {100 * r['client_cpu_share']:.0f} %{bound} |"
            )
    rows += ["", "| run | gateway / direct texts/s |", "|---|---|"]
    for name, by_target in results.items():
        rows.append(f"| {name} | {by_target['gateway']['rps'] / by_target['direct']['rps']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--double", action="store_true", help="the scripted upstream, not the model")
    parser.add_argument(
        "--connections", type=int, help="connections of every run (default: the runs' own, 4); a model "
        "server embeds one request at a time: 2 keep it busy without a long queue",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "embeddings_throughput.json")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bao = start_bao(tmp)
        upstream, what, settings = start_model(tmp, args.double)
        try:
            _, key = ClientKeyStore(tmp / "keys.json").create("bench")
            embed = {"url": f"{upstream.url}/v1", "kind": "embeddings", **settings}
            config = gateway_config(
                tmp, bao.address, bao.gateway_token, upstream.url, upstreams={"embed": embed}
            )
            headers = {"authorization": f"Bearer {key}", "x-sovereign-use-case": USE_CASE}
            with running_gateway(config, tmp) as gw:
                targets = [
                    Target("direct", upstream.url, upstream.proc.proc.pid, gateway=False),
                    Target("gateway", gw.url, gw.proc.pid, headers),
                ]
                results = asyncio.run(
                    measure(targets, settings["model"], args.seconds, args.rounds, args.connections)
                )
        finally:
            upstream.proc.stop()
            bao.proc.stop()
    table = report(results, what)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(), "upstream": what}
    out.write_text(json.dumps({**meta, "results": results}, indent=2))
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
