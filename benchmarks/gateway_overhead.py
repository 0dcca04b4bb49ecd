"""Gateway overhead: what the gateway costs per request and per streamed event, against the direct
path (the upstream alone), side by side in one run on loopback (real OpenBao dev server, scripted
upstream, real gateway processes with their default settings: fdatasync'd audit records, egress
guard on), with the load generator's own CPU beside every figure.

    .venv/bin/python -m benchmarks.gateway_overhead [--seconds 3] [--before /tmp/wt-before]

With ``--before DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/wt-before
HEAD``) a second gateway runs from that tree against the same upstream, and every run alternates
direct / gateway / before-gateway (two rounds, medians), so both versions see the same machine.

**The load generator is not the bottleneck, and says so.** It is a minimal HTTP/1.1 client on
raw asyncio streams (uvloop when installed): requests are prebuilt bytes, a response is read to
the end of its body (Content-Length, or the chunked terminator) on a kept-alive connection and
never parsed beyond the status line, the first content event (TTFT) and the event count. About
0.05-0.1 ms of CPU per request, against httpx's 1.4 ms (issue 24 finding 8: the old benchmark's
httpx client topped out near 725 req/s, so its "71 % of direct throughput" measured the client).
Every row shows the client process's CPU utilisation over the window (psutil, % of one core);
above 80 % the row is marked ``client-bound`` and its throughput is not the server's.

**CPU per request** is the gateway process's ``user+system`` CPU time (psutil) over the window,
divided by the requests (or streamed events) it completed; the upstream's is shown likewise.
Per streamed event: the slope between streams of 16 and 64 tokens (CPU per stream against
events per stream), which leaves out the per-request part.

Runs (``c16``: 16 connections back to back, closed loop):
- ``plain``: a short message without PHI (the filter runs and finds nothing), non-streamed;
- ``phi``: a 1 KB message dense with identifiers and its patient context (filtered, tokens
  restored), non-streamed;
- ``stream16`` / ``stream64``: streamed answers of 16 / 64 tokens, no delay (CPU per event);
- ``itl5``: 20 concurrent streams, 64 tokens, 5 ms between tokens (a model's pace): TTFT
  p50/p95 at the client, direct and through the gateway; ``phi-itl5`` the same filtered;
  ``itl5-c1`` ... ``itl5-c10`` (and ``phi-itl5-c1``, ``-c5``): 1 to 10 streams, how many one
  gateway process can take with its added TTFT p95 within 5 ms;
- ``itl5-poisson60`` / ``phi-itl5-poisson60``: the ``itl5`` load as open-loop Poisson arrivals
  at 60 per second (about 20 streams in flight), each on an idle kept-alive connection.

**Where the time goes**: around each run the gateway's ``sovereign_gateway_stage_seconds`` is
read from its ``/metrics`` (outside the measured window), and the report gives each stage's
mean per request (prepare, write_ahead, upstream, answer) beside the client's mean TTFT; a
gateway without the metric (an earlier commit's) has none.

Targets (issue 24, this 2-core machine): <= 1.2 ms of gateway CPU per filtered 1 KB request;
added TTFT p95 <= 5 ms at 20 concurrent streams with a 5 ms token interval.

``--profile OUT``: py-spy (``pip install py-spy``; PY_SPY names the binary) samples this tree's
gateway process for the whole run; its collapsed stacks go to OUT, and the report adds the
functions with the most samples (own time and cumulative). PY_SPY_ARGS adds py-spy arguments
(e.g. ``--gil``: only stacks holding the GIL, without the audit writer's fdatasync waits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped]

from gateway.clientkeys import ClientKeyStore
from tests.support import (
    Proc,
    Upstream,
    free_port,
    gateway_argv,
    gateway_config,
    metric_samples,
    start_bao,
    start_process,
    start_upstream,
)

MESSAGES = [{"role": "user", "content": "What are the opening hours of the Berlin practice next week?"}]
CLIENT_BOUND = 0.80  # client CPU utilisation (share of one core) above which a row is client-bound
#: the first event with content: `"content": "x` (the gateway's and the upstream's JSON spacing)
CONTENT = re.compile(rb'"content": ?"[^"]')
TERMINATOR = b"\r\n0\r\n\r\n"
SHORT_PATH = re.compile(r" \(.*?/(site-packages/|gateway/|lib/python3\.\d+/)")  # in profile frames


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Target:
    name: str
    url: str  # base, without /v1
    pid: int
    headers: dict[str, str] = field(default_factory=dict)
    gateway: bool = True


def build_request(target: Target, body: dict[str, Any], path: str = "/v1/chat/completions") -> bytes:
    url = urlsplit(target.url)
    payload = json.dumps(body).encode()
    lines = [
        f"POST {url.path.rstrip('/')}{path} HTTP/1.1",
        f"host: {url.netloc}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        *(f"{k}: {v}" for k, v in target.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[float, float | None, int]:
    """(latency s, TTFT s or None, events) of one request on a kept-alive connection."""
    t0 = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if head[9:12] != b"200":
        raise RuntimeError(f"HTTP {head[9:12].decode()}")
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at >= 0:
        length = int(lower[at + 15 : lower.index(b"\r\n", at)])
        await reader.readexactly(length)
        return time.perf_counter() - t0, None, 0
    ttft: float | None = None
    parts: list[bytes] = []
    tail = b""
    while True:
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("connection closed before the end of the body")
        parts.append(data)
        if ttft is None and CONTENT.search(data):
            ttft = time.perf_counter() - t0
        tail = (tail + data)[-len(TERMINATOR) :]
        if tail == TERMINATOR:
            break
    events = b"".join(parts).count(b"data: ")
    return time.perf_counter() - t0, ttft, events


async def load(
    target: Target,
    request: bytes,
    connections: int,
    seconds: float,
    rate: float | None = None,
    warm_s: float = 0.5,
) -> dict[str, Any]:
    """*connections* kept-alive connections sending back to back for *seconds* (after a warm-up),
    with the CPU of the target, the upstream and this client over the measured window. With
    *rate*: open loop instead, Poisson arrivals at *rate* per second (seeded), each on an idle
    kept-alive connection (a new one when none is idle, opened before its clock starts)."""
    host, port = urlsplit(target.url).hostname, urlsplit(target.url).port
    conns = [await asyncio.open_connection(host, port) for _ in range(connections)]
    latencies: list[float] = []
    ttfts: list[float] = []
    counts = {"requests": 0, "events": 0}
    measuring = False
    stop_at = time.perf_counter() + warm_s + seconds

    def count(latency: float, ttft: float | None, events: int) -> None:
        """One finished request, if it ended inside the measured window."""
        if measuring and time.perf_counter() <= stop_at:
            latencies.append(latency)
            if ttft is not None:
                ttfts.append(ttft)
            counts["requests"] += 1
            counts["events"] += events

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while time.perf_counter() < stop_at:
            count(*await one(reader, writer, request))

    async def window() -> tuple[float, dict[str, float]]:
        nonlocal measuring
        await asyncio.sleep(warm_s)
        procs = {"server": psutil.Process(target.pid), "client": psutil.Process()}
        before = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        t0 = time.perf_counter()
        measuring = True
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        elapsed = time.perf_counter() - t0
        return elapsed, {k: sum(p.cpu_times()[:2]) - before[k] for k, p in procs.items()}

    async def arrivals(per_s: float) -> None:
        rng = random.Random(24)
        loop = asyncio.get_running_loop()
        due = loop.time()
        running: set[asyncio.Task[None]] = set()

        async def send(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
            result = await one(*conn, request)
            conns.append(conn)
            count(*result)

        while time.perf_counter() < stop_at:
            due += rng.expovariate(per_s)
            await asyncio.sleep(max(0.0, due - loop.time()))
            conn = conns.pop() if conns else await asyncio.open_connection(host, port)
            task = asyncio.ensure_future(send(conn))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)

    timer = asyncio.ensure_future(window())
    if rate is None:
        await asyncio.gather(*(worker(r, w) for r, w in conns))
    else:
        await arrivals(rate)
    elapsed, cpu = await timer
    for _, w in conns:
        w.close()
    n = max(1, counts["requests"])
    return {
        "requests": counts["requests"],
        "events_per_request": counts["events"] / n,
        "rps": counts["requests"] / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p95_ms": pct(latencies, 95) * 1000,
        "ttft_p50_ms": pct(ttfts, 50) * 1000 if ttfts else None,
        "ttft_p95_ms": pct(ttfts, 95) * 1000 if ttfts else None,
        "ttft_mean_ms": statistics.fmean(ttfts) * 1000 if ttfts else None,
        "server_cpu_ms_per_request": cpu["server"] * 1000 / n,
        "server_cpu_share": cpu["server"] / elapsed,
        "client_cpu_share": cpu["client"] / elapsed,
        "client_cpu_ms_per_request": cpu["client"] * 1000 / n,
    }


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' medians, key by key (a dict of figures, such as ``stages_ms``, per key)."""
    out: dict[str, Any] = {}
    for k in rounds[0]:
        if isinstance(rounds[0][k], dict):
            out[k] = merge([r[k] for r in rounds]) if all(r.get(k) for r in rounds) else {}
            continue
        values = [r[k] for r in rounds if r[k] is not None]
        out[k] = statistics.median(values) if values else None
    return out


STAGES = ("prepare", "write_ahead", "upstream", "answer")


Totals = dict[tuple[str, str], tuple[float, float]]
#: the gateway's histograms the report reads, and the label that keys each
_HISTOGRAMS = {"sovereign_gateway_stage_seconds": "stage", "sovereign_gateway_gc_pause_seconds": "generation"}


async def stage_totals(target: Target) -> Totals:
    """The gateway's sovereign_gateway_stage_seconds as {(stage, stream): (sum s, count)}, and its
    sovereign_gateway_gc_pause_seconds as {("gc", generation): ...}, read from its /metrics
    (tests.support.metric_samples); empty for a gateway without them (an earlier commit's) and
    for the direct path. Read outside the measured window."""
    if not target.gateway:
        return {}
    totals: dict[tuple[str, str], list[float]] = {}
    for (name, labels), value in (await asyncio.to_thread(metric_samples, target.url)).items():
        family, _, suffix = name.rpartition("_")
        if family not in _HISTOGRAMS or suffix not in ("sum", "count"):
            continue
        by = dict(labels)
        key = ("gc", by["generation"]) if _HISTOGRAMS[family] == "generation" else (by["stage"], by["stream"])
        totals.setdefault(key, [0.0, 0.0])[1 if suffix == "count" else 0] = value
    return {k: (v[0], v[1]) for k, v in totals.items()}


def _delta(before: Totals, after: Totals, key: tuple[str, str]) -> tuple[float, float] | None:
    """(seconds, observations) of *key* between two readings; None where the metric is missing."""
    if key not in after:
        return None
    total, n = after[key]
    total0, n0 = before.get(key, (0.0, 0.0))
    return total - total0, n - n0


def collections(before: Totals, after: Totals) -> dict[str, float]:
    """The run's garbage collections (warm-up included): per generation their number and mean
    pause in ms (``n0``, ``ms0``, ...), and ``total_ms``; empty without the metric."""
    out: dict[str, float] = {"total_ms": 0.0}
    for generation in ("0", "1", "2"):
        delta = _delta(before, after, ("gc", generation))
        if delta is None:
            return {}
        spent, n = delta
        out[f"n{generation}"] = n
        out[f"ms{generation}"] = spent / n * 1000 if n else 0.0
        out["total_ms"] += spent * 1000
    return out


def stage_means(before: Totals, after: Totals, stream: bool) -> dict[str, float]:
    """Mean ms per request of each stage between two readings (the run's requests, its warm-up
    included)."""
    means = {}
    for stage in STAGES:
        delta = _delta(before, after, (stage, "true" if stream else "false"))
        if delta is not None and delta[1] > 0:
            means[stage] = delta[0] / delta[1] * 1000
    return means


def _streams(phi: bool, connections: int, rate: float | None = None) -> dict[str, Any]:
    """A run of 64-token streams at a model's pace (5 ms a token); *rate*: Poisson arrivals."""
    run: dict[str, Any] = {"stream": True, "phi": phi, "tokens": 64, "itl_ms": 5, "connections": connections}
    return run if rate is None else {**run, "rate": rate}


RUNS: list[tuple[str, dict[str, Any]]] = [
    # name, upstream script and request shape
    ("plain-c16", {"stream": False, "phi": False, "tokens": 16, "itl_ms": 0, "connections": 16}),
    ("phi-c16", {"stream": False, "phi": True, "tokens": 16, "itl_ms": 0, "connections": 16}),
    ("stream16-c16", {"stream": True, "phi": False, "tokens": 16, "itl_ms": 0, "connections": 16}),
    ("stream64-c16", {"stream": True, "phi": False, "tokens": 64, "itl_ms": 0, "connections": 16}),
    ("itl5-c20", _streams(False, 20)),
    ("phi-itl5-c20", _streams(True, 20)),
    # fewer streams at once: where the added TTFT target holds for one replica (docs/capacity.md)
    *((f"itl5-c{n}", _streams(False, n)) for n in (1, 2, 5, 10)),
    *((f"phi-itl5-c{n}", _streams(True, n)) for n in (1, 5)),
    # the same load as arrivals: Poisson at 60/s, about 20 streams of ~0.33 s in flight (Little)
    ("itl5-poisson60", _streams(False, 20, rate=60)),
    ("phi-itl5-poisson60", _streams(True, 20, rate=60)),
]


async def measure(
    upstream: Upstream, targets: list[Target], seconds: float, rounds: int, only: list[str] | None = None
) -> dict[str, Any]:
    phi_text, phi_context = phi_message()
    results: dict[str, Any] = {}
    for name, run in RUNS:
        if only and name not in only:
            continue
        upstream.script(tokens=run["tokens"], itl_ms=run["itl_ms"], ttft_ms=0)
        messages = [{"role": "user", "content": phi_text}] if run["phi"] else MESSAGES
        per_target: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for _ in range(rounds):
            for target in targets:
                body: dict[str, Any] = {"messages": messages, "max_tokens": 128, "stream": run["stream"]}
                if target.gateway:
                    if run["phi"]:
                        body["sovereign"] = {"context": phi_context}
                else:
                    body["model"] = "scripted"
                request = build_request(target, body)
                totals = await stage_totals(target)
                result = await load(target, request, run["connections"], seconds, run.get("rate"))
                after = await stage_totals(target)
                result["stages_ms"] = stage_means(totals, after, run["stream"])
                result["gc"] = collections(totals, after)
                per_target[target.name].append(result)
        results[name] = {k: merge(v) for k, v in per_target.items()}
        print(f"{name}: " + ", ".join(f"{k} {v['rps']:.0f} req/s" for k, v in results[name].items()),
              file=sys.stderr, flush=True)  # fmt: skip
    upstream.reset()
    return results


def phi_message() -> tuple[str, dict[str, Any]]:
    """A 1 KB synthetic patient message, dense with identifiers, and its context."""
    from benchmarks.phi_filter import messages

    return messages(1)[0]


def per_event(results: dict[str, Any], target: str) -> float:
    """Server CPU per streamed event: the slope between 16- and 64-token streams."""
    short, long = results["stream16-c16"][target], results["stream64-c16"][target]
    events = long["events_per_request"] - short["events_per_request"]
    return (long["server_cpu_ms_per_request"] - short["server_cpu_ms_per_request"]) / events


def report(results: dict[str, Any], targets: list[str]) -> str:
    rows = [
        "| run | target | req/s | p50 ms | p95 ms | TTFT p50 / p95 ms | server CPU ms/request "
        "| server CPU (cores) | client CPU ms/request | client CPU (share of a core) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_target in results.items():
        for target in targets:
            r = by_target[target]
            ttft = f"{r['ttft_p50_ms']:.2f} / {r['ttft_p95_ms']:.2f}" if r["ttft_p50_ms"] is not None else "-"
            bound = " **client-bound**" if r["client_cpu_share"] > CLIENT_BOUND else ""
            rows.append(
                f"| {name} | {target} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {ttft} "
                f"| {r['server_cpu_ms_per_request']:.3f} | {r['server_cpu_share']:.2f} "
                f"| {r['client_cpu_ms_per_request']:.3f} | {100 * r['client_cpu_share']:.0f} %{bound} |"
            )
    if {"stream16-c16", "stream64-c16"} <= results.keys():
        rows += ["", "| per streamed event (slope 16 -> 64 tokens) | server CPU ms/event |", "|---|---|"]
        for target in targets:
            rows.append(f"| {target} | {per_event(results, target):.4f} |")
    staged = [
        (name, target, by_target[target])
        for name, by_target in results.items()
        for target in targets
        if by_target[target].get("stages_ms")
    ]
    if staged:  # the gateway's own figures (the metrics), this tree's gateway and any with them
        rows += [
            "",
            "Where a request's time at the gateway goes (sovereign_gateway_stage_seconds, mean ms per "
            "request over the run; TTFT: the client's mean, direct beside it):",
            "",
            "| run | target | TTFT mean (direct) | " + " | ".join(STAGES) + " | GC: full collections "
            "(mean ms) | GC: all, ms |",
            "|---|---|---|" + "---|" * len(STAGES) + "---|---|",
        ]
        for name, target, r in staged:
            direct = results[name]["direct"]["ttft_mean_ms"]
            ttft = f"{r['ttft_mean_ms']:.2f} ({direct:.2f})" if r["ttft_mean_ms"] is not None else "-"
            cells = [f"{r['stages_ms'][s]:.2f}" if s in r["stages_ms"] else "-" for s in STAGES]
            g = r.get("gc") or {}
            cells += [f"{g['n2']:.0f} ({g['ms2']:.2f})", f"{g['total_ms']:.1f}"] if g else ["-", "-"]
            rows.append(f"| {name} | {target} | {ttft} | " + " | ".join(cells) + " |")
    rows.append("")
    for target in (t for t in targets if t != "direct"):
        if "phi-c16" in results:
            phi = results["phi-c16"][target]["server_cpu_ms_per_request"]
            verdict = "MET" if phi <= 1.2 else "MISSED"
            rows.append(
                f"{target}: gateway CPU per filtered 1 KB request <= 1.2 ms: {verdict} ({phi:.3f} ms)"
            )
        for run in (r for r in results if r.startswith(("itl5-", "phi-itl5-"))):
            added = results[run][target]["ttft_p95_ms"] - results[run]["direct"]["ttft_p95_ms"]
            if run in ("itl5-c20", "phi-itl5-c20", "itl5-poisson60", "phi-itl5-poisson60"):
                verdict = "MET" if added <= 5 else "MISSED"
                rows.append(f"{target}: {run} added TTFT p95 <= 5 ms: {verdict} ({added:+.2f} ms)")
            else:  # fewer streams than the target's 20: how many a replica can take within it
                within = "within" if added <= 5 else "over"
                rows.append(f"{target}: {run} added TTFT p95 {added:+.2f} ms ({within} 5 ms)")
    return "\n".join(rows)


def start_gateway(config: Path, tmp: Path, tree: Path | None) -> Proc:
    """A gateway process: this tree's, or the one in *tree* (an earlier commit's checkout)."""
    port = free_port()
    argv = gateway_argv(config, port)
    env: dict[str, str] = {}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        argv[1:1] = ["-P"] if sys.version_info >= (3, 11) else []  # not this tree from the cwd
    log = tmp / f"gateway-{port}.log"
    return start_process("gateway", argv, f"http://127.0.0.1:{port}", "/healthz", log, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per run and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of an earlier commit to compare with")
    parser.add_argument("--no-fsync", action="store_true", help="audit records without fdatasync")
    parser.add_argument("--profile", type=Path, help="run this tree's gateway under cProfile, stats here")
    parser.add_argument("--only", nargs="*", help="run only these runs (names as in the table)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gateway_overhead.json"))
    args = parser.parse_args()
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bao = start_bao(tmp)
        upstream = start_upstream(tmp, "--tokens", "16")
        procs: list[Proc] = []
        sampler: subprocess.Popen[bytes] | None = None
        try:
            _, key = ClientKeyStore(tmp / "keys.json").create("bench")
            headers = {"authorization": f"Bearer {key}", "x-sovereign-use-case": "patient-support"}
            targets = [Target("direct", upstream.url, upstream.proc.proc.pid, gateway=False)]
            trees: list[tuple[str, Path | None]] = [("gateway", None)]
            if args.before is not None:
                trees.append(("before", args.before.resolve()))
            for name, tree in trees:
                gw_tmp = tmp / name
                gw_tmp.mkdir()
                (gw_tmp / "keys.json").write_bytes((tmp / "keys.json").read_bytes())
                config = gateway_config(gw_tmp, bao.address, bao.gateway_token, upstream.url,
                                        audit={"fsync": not args.no_fsync})  # fmt: skip
                proc = start_gateway(config, gw_tmp, tree)
                procs.append(proc)
                targets.append(Target(name, proc.url, proc.proc.pid, headers))
            if args.profile is not None:
                spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
                sampler = subprocess.Popen(
                    [spy, "record", "--pid", str(procs[0].proc.pid), "--format", "raw", "--rate", "250",
                     "--nonblocking", "--output", str(args.profile),
                     *shlex.split(os.environ.get("PY_SPY_ARGS", ""))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                results = runner.run(measure(upstream, targets, args.seconds, args.rounds, args.only))
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)
                sampler.wait(60)
        finally:
            for proc in procs:
                proc.stop()
            upstream.proc.stop()
            bao.proc.stop()
    table = report(results, [t.name for t in targets])
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count()}
    out.write_text(json.dumps({**meta, "results": results}, indent=2))
    print(f"\nraw results: {out}")
    if args.profile is not None:
        print(profile_summary(args.profile))


def profile_summary(collapsed: Path, top: int = 30) -> str:
    """The functions with the most samples in py-spy's collapsed stacks: own and cumulative."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = [SHORT_PATH.sub(" (", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    lines = [f"\nprofile: {samples} samples; own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / samples:5.1f} %  {frame}")
    lines.append("cumulative:")
    for frame, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / samples:5.1f} %  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
