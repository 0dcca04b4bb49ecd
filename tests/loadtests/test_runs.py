"""Real headless Locust runs (subprocesses, as `sovereign loadtest` starts them) against the
scripted upstream: reports written, the verdict the one the run's own stream records give,
Locust's tables counting the same streams, connections reused, an SLA miss fails the run and
names the threshold and by how much, broken streams count as failures, warm-up streams are
reported and not judged, and distributed mode (`--processes`) loses no stream. Nothing here
depends on this machine's speed (docs/testing.md): where a threshold must hold or miss, its
limit is out of reach of any speed (a scripted delay above it, or a limit longer than the run
may take at all)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from loadtests.sla import percentile
from tests.loadtests.verdict import checked_run
from tests.support import Upstream, sovereign

TIMEOUT_S = 180  # the run is killed after this: no stream it measured took longer
# the scripted upstream sleeps on a millisecond timer (uvloop): a scripted delay can come up to
# 1 ms short, never more; a busy machine only makes it longer
TIMER_MS = 2.0
# a limit no finished stream can exceed, however slow the machine: longer than the run may last
UNREACHABLE_MS = 1000 * TIMEOUT_S


def profile_file(path: Path, *thresholds: tuple[str, float, float], max_error_ratio: float = 0) -> Path:
    """An SLA profile of (metric, percentile, limit) thresholds, each sourced to this test."""
    lines = [f"name: {path.stem}", "description: d", "source: this test", "min_requests: 1"]
    lines += [f"max_error_ratio: {max_error_ratio:g}", "thresholds:"]
    lines += [
        f"  - {{metric: {m}, percentile: {p:g}, limit: {limit:g}, source: this test}}"
        for m, p, limit in thresholds
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def unmissable(tmp_path: Path) -> Path:
    """A profile only a failed or missing stream can miss."""
    return profile_file(tmp_path / "unmissable.yaml", ("ttft_ms", 95, UNREACHABLE_MS),
                        ("tpot_ms", 95, UNREACHABLE_MS), ("e2e_ms", 95, UNREACHABLE_MS))  # fmt: skip


def loadtest(
    out: Path,
    upstream: Upstream | str,
    *extra: str,
    run_time: str = "4s",
    users: int = 4,
    key: str = "sk-sov-test.unused",
) -> subprocess.CompletedProcess[str]:
    key_file = out.parent / "key"
    key_file.write_text(key)  # the scripted upstream does not check keys
    url = upstream if isinstance(upstream, str) else upstream.url
    return sovereign(
        "loadtest", "--target", url, "--users", str(users), "--spawn-rate", str(users),
        "--run-time", run_time, "--api-key-file", str(key_file), "--out", str(out), *extra, timeout=TIMEOUT_S,
    )  # fmt: skip


def test_a_run_writes_every_report_and_the_verdict_of_its_own_records(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(ttft_ms=20, itl_ms=5, tokens=8)
    profile = unmissable(tmp_path)
    out = tmp_path / "run"
    users = 4
    result = loadtest(out, upstream, "--profile", str(profile), users=users)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # every report; the verdict its records give; Locust's CSV and JSON, sla.json and
    # llm_stats.csv count the same streams and failures, one Locust row per use case
    run = checked_run(out, str(profile), result.returncode, output)
    assert run.verdict.passed and "SLA profile unmissable: PASSED" in output
    assert run.verdict.failures == 0 and run.completed == run.requests > 0
    assert all(v >= 20 - TIMER_MS for v in run.values("ttft_ms"))  # at least the scripted 20 ms
    # no pseudo-requests for the LLM metrics in Locust's tables: only use cases
    assert "STREAM" not in (out / "locust_stats.csv").read_text()
    # the LLM metrics printed at the end, per use case
    assert "Aggregated" in result.stdout
    # `sovereign loadtest compare A B` reads two run folders: a run against itself is no regression
    compared = sovereign("loadtest", "compare", str(out), str(out), "--json", timeout=60)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert json.loads(compared.stdout)["regression"] is False


def test_connections_are_kept_alive_and_reused(upstream: Upstream, tmp_path: Path) -> None:
    """Each response is read to the end of its body, so its connection goes back to the pool:
    a user opens one connection and sends every further request on it. The clock of a stream
    starts once it has a connection; the connect is timed apart, for new connections only."""
    upstream.script(ttft_ms=5, itl_ms=1, tokens=4)
    users = 3
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", str(unmissable(tmp_path)), users=users, run_time="3s")
    run = checked_run(
        out, str(tmp_path / "unmissable.yaml"), result.returncode, result.stdout + result.stderr
    )
    new = [s for s in run.streams if not s["reused"]]
    assert len(run.streams) > 4 * users  # enough requests that reuse shows
    assert 1 <= len(new) <= users, (len(new), len(run.streams))
    assert all(s["connect_ms"] is not None and s["connect_ms"] >= 0 and s["tls_ms"] is None for s in new)
    assert all(s["connect_ms"] is None for s in run.streams if s["reused"])
    assert run.recorded["connections"]["new"] == sum(1 for s in run.measured if not s["reused"])


def test_a_missed_threshold_fails_the_run_and_says_by_how_much(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(ttft_ms=150, itl_ms=1, tokens=4)  # TTFT at least 150 ms: a slower machine adds to it
    strict = profile_file(tmp_path / "strict.yaml", ("ttft_ms", 50, 100), ("tpot_ms", 99, UNREACHABLE_MS))
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", str(strict))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    run = checked_run(out, str(strict), result.returncode, output)
    assert "SLA profile strict: FAILED" in output
    # the miss names the threshold, the p50 of the run's own TTFT values and how far over it is
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


def test_an_http_error_is_a_failure_with_its_status(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script(mode="status500")
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", run_time="2s", users=2)
    run = checked_run(out, "cpu-local", result.returncode, result.stdout + result.stderr)
    assert run.verdict.failures == run.requests > 0
    assert {s["error"] for s in run.streams} == {"HTTP 500"} and {s["status"] for s in run.streams} == {500}
    assert "HTTP 500" in (out / "locust_failures.csv").read_text()
    # closed loop with backoff: 2 users cannot send hundreds of failing requests in 2 s
    assert run.requests < 100, run.requests


def test_warm_up_streams_are_reported_not_judged_and_the_run_says_what_ran(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(ttft_ms=5, itl_ms=1, tokens=4)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", "--warm-up", "1.5s", users=2, run_time="4s")
    run = checked_run(out, "cpu-local", result.returncode, result.stdout + result.stderr)
    meta = run.run
    assert meta["warm_up_s"] == 1.5 and meta["measure_from"] >= meta["started"] + 1.5
    warm = [s for s in run.streams if s["warm_up"]]
    assert warm and all(s["start"] < meta["measure_from"] for s in warm)
    assert all(s["start"] >= meta["measure_from"] for s in run.measured) and run.measured
    assert run.recorded["warm_up_streams"] == len(warm)
    # Locust's tables restart at the end of the warm-up: they count the measured streams only
    # (checked_run), the warm-up ones stay in samples.json
    assert meta["target"] == upstream.url and meta["users"] == 2 and meta["profile"] == "cpu-local"
    assert meta["arrival"] == {"mode": "closed", "rate": None, "max_in_flight": None}
    assert meta["ended"] > meta["measure_from"] and meta["locust_version"] and meta["python"]
    assert len(meta["commit"] or "") == 40 and isinstance(meta["dirty"], bool)  # the repo is a git checkout
    assert meta["workload"] == "healthcare-default" and meta["seed"] == 7


def test_distributed_mode_evaluates_once_on_the_master_with_every_stream(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script(ttft_ms=10, itl_ms=2, tokens=6)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", "cpu-local", "--processes", "2", users=6, run_time="5s")
    output = result.stdout + result.stderr
    # the verdict printed once (by the master), from every stream record, with the exit code it
    # implies; the master's Locust tables (the sum of both workers') count exactly those streams
    run = checked_run(out, "cpu-local", result.returncode, output)
    assert run.verdict.failures == 0, output[-4000:]
    assert run.completed == run.requests > 0
    assert run.run["processes"] == 2
    # every worker could take the master's word on the end of the warm-up (its handler is
    # registered before anything in its start-up lets it handle the master's messages)
    assert "Unknown message type" not in output, output[-3000:]


def test_bad_arguments_are_refused_before_any_load(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return sovereign("loadtest", *args, timeout=60)

    assert "no such SLA profile" in cli("--target", "http://x", "--profile", "fast").stderr
    assert "give the gateway's base URL" in cli("--target", "x:80", "--profile", "cpu-local").stderr
    bad = cli("--target", "http://x", "--profile", "cpu-local", "--use-cases", "billing")
    assert bad.returncode == 2 and "--use-cases: unknown billing" in bad.stderr
    assert (
        "no such workload"
        in cli("--target", "http://x", "--profile", "cpu-local", "--workload", "nope").stderr
    )
    assert "--warm-up" in cli("--target", "http://x", "--profile", "cpu-local", "--warm-up", "soon").stderr
    assert (
        "only for an https://" in cli("--target", "http://x", "--profile", "cpu-local", "--insecure").stderr
    )


def test_help_lists_every_option_with_its_help(tmp_path: Path) -> None:
    from infra.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    loadtest = sub.choices["loadtest"]  # type: ignore[attr-defined]
    options = [a for a in loadtest._actions if a.option_strings and "--help" not in a.option_strings]
    assert all(a.help for a in options), [a.option_strings for a in options if not a.help]
    shown = sovereign("loadtest", "--help", timeout=60).stdout
    for flag in ("--warm-up", "--arrival-rate", "--arrival", "--max-in-flight", "--workload", "--ca-file",
                 "--insecure", "--stamps", "--processes", "--seed"):  # fmt: skip
        assert flag in shown, flag
