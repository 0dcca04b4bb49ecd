"""Search latency of the memory store at 100k items of 384 dimensions: HNSW vs exact scan.

A throwaway PostgreSQL 15 + pgvector 0.8.0 cluster (the local stack's own code,
infra/local/postgres.py; as the ``postgres`` user when run as root), the store's own schema
(gateway/memory/store.py), N unit vectors (fixed seeds; ``--data clustered``, the default:
around 1,000 random topic centres, noise of norm 0.6; ``--data random``: no structure at all)
of one tenant loaded by COPY,
the HNSW index built afterwards (as an empty store's index grows, only faster; same definition:
``hnsw (embedding vector_cosine_ops)``, pgvector's defaults m = 16, ef_construction = 64), then
Q queries (random unit vectors, another seed) through :meth:`Store.search`: the HNSW index
(hnsw.ef_search 40, the default, and 100) and an exact scan (index scans off) side by side,
alternating query by query, k = 10. Recall@10 of HNSW against the exact answer. Random unit
vectors in 384 dimensions have no structure (every distance is about the same): the worst case
for HNSW's recall; clustered ones are closer to texts' embeddings.

    .venv/bin/python -m benchmarks.memory_search [--items 100000] [--queries 200] [--data clustered|random]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from gateway.memory import rights
from gateway.memory.store import Owner, Store
from infra.local.postgres import Cluster, vector_installed
from infra.local.process import spawn, stop, wait_ready
from tests.support import free_port, passable_tmp

DIMS = 384
TENANT = "bench"


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIMS), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def clustered_vectors(n: int, seed: int, centres: np.ndarray, spread: float) -> np.ndarray:
    """Unit vectors around *centres* (topics), each a centre plus Gaussian noise of norm about
    *spread*: neighbours that mean something, as texts' embeddings have."""
    rng = np.random.default_rng(seed)
    picks = centres[rng.integers(0, len(centres), n)]
    noise = rng.standard_normal((n, DIMS), dtype=np.float32) * (spread / np.sqrt(DIMS))
    v = picks + noise
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def load(dsn: str, vectors: np.ndarray) -> tuple[float, float]:
    """COPY the rows, then build the HNSW index: (load seconds, index seconds)."""
    owner = Owner(TENANT, "patient-support", None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        t0 = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY chunks (id, text, embedding, tenant, use_case, expires_at) "
                "FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["uuid", "text", "vector", "text", "text", "timestamptz"])
            when = datetime.now(UTC) + timedelta(days=30)
            for i, v in enumerate(vectors):
                copy.write_row((uuid.uuid4(), f"item {i}", v, owner.tenant, owner.use_case, when))
        loaded = time.perf_counter() - t0
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        t0 = time.perf_counter()
        conn.execute("CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)")
        indexed = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE chunks")
    return loaded, indexed


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(dsn: str, queries: np.ndarray, k: int) -> dict[str, object]:
    store = Store(dsn, DIMS, max_size=2)
    await store.open()
    times: dict[str, list[float]] = {"hnsw": [], "hnsw100": [], "exact": []}
    recalls: list[float] = []
    recalls100: list[float] = []
    try:
        for q in queries[:5]:  # warm the caches and the pool
            await store.search(TENANT, q, k)
            await store.search(TENANT, q, k, exact=True)
        for q in queries:
            t0 = time.perf_counter()
            approx = await store.search(TENANT, q, k)
            times["hnsw"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            wider = await store.search(TENANT, q, k, ef_search=100)
            times["hnsw100"].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            exact = await store.search(TENANT, q, k, exact=True)
            times["exact"].append((time.perf_counter() - t0) * 1000)
            truth = {r["id"] for r in exact}
            recalls.append(len(truth & {r["id"] for r in approx}) / len(truth))
            recalls100.append(len(truth & {r["id"] for r in wider}) / len(truth))
        # an erasure's second half at this size: the tables and their indexes rewritten, the WAL
        # switched and checkpointed (gateway/memory/rights.py rewrite), the tables locked meanwhile
        t0 = time.perf_counter()
        await rights.rewrite(store)
        rewrite_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await rights.rewrite(store, maintenance_work_mem_mb=1024)
        rewrite_1g_s = time.perf_counter() - t0
    finally:
        await store.close()
    return {
        "rewrite_s": rewrite_s,
        "rewrite_1g_s": rewrite_1g_s,
        "times": times,
        "recall": statistics.mean(recalls),
        "min_recall": min(recalls),
        "recall100": statistics.mean(recalls100),
        "min_recall100": min(recalls100),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--data",
        choices=("random", "clustered"),
        default="clustered",
        help="random unit vectors (no structure: the worst case for HNSW's recall) or unit vectors "
        "around 1,000 random topic centres (default)",
    )
    args = parser.parse_args(argv)
    if not vector_installed():
        print("PostgreSQL 15 with pgvector 0.8.0 is not installed: run scripts/bootstrap.sh", file=sys.stderr)
        return 2
    base = passable_tmp(Path("bench-postgres"))
    cluster = Cluster(base / "data", base / "run", base / "secrets", port=free_port())
    cluster.initdb()
    log = base / "postgres.log"
    proc, started = spawn("postgres", cluster.argv(), log)
    try:
        wait_ready("postgres", proc, cluster.ready, 60, log)
        cluster.provision()
        dsn = cluster.dsn()
        asyncio.run(_schema(dsn))
        if args.data == "random":
            items, queries = unit_vectors(args.items, seed=1), unit_vectors(args.queries, seed=2)
        else:
            centres = unit_vectors(1000, seed=3)
            items = clustered_vectors(args.items, 1, centres, spread=0.6)
            queries = clustered_vectors(args.queries, 2, centres, spread=0.6)
        loaded, indexed = load(dsn, items)
        result = measure_sync(dsn, queries, args.k)
    finally:
        cluster.stop()
        stop(started.pid, started.start_ticks)
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    print(
        f"{args.items} items x {DIMS} dims ({args.data} unit vectors, seed 1), {args.queries} queries "
        f"(seed 2), k = {args.k}, one tenant; {os.cpu_count()} CPUs"
    )
    print(f"load (COPY): {loaded:.1f} s; HNSW build (m 16, ef_construction 64): {indexed:.1f} s")
    print("| search | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for name, label in (
        ("hnsw", "HNSW (ef_search 40)"),
        ("hnsw100", "HNSW (ef_search 100)"),
        ("exact", "exact scan"),
    ):
        t = times[name]
        print(f"| {label} | {pct(t, 50):.2f} | {pct(t, 95):.2f} | {statistics.mean(t):.2f} |")
    print(
        f"recall@{args.k} vs exact: HNSW ef_search 40 mean {result['recall']:.3f} (worst query "
        f"{result['min_recall']:.2f}); ef_search 100 mean {result['recall100']:.3f} "
        f"(worst {result['min_recall100']:.2f})"
    )
    print(
        "erasure rewrite (VACUUM FULL of the tables and indexes, WAL switch, CHECKPOINT): "
        f"{result['rewrite_s']:.1f} s with the server's maintenance_work_mem (64 MB), "
        f"{result['rewrite_1g_s']:.1f} s with 1 GB"
    )
    print(f"exact / HNSW at p50: {pct(times['exact'], 50) / pct(times['hnsw'], 50):.1f}x")
    return 0


async def _schema(dsn: str) -> None:
    store = Store(dsn, DIMS, max_size=1)
    await store.open()
    await store.close()


def measure_sync(dsn: str, queries: np.ndarray, k: int) -> dict[str, object]:
    return asyncio.run(measure(dsn, queries, k))


if __name__ == "__main__":
    raise SystemExit(main())
