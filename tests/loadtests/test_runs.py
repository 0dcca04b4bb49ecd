"""Real headless Locust runs (subprocesses, as `sovereign loadtest` starts them) against the
scripted upstream: reports written, the verdict the one the run's own raw samples give, an SLA
miss fails the run and names the threshold and by how much, broken streams count as failures,
and distributed mode (`--processes`) loses no sample. Nothing here depends on this machine's
speed (docs/testing.md): where a threshold must hold or miss, its limit is out of reach of any
speed (a scripted delay above it, or a limit longer than the run may take at all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtests.sla import percentile
from tests.infra.support import REPO
from tests.loadtests.verdict import checked_run
from tests.support import Upstream

TIMEOUT_S = 180  # the run is killed after this: no stream it measured took longer
# the scripted upstream sleeps on a millisecond timer (uvloop): a scripted delay can come up to
# 1 ms short, never more; a busy machine only makes it longer
TIMER_MS = 2.0
# a limit no finished stream can exceed, however slow the machine: longer than the run may last
UNREACHABLE_MS = 1000 * TIMEOUT_S


def loadtest(
    out: Path, upstream: Upstream, *extra: str, run_time: str = "4s", users: int = 4
) -> subprocess.CompletedProcess[str]:
    key = out.parent / "key"
    key.write_text("sk-sov-test.unused")  # the scripted upstream does not check keys
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "loadtest", "--target", upstream.url, "--users", str(users),
         "--spawn-rate", str(users), "--run-time", run_time, "--api-key-file", str(key), "--out", str(out),
         *extra],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


def stats(out: Path) -> dict[tuple[str, str], int]:
    """Request counts per (type, name) from Locust's final JSON stats (the CSV is a periodic snapshot)."""
    entries = json.loads((out / "locust.json").read_text())
    return {(e["method"], e["name"]): int(e["num_requests"]) for e in entries}


def test_a_run_writes_every_report_and_the_verdict_of_its_own_samples(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(ttft_ms=20, itl_ms=5, tokens=8)
    profile = tmp_path / "unmissable.yaml"  # only a failed or missing stream can miss it
    profile.write_text(
        "name: unmissable\ndescription: d\nsource: this test\nmax_error_ratio: 0\nmin_requests: 1\n"
        f"thresholds:\n  - {{metric: ttft_ms, percentile: 95, limit: {UNREACHABLE_MS}}}\n"
        f"  - {{metric: tpot_ms, percentile: 95, limit: {UNREACHABLE_MS}}}\n"
        f"  - {{metric: e2e_ms, percentile: 95, limit: {UNREACHABLE_MS}}}\n"
    )
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", str(profile))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    run = checked_run(out, str(profile), result.returncode, output)  # every report, the verdict its samples'
    assert run.verdict.passed and "SLA profile unmissable: PASSED" in output
    assert run.verdict.failures == 0
    # the raw samples are every finished stream; Locust's named metrics count the same streams,
    # give or take the streams of the 4 users cut off at the end of the run
    assert len(run.values("ttft_ms")) == len(run.values("e2e_ms")) == run.requests > 0
    assert 0 <= stats(out)[("STREAM", "ttft_ms")] - run.requests <= 4
    assert all(v >= 20 - TIMER_MS for v in run.values("ttft_ms"))  # at least the scripted 20 ms


def test_a_missed_threshold_fails_the_run_and_says_by_how_much(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(ttft_ms=150, itl_ms=1, tokens=4)  # TTFT at least 150 ms: a slower machine adds to it
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "name: strict\ndescription: d\nsource: this test\nmax_error_ratio: 0\n"
        "thresholds:\n  - {metric: ttft_ms, percentile: 50, limit: 100}\n"
        f"  - {{metric: tpot_ms, percentile: 99, limit: {UNREACHABLE_MS}}}\n"
    )
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", str(strict))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    run = checked_run(out, str(strict), result.returncode, output)
    assert "SLA profile strict: FAILED" in output
    # the miss names the threshold, the p50 of the run's own TTFT samples and how far over it is
    p50 = percentile(run.values("ttft_ms"), 50)
    assert p50 >= 150 - TIMER_MS and run.outcome("ttft_ms p50 <= 100").value == p50
    delta = p50 - 100
    miss = next(line.strip() for line in output.splitlines() if "MISS" in line)
    assert miss == f"MISS ttft_ms p50 <= 100: {p50:.1f} (+{delta:.1f}, +{delta / 100:.0%})", miss
    assert f"ok   tpot_ms p99 <= {UNREACHABLE_MS}: " in output  # the threshold that held, next to it


def test_incomplete_streams_are_failures(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(mode="truncate", tokens=8)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", run_time="2s")
    assert result.returncode == 1
    run = checked_run(out, "cpu-local", result.returncode, result.stdout + result.stderr)
    assert run.verdict.failures == run.requests > 0 and run.completed == 0
    assert "without finish_reason" in (out / "locust_failures.csv").read_text()


def test_distributed_mode_evaluates_once_on_the_master_with_every_sample(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(ttft_ms=10, itl_ms=2, tokens=6)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", "--processes", "2", users=6, run_time="5s")
    output = result.stdout + result.stderr
    # the verdict printed once (by the master), from every sample, with the exit code it implies
    run = checked_run(out, "cpu-local", result.returncode, output)
    assert run.verdict.failures == 0, output[-4000:]
    # both workers' samples reached the master: the master's Locust stats sum what each worker
    # counted, and the samples are the same streams, give or take one cut-off stream per user
    assert run.completed == run.requests > 0
    assert 0 <= stats(out)[("STREAM", "e2e_ms")] - run.requests <= 6


def test_bad_arguments_are_refused_before_any_load(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", "loadtest", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert "no such SLA profile" in cli("--target", "http://x", "--profile", "fast").stderr
    assert "give the gateway's base URL" in cli("--target", "x:80", "--profile", "cpu-local").stderr
    bad = cli("--target", "http://x", "--profile", "cpu-local", "--use-cases", "billing")
    assert bad.returncode == 2 and "--use-cases: unknown billing" in bad.stderr
