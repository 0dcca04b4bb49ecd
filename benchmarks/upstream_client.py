"""Upstream client CPU cost: httpx.AsyncClient vs aiohttp.ClientSession, side by side.

    .venv/bin/python -m benchmarks.upstream_client [--requests 1000]

Both clients post the same chat request to the same scripted upstream process, sequentially,
alternating twice; the number is this process's CPU time (and wall time) per request. It is
why gateway/upstream.py uses aiohttp for the gateway's upstream calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from tests.support import start_upstream

BODY = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}


async def with_httpx(url: str, n: int) -> tuple[float, float]:
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(50):
            await client.post(url, json=BODY)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            json.loads((await client.post(url, json=BODY)).content)
        return time.process_time() - cpu, time.perf_counter() - wall


async def with_aiohttp(url: str, n: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        for _ in range(50):
            async with session.post(url, json=BODY) as resp:
                await resp.read()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            async with session.post(url, json=BODY) as resp:
                json.loads(await resp.read())
        return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    clients: dict[str, Callable[[str, int], Awaitable[tuple[float, float]]]] = {
        "httpx": with_httpx,
        "aiohttp": with_aiohttp,
    }
    totals = {name: [0.0, 0.0] for name in clients}
    with tempfile.TemporaryDirectory() as tmp:
        upstream = start_upstream(Path(tmp))
        try:
            url = f"{upstream.url}/v1/chat/completions"
            for _ in range(2):
                for name, run in clients.items():
                    cpu, wall = asyncio.run(run(url, args.requests))
                    totals[name][0] += cpu
                    totals[name][1] += wall
        finally:
            upstream.proc.stop()
    n = 2 * args.requests
    for name, (cpu, wall) in totals.items():
        print(f"{name:<8} cpu {1000 * cpu / n:.3f} ms/request  wall {1000 * wall / n:.3f} ms/request")
    ratio = totals["httpx"][0] / totals["aiohttp"][0]
    print(f"httpx uses {ratio:.1f}x the CPU of aiohttp per proxied request")


if __name__ == "__main__":
    main()
