"""Real headless Locust runs (subprocesses, as `sovereign loadtest` starts them) against the
scripted upstream: reports written, an SLA miss fails the run and names the threshold, broken
streams count as failures, and distributed mode (`--processes`) loses no sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.infra.support import REPO
from tests.support import Upstream


def loadtest(
    out: Path, upstream: Upstream, *extra: str, run_time: str = "4s", users: int = 4
) -> subprocess.CompletedProcess[str]:
    key = out.parent / "key"
    key.write_text("sk-sov-test.unused")  # the scripted upstream does not check keys
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "loadtest", "--target", upstream.url, "--users", str(users),
         "--spawn-rate", str(users), "--run-time", run_time, "--api-key-file", str(key), "--out", str(out),
         *extra],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def stats(out: Path) -> dict[tuple[str, str], int]:
    """Request counts per (type, name) from Locust's final JSON stats (the CSV is a periodic snapshot)."""
    entries = json.loads((out / "locust.json").read_text())
    return {(e["method"], e["name"]): int(e["num_requests"]) for e in entries}


def test_a_passing_run_writes_every_report_and_exits_0(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(ttft_ms=20, itl_ms=5, tokens=8)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SLA profile cpu-local: PASSED" in result.stdout + result.stderr
    for name in (
        "sla.json",
        "samples.json",
        "report.html",
        "locust_stats.csv",
        "locust.json",
        "ttft_ms.png",
        "tpot_ms.png",
    ):
        assert (out / name).is_file(), name
    verdict = json.loads((out / "sla.json").read_text())
    assert verdict["passed"] and verdict["failures"] == 0
    # the raw samples are every finished stream; Locust's named metrics count the same streams,
    # give or take the streams of the 4 users cut off at the end of the run
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples["ttft_ms"]) == len(samples["e2e_ms"]) == verdict["requests"] > 50
    assert 0 <= stats(out)[("STREAM", "ttft_ms")] - verdict["requests"] <= 4
    assert all(v > 18 for _, v in samples["ttft_ms"])  # at least the scripted 20 ms


def test_a_missed_threshold_fails_the_run_and_says_by_how_much(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(ttft_ms=150, itl_ms=1, tokens=4)
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "name: strict\ndescription: d\nsource: this test\nmax_error_ratio: 0\n"
        "thresholds:\n  - {metric: ttft_ms, percentile: 50, limit: 100}\n"
        "  - {metric: tpot_ms, percentile: 99, limit: 50}\n"
    )
    result = loadtest(tmp_path / "run", upstream, "--profile", str(strict))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "SLA profile strict: FAILED" in output
    miss = next(line for line in output.splitlines() if "MISS" in line)
    assert miss.strip().startswith("MISS ttft_ms p50 <= 100: 15")  # ~150 ms, +5x ms
    assert "ok   tpot_ms p99 <= 50" in output


def test_incomplete_streams_are_failures(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(mode="truncate", tokens=8)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", run_time="2s")
    assert result.returncode == 1
    verdict = json.loads((out / "sla.json").read_text())
    assert verdict["failures"] == verdict["requests"] > 0
    assert "without finish_reason" in (out / "locust_failures.csv").read_text()


def test_distributed_mode_evaluates_once_on_the_master_with_every_sample(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(ttft_ms=10, itl_ms=2, tokens=6)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", "--processes", "2", users=6, run_time="5s")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert output.count("SLA profile cpu-local: PASSED") == 1  # the master only
    samples = json.loads((out / "samples.json").read_text())
    counts = stats(out)
    requests = json.loads((out / "sla.json").read_text())["requests"]
    assert requests == len(samples["e2e_ms"]) > 50  # both workers' samples reached the master
    assert 0 <= counts[("STREAM", "e2e_ms")] - requests <= 6  # at most one cut-off stream per user


def test_bad_arguments_are_refused_before_any_load(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", "loadtest", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert "no such SLA profile" in cli("--target", "http://x", "--profile", "fast").stderr
    assert "give the gateway's base URL" in cli("--target", "x:80", "--profile", "cpu-local").stderr
    bad = cli("--target", "http://x", "--profile", "cpu-local", "--use-cases", "billing")
    assert bad.returncode == 2 and "--use-cases: unknown billing" in bad.stderr
