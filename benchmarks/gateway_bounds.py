"""The gateway under abuse before and after the bounds of #21, side by side in one run.

    .venv/bin/python -m benchmarks.gateway_bounds [--old-commit 50ceadb] [--connections 450]

The OLD gateway (a ``git worktree`` of --old-commit, started from that tree with this
project's .venv) and the NEW one (this working tree), each a real gateway process against one
real OpenBao dev server, with a fresh process per scenario so each starts from the same state.

Memory (resident set of the gateway process, /proc/PID/status; a sampler reads VmRSS every
50 ms and the peak is the larger of its maximum and VmHWM, which counts the warm-up too):

- ``idle``: after 20 warm-up requests;
- ``slow bodies``: N raw-socket connections without an API key, each announcing
  ``Content-Length: 1048576`` (the largest accepted body) and sending one byte less, as much as
  the gateway takes, then stalling (the body is never complete); RSS measured while they stall;
- ``gzip bomb``: the fault upstream (``tests/doubles/fault_upstream.py``) answers with
  ``Content-Encoding: gzip``, a body of a few hundred KB inflating to 64 MiB, and 512 MiB;
- ``huge``: a plain 64 MiB JSON answer;
- ``endless``: a stream of SSE events that never ends, sent as fast as the gateway takes them,
  read by the client for --stream-seconds; the request asks for max_tokens 1,000,000 (the
  gateway caps it at the use case's limit).

An old gateway whose RSS passes --kill-mb is killed (SIGKILL) and the scenario recorded as
killed. Tenant isolation: a quiet tenant sends sequential plain requests 20 ms apart (50/s,
inside the default 100/s) against the scripted upstream, alone and then while a flooding tenant
sends as fast as 32 concurrent clients can (another process); the NEW gateway runs with its
default tenant limits (``LimitSettings().tenant_defaults``). Reported: the quiet tenant's p50
and p95 alone and under the flood, their ratio, the flood's request rate and share of 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.clientkeys import ClientKeyStore
from infra.local.process import wait_ready
from tests.support import Proc, double, free_port, gateway_argv, start_bao, start_process, start_upstream

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Opening hours next week?"}],
    "max_tokens": 16,
}
USE_CASE = {"x-sovereign-use-case": "patient-support"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def status_kb(pid: int, field_name: str) -> int | None:
    """A VmRSS/VmHWM line of /proc/PID/status in KiB, None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Sampler:
    """Reads the process's VmRSS every 50 ms; kills it (SIGKILL) once it passes *kill_mb*."""

    def __init__(self, pid: int, kill_mb: float) -> None:
        self.pid, self.kill_kb = pid, kill_mb * 1024
        self.max_kb = 0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = status_kb(self.pid, "VmRSS")
            if kb is None:
                return
            self.max_kb = max(self.max_kb, kb)
            if kb > self.kill_kb and not self.killed:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                return
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Side:
    """One gateway version: its source tree, its state directory, its API keys."""

    name: str
    tree: Path
    tmp: Path
    bao_address: str
    bao_token: str
    keys: dict[str, str] = field(default_factory=dict)
    runs: int = 0

    def key(self, tenant: str) -> str:
        if tenant not in self.keys:
            _, self.keys[tenant] = ClientKeyStore(self.tmp / "keys.json").create(f"{self.name}-{tenant}")
        return self.keys[tenant]

    def config(self, upstream_url: str) -> Path:
        """The same configuration for both versions, without any `limits` (the old settings
        forbid the new fields; the new gateway keeps its defaults)."""
        self.runs += 1
        token_file = self.tmp / "gateway.token"
        token_file.write_text(self.bao_token)
        config = {
            "upstreams": {
                "chat": {"url": f"{upstream_url}/v1", "model": "scripted", "weights_sha256": "ab" * 32}
            },
            "openbao": {
                "address": self.bao_address,
                "token_file": str(token_file),
                "wrapped_keys_dir": str(self.tmp / "wrapped"),
            },
            # a fresh trail per process: a killed old gateway must not leave a torn one behind
            "audit": {"path": str(self.tmp / f"audit-{self.runs}" / "audit.jsonl"), "fsync": False},
            "keys_file": str(self.tmp / "keys.json"),
        }
        path = self.tmp / f"gateway-{self.runs}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    @contextlib.contextmanager
    def gateway(self, upstream_url: str) -> Iterator[Proc]:
        config, port = self.config(upstream_url), free_port()
        log = self.tmp / f"gateway-{self.runs}.log"
        argv = gateway_argv(config, port)
        with log.open("ab") as fh:  # run from its own tree: `-m` puts the working directory first
            proc = subprocess.Popen(
                argv, cwd=self.tree, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(
                f"{self.name} gateway",
                proc,
                lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200,
                90,
                log,
            )
            yield Proc(proc, url, log)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def headers(self, tenant: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key(tenant)}", **USE_CASE}


def control(url: str, **script: Any) -> None:
    httpx.post(f"{url}/_control", json=script, timeout=10).raise_for_status()


def warm_up(gw: Proc, headers: dict[str, str], n: int = 20) -> None:
    with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as h:
        for _ in range(n):
            h.post(CHAT, json=BODY).raise_for_status()


# ---- memory scenarios: each runs against a warmed-up gateway and returns what the client saw


def slow_bodies(gw: Proc, headers: dict[str, str], connections: int) -> dict[str, Any]:
    """*connections* raw sockets without an API key, Content-Length 1 MiB, one byte short."""
    port = int(gw.url.rsplit(":", 1)[1])
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MiB}\r\n\r\n"
    ).encode()
    body = b" " * (MiB - 1)
    tally: dict[str, float] = {
        "sent_all": 0,
        "refused_while_sending": 0,
        "status_401": 0,
        "other_answer": 0,
        "no_answer": 0,
    }
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 20)
        except (OSError, TimeoutError):
            tally["refused_while_sending"] += 1
            return
        writers.append(writer)
        try:
            writer.write(head + body)
            await asyncio.wait_for(writer.drain(), 30)
            tally["sent_all"] += 1
        except (OSError, TimeoutError):
            tally["refused_while_sending"] += 1
        try:
            first = await asyncio.wait_for(reader.read(64), 1.0)
        except (OSError, TimeoutError):
            first = b""
        if first.startswith(b"HTTP/1.1 401"):
            tally["status_401"] += 1
        elif first:
            tally["other_answer"] += 1
        else:
            tally["no_answer"] += 1

    async def attack() -> None:
        await asyncio.gather(*(one() for _ in range(connections)))
        await asyncio.sleep(3)  # the connections stall; the gateway holds what it read
        tally["rss_while_stalling_mb"] = (status_kb(gw.proc.pid, "VmRSS") or 0) / 1024
        for w in writers:
            w.close()

    t0 = time.monotonic()
    asyncio.run(attack())
    tally["seconds"] = round(time.monotonic() - t0, 1)
    return tally


def answer(
    gw: Proc, headers: dict[str, str], stream: bool = False, seconds: float = 0, max_tokens: int = 16
) -> dict[str, Any]:
    """One chat request; the status and bytes the client got (a stream read for *seconds*)."""
    t0 = time.monotonic()
    got, status, tail = 0, 0, b""
    try:
        with (
            httpx.Client(base_url=gw.url, headers=headers, timeout=httpx.Timeout(150, connect=10)) as h,
            h.stream("POST", CHAT, json={**BODY, "stream": stream, "max_tokens": max_tokens}) as resp,
        ):
            status = resp.status_code
            for piece in resp.iter_raw():
                got += len(piece)
                tail = (tail + piece)[-400:]
                if stream and time.monotonic() - t0 > seconds:
                    break
    except httpx.HTTPError as exc:
        return {
            "status": status,
            "client_bytes": got,
            "error": type(exc).__name__,
            "seconds": round(time.monotonic() - t0, 1),
        }
    result: dict[str, Any] = {
        "status": status,
        "client_bytes": got,
        "seconds": round(time.monotonic() - t0, 1),
    }
    text = tail.decode("utf-8", "replace")
    for code in (
        "upstream_too_long",
        "upstream_too_large",
        "upstream_timeout",
        "upstream_malformed",
        "upstream_incomplete",
    ):
        if code in text:
            result["error_code"] = code
    return result


@dataclass
class Scenario:
    name: str
    script: dict[str, Any]
    run: Callable[[Proc, dict[str, str]], dict[str, Any]]


def memory(side: Side, fault_url: str, sc: Scenario, kill_mb: float) -> dict[str, Any]:
    control(fault_url, mode="normal")
    with side.gateway(fault_url) as gw:
        headers = side.headers("memory")
        warm_up(gw, headers)
        time.sleep(0.5)
        idle = (status_kb(gw.proc.pid, "VmRSS") or 0) / 1024
        control(fault_url, **sc.script)
        sampler = Sampler(gw.proc.pid, kill_mb)
        try:
            client = sc.run(gw, headers)
        finally:
            time.sleep(0.3)
            after = status_kb(gw.proc.pid, "VmRSS")
            hwm = status_kb(gw.proc.pid, "VmHWM")
            sampler.stop()
        peak = max(sampler.max_kb, hwm or 0) / 1024
        return {
            "idle_rss_mb": round(idle, 1),
            "rss_after_mb": None if after is None else round(after / 1024, 1),
            "peak_rss_mb": round(peak, 1),
            "killed": sampler.killed,
            "alive": gw.proc.poll() is None,
            "client": client,
        }


# ---- tenant isolation


async def flood(url: str, key: str, seconds: float, concurrency: int) -> list[tuple[float, int]]:
    """*concurrency* aiohttp clients (a third of httpx's CPU per request) back to back for
    *seconds*; every answer as (wall-clock time, status), 0 for a failed request."""
    import aiohttp

    seen: list[tuple[float, int]] = []
    headers = {"authorization": f"Bearer {key}", **USE_CASE}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector, timeout=timeout) as client:
        end = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < end:
                try:
                    async with client.post(CHAT, json=BODY) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                seen.append((time.time(), status))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def window(seen: list[tuple[float, int]], start: float, end: float) -> dict[str, Any]:
    """The flood's answers between *start* and *end* (wall clock): rate, statuses, 429 share."""
    statuses: dict[str, int] = {}
    for t, status in seen:
        if start <= t <= end:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    total = sum(statuses.values())
    return {
        "seconds": end - start,
        "requests": total,
        "rps": total / (end - start),
        "statuses": statuses,
        "share_429": statuses.get("429", 0) / max(1, total),
    }


def quiet(url: str, headers: dict[str, str], seconds: float, gap_s: float = 0.02) -> dict[str, Any]:
    """Sequential requests, one started every *gap_s* (or at once after a slower answer)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as h:
        end = time.monotonic() + seconds
        while (start := time.monotonic()) < end:
            resp = h.post(CHAT, json=BODY)
            latencies.append(time.monotonic() - start)
            statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
            time.sleep(max(0.0, start + gap_s - time.monotonic()))
    return {
        "requests": len(latencies),
        "p50_ms": pct(latencies, 50) * 1000,
        "p95_ms": pct(latencies, 95) * 1000,
        "statuses": statuses,
    }


def isolation(side: Side, upstream_url: str, args: argparse.Namespace) -> dict[str, Any]:
    with side.gateway(upstream_url) as gw:
        quiet_headers = side.headers("quiet")
        warm_up(gw, quiet_headers)
        warm_up(gw, side.headers("flood"))
        time.sleep(1)  # the quiet tenant's bucket refills from the warm-up
        alone = quiet(gw.url, quiet_headers, args.quiet_seconds)
        # the flood first runs alone for --flood-lead seconds (long enough to empty a tenant
        # bucket of 200 at any rate above about 170/s), then the quiet tenant is measured
        flood_s = args.flood_lead + args.quiet_seconds + 1
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.gateway_bounds",
            "--flood",
            gw.url,
            side.key("flood"),
            str(flood_s),
            str(args.flood_clients),
        ]
        flooder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(args.flood_lead)
        t0, cpu0 = time.time(), cpu_s(gw.proc.pid)
        under = quiet(gw.url, quiet_headers, args.quiet_seconds)
        t1, cpu1 = time.time(), cpu_s(gw.proc.pid)
        out, _ = flooder.communicate(timeout=flood_s + 60)
        seen = [(t, status) for t, status in json.loads(out)]
    return {
        "quiet_alone": alone,
        "quiet_under_flood": under,
        "p50_ratio": under["p50_ms"] / alone["p50_ms"],
        "flood": window(seen, t0, t1),  # while the quiet tenant was measured
        "gateway_cpu_share_under_flood": (cpu1 - cpu0) / (t1 - t0),  # of one core
        "flood_whole_run": window(seen, min(t for t, _ in seen), max(t for t, _ in seen)),
    }


# ---- the run


def machine() -> dict[str, Any]:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
    }


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: dict[str, Any]) -> str:
    rows = [
        "| scenario | old idle MB | old peak MB | new idle MB | new peak MB | new/old peak "
        "| growth old / new MB | old client saw | new client saw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["memory"].items():
        old, new = r["old"], r["new"]
        old_peak = f">{results['kill_mb']:,.0f} (killed)" if old["killed"] else mb(old["peak_rss_mb"])
        ratio = new["peak_rss_mb"] / old["peak_rss_mb"]
        ratio_text = f"<{ratio:.2f}" if old["killed"] else f"{ratio:.2f}"
        rows.append(
            f"| {name} | {mb(old['idle_rss_mb'])} | {old_peak} "
            f"| {mb(new['idle_rss_mb'])} | {mb(new['peak_rss_mb'])} "
            f"| {ratio_text} | {growth(old)} / {growth(new)} "
            f"| {seen(old['client'])} | {seen(new['client'])} |"
        )
    rows += [
        "",
        "| tenant isolation | quiet p50 alone ms | quiet p95 alone "
        "| quiet p50 under flood | quiet p95 under flood "
        "| p50 ratio | quiet statuses under flood | flood req/s | flood 200/s | flood 429 share "
        "| gateway CPU under flood |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("old", "new"):
        t = results["isolation"][name]
        a, u, f = t["quiet_alone"], t["quiet_under_flood"], t["flood"]
        rows.append(
            f"| {name} | {a['p50_ms']:.1f} | {a['p95_ms']:.1f} | {u['p50_ms']:.1f} | {u['p95_ms']:.1f} "
            f"| {t['p50_ratio']:.1f}x | {u['statuses']} | {f['rps']:.0f} "
            f"| {f['statuses'].get('200', 0) / f['seconds']:.0f} | {100 * f['share_429']:.1f} % "
            f"| {100 * t['gateway_cpu_share_under_flood']:.0f} % of a core |"
        )
    return "\n".join(rows)


def growth(r: dict[str, Any]) -> str:
    """Peak over idle; a killed gateway's peak is only a lower bound."""
    return ("≥" if r["killed"] else "+") + f"{r['peak_rss_mb'] - r['idle_rss_mb']:,.0f}"


def seen(client: dict[str, Any]) -> str:
    if "sent_all" in client:
        return f"{client['sent_all']:.0f} wrote 1 MiB-1, {client['status_401']:.0f} got 401"
    text = f"{client.get('status') or '-'}, {client['client_bytes'] / MiB:.1f} MiB"
    for k in ("error_code", "error"):
        if k in client:
            text += f", {client[k]}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-commit", default="50ceadb")
    parser.add_argument("--connections", type=int, default=450)
    parser.add_argument("--kill-mb", type=float, default=4096)
    parser.add_argument("--stream-seconds", type=float, default=8)
    parser.add_argument("--quiet-seconds", type=float, default=6)
    parser.add_argument("--flood-clients", type=int, default=32)
    parser.add_argument("--flood-lead", type=float, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gateway_bounds.json")
    parser.add_argument(
        "--flood", nargs=4, metavar=("URL", "KEY", "SECONDS", "CLIENTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.flood:
        url, key, seconds, clients = args.flood
        print(json.dumps(asyncio.run(flood(url, key, float(seconds), int(clients)))))
        return 0

    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bounds-"))
    old_tree = tmp / "old-tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(old_tree), args.old_commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    old_sha = git("rev-parse", args.old_commit)
    bao = start_bao(tmp)
    upstream = start_upstream(tmp)
    upstream.reset()
    fault_port = free_port()
    fault = start_process(
        "fault upstream", double("fault_upstream", "--port", str(fault_port)),
        f"http://127.0.0.1:{fault_port}", "/v1/models", tmp / "fault-upstream.log", cwd=ROOT,
    )  # fmt: skip
    sides = {}
    for name, tree in (("old", old_tree), ("new", ROOT)):
        (tmp / name).mkdir()
        sides[name] = Side(name, tree, tmp / name, bao.address, bao.gateway_token)
        for tenant in ("memory", "quiet", "flood"):  # keys exist before any gateway reads the file
            sides[name].key(tenant)
    s = args.stream_seconds
    scenarios = [
        Scenario("idle", {"mode": "normal"}, lambda gw, h: {"status": 200, "client_bytes": 0}),
        Scenario(f"{args.connections} slow bodies, no API key", {"mode": "normal"},
                 lambda gw, h: slow_bodies(gw, h, args.connections)),
        Scenario("gzip bomb 64 MiB inflated", {"mode": "gzip_bomb", "bomb_bytes": 64 * MiB}, answer),
        Scenario("gzip bomb 512 MiB inflated", {"mode": "gzip_bomb", "bomb_bytes": 512 * MiB}, answer),
        Scenario("huge plain answer 64 MiB", {"mode": "huge", "size": 64 * MiB}, answer),
        Scenario(f"endless stream, {s:.0f} s", {"mode": "endless", "interval_s": 0},
                 lambda gw, h: answer(gw, h, stream=True, seconds=s, max_tokens=1_000_000)),
    ]  # fmt: skip
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "-m", "benchmarks.gateway_bounds", *sys.argv[1:]]),
        "date": started,
        "old_commit": old_sha,
        "new": f"working tree on {git('rev-parse', 'HEAD')}"
        + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""),
        "machine": machine(),
        "note": "the 2-core VM was shared with another long job (a full test run) during this run: "
        "compare old and new side by side; absolute figures carry that load",
        "kill_mb": args.kill_mb,
        "memory": {},
        "isolation": {},
    }
    try:
        for sc in scenarios:
            results["memory"][sc.name] = {}
            for name, side in sides.items():
                r = memory(side, fault.url, sc, args.kill_mb)
                results["memory"][sc.name][name] = r
                print(f"{sc.name} [{name}]: {json.dumps(r)}", flush=True)
        for name, side in sides.items():
            results["isolation"][name] = isolation(side, upstream.url, args)
            print(f"isolation [{name}]: {json.dumps(results['isolation'][name])}", flush=True)
    finally:
        fault.stop()
        upstream.proc.stop()
        bao.proc.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["seconds"] = round(time.monotonic() - t_start)
    table = report(results)
    results["table"] = table
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out} ({results['seconds']} s)")
    shutil.rmtree(tmp, ignore_errors=True)  # kept when a step failed: the logs are in it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
