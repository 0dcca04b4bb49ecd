"""Gateway overhead: the same requests directly against the upstream and through the gateway,
side by side in one run on loopback (real OpenBao dev server, scripted upstream, real gateway
process with its default settings: fsync'd audit records, egress guard on).

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 400] [--concurrency 16]

Measured per mode (non-streaming and SSE streaming):
- latency p50/p99 at 1 client (the per-request overhead the gateway adds);
- throughput at --concurrency clients, and the gateway's share of the direct throughput;
- streaming: time to first token at the client (first non-empty content delta).
Direct and gateway runs alternate (two rounds each) so drift hits both alike.
Paired (1 client, plain and PHI): one direct request, then the same through the gateway,
alternating request by request, so a slow phase of the VM hits both sides of each pair; the
added latency is the median of the per-pair differences.
Targets (issue: foundation): +<= 3 ms at p50, >= 25 % of direct throughput at 16 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.clientkeys import ClientKeyStore
from tests.support import gateway_config, running_gateway, start_bao, start_upstream

MESSAGES = [{"role": "user", "content": "What are the opening hours of the Berlin practice next week?"}]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def one(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, float | None]:
    """(latency s, time to first token s or None) of one request; raises on a non-200."""
    t0 = time.perf_counter()
    if not body.get("stream"):
        resp = await client.post(url, json=body, headers=headers)
        resp.raise_for_status()
        return time.perf_counter() - t0, None
    ttft = None
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if ttft is None and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    ttft = time.perf_counter() - t0
    return time.perf_counter() - t0, ttft


async def run(
    url: str, body: dict[str, Any], headers: dict[str, str], requests: int, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    ttfts: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        for _ in range(min(20, requests)):  # warm-up: connections, key caches
            await one(client, url, body, headers)

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                latency, ttft = await one(client, url, body, headers)
                latencies.append(latency)
                if ttft is not None:
                    ttfts.append(ttft)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {
        "requests": requests,
        "rps": requests / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
    }
    if ttfts:
        result["ttft_p50_ms"] = pct(ttfts, 50) * 1000
        result["ttft_p99_ms"] = pct(ttfts, 99) * 1000
    return result


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


async def measure(
    upstream_url: str, gateway_url: str, api_key: str, args: argparse.Namespace
) -> dict[str, Any]:
    direct_url = f"{upstream_url}/v1/chat/completions"
    gw_url = f"{gateway_url}/v1/chat/completions"
    gw_headers = {"authorization": f"Bearer {api_key}", "x-sovereign-use-case": "patient-support"}
    results: dict[str, Any] = {}
    phi_text, phi_context = phi_message()
    phi_messages = [{"role": "user", "content": phi_text}]
    for mode, stream, messages, context in (
        ("plain", False, MESSAGES, None),
        ("stream", True, MESSAGES, None),
        ("phi", False, phi_messages, phi_context),
        ("phi-stream", True, phi_messages, phi_context),
    ):
        direct_body = {"model": "scripted", "messages": messages, "max_tokens": 64, "stream": stream}
        gw_body: dict[str, Any] = {"messages": messages, "max_tokens": 64, "stream": stream}
        if context is not None:
            gw_body["sovereign"] = {"context": context}
        runs = (("c1", 1, args.requests // 2), (f"c{args.concurrency}", args.concurrency, args.requests))
        for label, conc, n in runs:
            direct_rounds, gw_rounds = [], []
            for _ in range(2):
                direct_rounds.append(await run(direct_url, direct_body, {}, n, conc))
                gw_rounds.append(await run(gw_url, gw_body, gw_headers, n, conc))
            results[f"{mode}-{label}"] = {"direct": merge(direct_rounds), "gateway": merge(gw_rounds)}
        if not stream:
            results[f"{mode}-c1-paired"] = await paired(
                direct_url, direct_body, gw_url, gw_body, gw_headers, args.requests
            )
    return results


async def paired(
    direct_url: str,
    direct_body: dict[str, Any],
    gw_url: str,
    gw_body: dict[str, Any],
    gw_headers: dict[str, str],
    requests: int,
) -> dict[str, Any]:
    """One client; each direct request followed by the same through the gateway."""
    direct, gateway = [], []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        for _ in range(20):  # warm-up: connections, key caches
            await one(client, direct_url, direct_body, {})
            await one(client, gw_url, gw_body, gw_headers)
        for _ in range(requests):
            direct.append((await one(client, direct_url, direct_body, {}))[0])
            gateway.append((await one(client, gw_url, gw_body, gw_headers))[0])
    return {
        "pairs": requests,
        "direct_p50_ms": pct(direct, 50) * 1000,
        "gateway_p50_ms": pct(gateway, 50) * 1000,
        "added_p50_ms": statistics.median(g - d for d, g in zip(direct, gateway, strict=True)) * 1000,
    }  # fmt: skip


def phi_message() -> tuple[str, dict[str, Any]]:
    """A 1 KB synthetic patient message, dense with identifiers, and its context."""
    from benchmarks.phi_filter import messages

    return messages(1)[0]


def report(results: dict[str, Any], concurrency: int) -> str:
    rows = [
        "| run | direct p50 ms | gateway p50 ms | added p50 ms | direct p99 ms | gateway p99 ms "
        "| direct req/s | gateway req/s | gateway share | TTFT p50 direct / gateway ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if name.endswith("-paired"):
            continue
        d, g = r["direct"], r["gateway"]
        ttft = f"{d['ttft_p50_ms']:.2f} / {g['ttft_p50_ms']:.2f}" if "ttft_p50_ms" in d else "-"
        rows.append(
            f"| {name} | {d['p50_ms']:.2f} | {g['p50_ms']:.2f} | {g['p50_ms'] - d['p50_ms']:+.2f} "
            f"| {d['p99_ms']:.2f} | {g['p99_ms']:.2f} | {d['rps']:.0f} | {g['rps']:.0f} "
            f"| {100 * g['rps'] / d['rps']:.0f} % | {ttft} |"
        )
    plain1, plainc = results["plain-c1"], results[f"plain-c{concurrency}"]
    added = plain1["gateway"]["p50_ms"] - plain1["direct"]["p50_ms"]
    share = plainc["gateway"]["rps"] / plainc["direct"]["rps"]
    rows.append("")
    rows.append(f"target p50 overhead <= 3 ms: {'MET' if added <= 3 else 'MISSED'} ({added:+.2f} ms)")
    rows.append(
        f"target throughput share >= 25 % at {concurrency} clients: "
        f"{'MET' if share >= 0.25 else 'MISSED'} ({100 * share:.0f} %)"
    )
    phi1, phic = results["phi-c1"], results[f"phi-c{concurrency}"]
    added = phi1["gateway"]["p50_ms"] - phi1["direct"]["p50_ms"]
    share = phic["gateway"]["rps"] / phic["direct"]["rps"]
    rows.append(
        f"with the PHI filter, p50 overhead <= 5 ms: {'MET' if added <= 5 else 'MISSED'} ({added:+.2f} ms)"
    )
    rows.append(
        f"with the PHI filter, throughput share >= 20 % at {concurrency} clients: "
        f"{'MET' if share >= 0.20 else 'MISSED'} ({100 * share:.0f} %)"
    )
    rows += ["", "| paired, 1 client | pairs | direct p50 ms | gateway p50 ms | added (median of pairs) ms |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name in ("plain-c1-paired", "phi-c1-paired"):
        r = results[name]
        rows.append(f"| {name.removesuffix('-c1-paired')} | {r['pairs']} | {r['direct_p50_ms']:.2f} "
                    f"| {r['gateway_p50_ms']:.2f} | {r['added_p50_ms']:+.2f} |")  # fmt: skip
    plain, phi = results["plain-c1-paired"]["added_p50_ms"], results["phi-c1-paired"]["added_p50_ms"]
    rows.append("")
    rows.append(f"paired: p50 overhead <= 3 ms: {'MET' if plain <= 3 else 'MISSED'} ({plain:+.2f} ms)")
    verdict = "MET" if phi <= 5 else "MISSED"
    rows.append(f"paired: with the PHI filter, p50 overhead <= 5 ms: {verdict} ({phi:+.2f} ms)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-fsync", action="store_true", help="audit records without fsync")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gateway_overhead.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bao = start_bao(tmp)
        upstream = start_upstream(tmp, "--tokens", "16")
        try:
            config = gateway_config(
                tmp, bao.address, bao.gateway_token, upstream.url, audit={"fsync": not args.no_fsync}
            )
            _, key = ClientKeyStore(tmp / "keys.json").create("bench")
            with running_gateway(config, tmp) as gw:
                results = asyncio.run(measure(upstream.url, gw.url, key, args))
        finally:
            upstream.proc.stop()
            bao.proc.stop()
    table = report(results, args.concurrency)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
