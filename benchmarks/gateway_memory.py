"""Where the gateway's memory goes under a long run: resident set vs live Python objects.

    .venv/bin/python -m benchmarks.gateway_memory [--warmup 3000] [--batches 4] [--batch 5000]

The soak (tests/boundary/test_soak.py) sees the gateway's resident set creep up by a few per
cent over ten minutes. This tells a leak (objects kept alive, which grow without bound) from
the allocator keeping freed memory (which levels off): the gateway runs under ``tracemalloc``
and, at each checkpoint, is made (SIGUSR1) to collect garbage and write a snapshot of every
live Python allocation. The same requests as the soak: synthetic patients, all use cases, a
third streamed, four clients back to back. Per checkpoint: requests so far, resident set,
traced (live) Python memory; and the allocation sites that grew most between the first and
the last checkpoint. tracemalloc slows the gateway several-fold: this measures memory, not speed.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from itertools import count
from pathlib import Path

import httpx

from gateway.clientkeys import ClientKeyStore
from tests.boundary.test_soak import body, rss_bytes
from tests.phi_corpus import generate
from tests.support import REPO, free_port, gateway_config, start_bao, start_process, start_upstream


def serve_traced(config: Path, port: int, snapshots: Path) -> None:
    """The gateway as ``sovereign gateway serve`` runs it, under tracemalloc; SIGUSR1 writes
    snapshot N+1 (after a full garbage collection) to *snapshots*, renamed into place whole."""
    tracemalloc.start(1)  # one frame: where each block was allocated
    taken = count(1)

    def snapshot(*_: object) -> None:
        gc.collect()
        final = snapshots / f"snapshot-{next(taken)}.bin"
        partial = final.with_suffix(".partial")
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(final)  # whole or not there: the reader never sees half a dump

    signal.signal(signal.SIGUSR1, snapshot)
    from gateway.server import serve

    serve(config, "127.0.0.1", port, "warning")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--serve", nargs=3, metavar=("CONFIG", "PORT", "SNAPSHOTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_traced(Path(args.serve[0]), int(args.serve[1]), Path(args.serve[2]))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="gateway-memory-"))
    bao, upstream = start_bao(tmp), start_upstream(tmp)
    upstream.script(mode="echo", chunk_chars=8)
    items = generate(500, seed=7)
    config = gateway_config(tmp, bao.address, bao.gateway_token, upstream.url)
    port = free_port()
    gateway = start_process(
        "gateway",
        [sys.executable, "-m", "benchmarks.gateway_memory", "--serve", str(config), str(port), str(tmp)],
        f"http://127.0.0.1:{port}", "/healthz", tmp / "gateway.log", cwd=REPO,
    )  # fmt: skip
    _, key = ClientKeyStore(tmp / "keys.json").create("clinic-memory")
    sent = 0

    def send(n: int) -> None:
        numbers = iter(range(sent, sent + n))
        lock = threading.Lock()

        def take() -> int | None:
            with lock:
                return next(numbers, None)

        def client() -> None:
            headers = {"authorization": f"Bearer {key}"}
            with httpx.Client(base_url=gateway.url, headers=headers, timeout=120) as h:
                while (i := take()) is not None:
                    answer = h.post("/v1/chat/completions", json=body(i, items[i % len(items)]))
                    if answer.status_code != 200:
                        raise SystemExit(f"request {i}: status {answer.status_code}")

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def checkpoint(n: int) -> tuple[int, float, float, tracemalloc.Snapshot]:
        file = tmp / f"snapshot-{n}.bin"
        os.kill(gateway.proc.pid, signal.SIGUSR1)
        while not file.exists():
            time.sleep(0.2)  # the gateway writes it (a poll for a file, not a timing)
        snap = tracemalloc.Snapshot.load(str(file))
        traced = sum(s.size for s in snap.statistics("filename"))
        return sent, rss_bytes(gateway.proc.pid) / 2**20, traced / 2**20, snap

    try:
        send(args.warmup)
        sent = args.warmup
        points = [checkpoint(1)]
        for b in range(args.batches):
            send(args.batch)
            sent += args.batch
            points.append(checkpoint(b + 2))
    finally:
        gateway.stop()
        upstream.proc.stop()
        bao.proc.stop()
    print("| requests | gateway RSS MiB | live Python objects MiB (tracemalloc) |\n|---|---|---|")
    for n, rss, traced, _ in points:
        print(f"| {n:,} | {rss:.1f} | {traced:.2f} |")
    first, last = points[0], points[-1]
    rss, live = 100 * (last[1] / first[1] - 1), 100 * (last[2] / first[2] - 1)
    span = last[0] - first[0]
    print(f"\nfrom warm-up to the end ({span:,} requests): RSS {rss:+.1f} %, live objects {live:+.2f} %")
    print("\nallocation sites that grew most (bytes, objects):")
    for stat in last[3].compare_to(first[3], "lineno")[:5]:
        print(f"  {stat.size_diff:+,} B {stat.count_diff:+,}  {stat.traceback[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
