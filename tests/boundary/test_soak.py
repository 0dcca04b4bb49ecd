"""Soak: the gateway's capacity measured first, then a long run at half of it. Zero errors,
the gateway's memory grows by less than 10 %, and the audit chain verifies afterwards with a
record for every answer. The latencies and how late the arrivals were against their schedule
are printed, not asserted: they are this machine's speed (docs/testing.md); `make soak`'s are
recorded in benchmarks/README.md.

The requests are synthetic patients (tests/phi_corpus.py): every use case, every third one
streamed, the whole PHI path (minimisation, detection, tokenisation with OpenBao keys,
restoration, audit). The model is the scripted upstream, so the gateway is what is measured.

Capacity: CAPACITY_CLIENTS clients back to back for SOVEREIGN_SOAK_CAPACITY_SECONDS; the
requests per second they complete. Soak: requests arrive on a fixed schedule at half that rate
(open loop: a slow answer does not slow the arrivals) for SOVEREIGN_SOAK_SECONDS. Memory: the
gateway's resident set every second; growth is the mean of the last tenth of the run against
the mean of the first tenth (after the capacity run has warmed it up).

``make test`` soaks for 60 s; ``make soak`` for 10 minutes (recorded in benchmarks/README.md).
"""

from __future__ import annotations

import os
import queue
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.audit import verify
from gateway.clientkeys import ClientKeyStore
from gateway.kms import transit_unwrapper
from gateway.policy import load_policies
from infra import openbao_contract
from loadtests.sla import percentile
from tests.phi_corpus import Item, generate
from tests.support import Bao, Upstream, gateway_config, running_gateway

SOAK_S = float(os.environ.get("SOVEREIGN_SOAK_SECONDS", "60"))
CAPACITY_S = float(os.environ.get("SOVEREIGN_SOAK_CAPACITY_SECONDS", "10"))
CAPACITY_CLIENTS = 6
SHARE = 0.5  # of the measured capacity
WORKERS = 24  # enough that arrivals never wait for a free sender at half capacity
MAX_GROWTH = 0.10
USE_CASES = sorted(load_policies())


def body(i: int, item: Item) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": item.text}],
        "stream": i % 3 == 0,
        "sovereign": {"use_case": USE_CASES[i % len(USE_CASES)], "context": dict(item.context)},
    }


@dataclass
class Tally:
    """Every answer: its status, how long it took, and what went wrong when it was not a
    complete 200 (status and error type only; the bodies are not kept)."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, http: httpx.Client, i: int, item: Item) -> None:
        request = body(i, item)
        t0 = time.monotonic()
        try:
            answer = http.post("/v1/chat/completions", json=request)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[type(exc).__name__] += 1
            return
        elapsed = time.monotonic() - t0
        complete = answer.status_code == 200 and (
            answer.text.rstrip().endswith("data: [DONE]") if request["stream"] else "choices" in answer.json()
        )
        with self.lock:
            self.statuses[answer.status_code] += 1
            self.latencies.append(elapsed)
            if not complete:
                status = answer.status_code
                self.errors["incomplete" if status == 200 else f"status {status}"] += 1

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


def percentiles(seconds: list[float]) -> dict[int, float]:
    """p50, p90 and p99 of *seconds*, in milliseconds."""
    return {p: 1000 * percentile(seconds, p) for p in (50, 90, 99)}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def capacity(url: str, headers: dict[str, str], items: list[Item], seconds: float) -> tuple[float, Tally]:
    """Requests per second that CAPACITY_CLIENTS back-to-back clients complete."""
    tally = Tally()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            i = k
            while time.monotonic() < deadline:
                tally.send(http, i, items[i % len(items)])
                i += CAPACITY_CLIENTS

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CAPACITY_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally.statuses[200] / (time.monotonic() - t0), tally


@dataclass
class Soak:
    rate: float
    tally: Tally
    scheduled: int
    lateness: list[float]  # how long each request waited past its arrival time for a sender
    rss: list[tuple[float, int]]  # (seconds into the run, bytes)

    def growth(self) -> float:
        tenth = max(1, len(self.rss) // 10)
        first = statistics.mean(b for _, b in self.rss[:tenth])
        last = statistics.mean(b for _, b in self.rss[-tenth:])
        return (last - first) / first


def soak(url: str, headers: dict[str, str], items: list[Item], rate: float, seconds: float, pid: int) -> Soak:
    tally = Tally()
    arrivals: queue.Queue[tuple[int, float] | None] = queue.Queue()
    lateness: list[float] = []
    rss: list[tuple[float, int]] = []
    done = threading.Event()
    ready = threading.Barrier(WORKERS + 1)  # every sender has its client before the first arrival
    t0 = 0.0

    def sender() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            ready.wait()
            while (arrival := arrivals.get()) is not None:
                i, due = arrival
                lateness.append(time.monotonic() - due)
                tally.send(http, i, items[i % len(items)])

    def sampler() -> None:
        while not done.wait(1.0):
            rss.append((time.monotonic() - t0, rss_bytes(pid)))

    senders = [threading.Thread(target=sender) for _ in range(WORKERS)]
    for t in senders:
        t.start()
    ready.wait()
    t0 = time.monotonic()
    watcher = threading.Thread(target=sampler)
    watcher.start()
    scheduled = int(rate * seconds)
    for i in range(scheduled):
        due = t0 + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the arrival schedule itself, not a wait for a result
        arrivals.put((i, due))
    for _ in senders:
        arrivals.put(None)
    for t in senders:
        t.join()
    done.set()
    watcher.join()
    return Soak(rate, tally, scheduled, lateness, rss)


@pytest.mark.timeout(int(CAPACITY_S + SOAK_S) + 240)
def test_soak_at_half_capacity_has_no_errors_no_memory_growth_and_a_whole_audit_chain(
    bao: Bao, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(mode="echo", chunk_chars=8)
    items = generate(500, seed=7)
    config = gateway_config(tmp_path, bao.address, bao.gateway_token, upstream.url)
    with running_gateway(config, tmp_path) as gateway:
        _, key = ClientKeyStore(tmp_path / "keys.json").create("clinic-soak")
        headers = {"authorization": f"Bearer {key}"}
        measured, warm = capacity(gateway.url, headers, items, CAPACITY_S)
        run = soak(gateway.url, headers, items, measured * SHARE, SOAK_S, gateway.proc.pid)
        assert gateway.proc.poll() is None
    latency, late = percentiles(run.tally.latencies), percentiles(run.lateness)
    summary = (
        f"capacity {measured:.1f} req/s ({CAPACITY_CLIENTS} clients, {CAPACITY_S:.0f} s, {warm.answered} "
        f"answers, errors {dict(warm.errors)}); soak {SOAK_S:.0f} s at {run.rate:.1f} req/s: "
        f"{run.tally.answered}/{run.scheduled} answered, statuses {dict(run.tally.statuses)}, errors "
        f"{dict(run.tally.errors)}; latency p50 {latency[50]:.0f} ms p99 {latency[99]:.0f} ms; arrivals "
        f"late p50 {late[50]:.1f} ms p90 {late[90]:.1f} ms p99 {late[99]:.1f} ms; gateway RSS "
        f"{run.rss[0][1] / 2**20:.1f} -> {run.rss[-1][1] / 2**20:.1f} MiB ({len(run.rss)} samples), "
        f"growth {100 * run.growth():+.1f} %"
    )
    print("\nsoak: " + summary)
    assert warm.errors == Counter() and measured > 0, summary
    assert run.tally.errors == Counter() and run.tally.answered == run.scheduled, summary
    assert run.growth() < MAX_GROWTH, summary
    unwrap = transit_unwrapper(bao.address, bao.auditor_token, openbao_contract.AUDIT_KEY)
    result = verify(tmp_path / "audit" / "audit.jsonl", unwrap)
    assert result.ok, result.message
    assert result.records >= warm.statuses[200] + run.tally.statuses[200]
