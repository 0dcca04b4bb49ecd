"""Open-loop arrivals (``--arrival-rate``): the seeded schedule (Poisson or constant) as pure
arithmetic, and real runs: requests start on schedule whatever the server does, and a run that
could not send the rate it was asked for fails and says asked vs achieved."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import pytest

from loadtests.schedule import duration_s, offsets
from tests.loadtests.test_runs import loadtest, unmissable
from tests.loadtests.verdict import checked_run
from tests.support import Upstream


def gaps(mode: str, rate: float, seed: str, n: int = 20_000) -> list[float]:
    times = list(itertools.islice(offsets(mode, rate, seed), n))
    return [b - a for a, b in itertools.pairwise([0.0, *times])][1:]


def test_poisson_arrivals_have_exponential_gaps_and_constant_ones_none() -> None:
    rate = 4.0
    poisson = gaps("poisson", rate, "7-0-1")
    # exponential inter-arrival times: mean 1/rate, coefficient of variation 1
    assert statistics.fmean(poisson) == pytest.approx(1 / rate, rel=0.03)
    assert statistics.pstdev(poisson) / statistics.fmean(poisson) == pytest.approx(1.0, abs=0.03)
    constant = gaps("constant", rate, "7-0-1")
    assert statistics.fmean(constant) == pytest.approx(1 / rate)
    assert statistics.pstdev(constant) / statistics.fmean(constant) == pytest.approx(0.0, abs=1e-9)
    # seeded: the same seed gives the same schedule, another seed another one
    assert gaps("poisson", rate, "7-0-1", 51) == poisson[:50]
    assert gaps("poisson", rate, "7-0-2", 51) != poisson[:50]
    # a constant schedule starts at a seeded phase within its period (users do not fire together)
    first = {next(offsets("constant", rate, f"7-0-{u}")) for u in range(8)}
    assert len(first) == 8 and all(0 <= t < 1 / rate for t in first)


def test_bad_schedules_and_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        next(offsets("poisson", 0, 1))
    with pytest.raises(ValueError, match="--arrival"):
        next(offsets("bursty", 1, 1))
    assert duration_s("10s") == 10 and duration_s("1m30s") == 90 and duration_s("2.5") == 2.5
    with pytest.raises(ValueError, match="--warm-up"):
        duration_s("soon")


def test_requests_start_on_schedule_not_when_earlier_ones_end(upstream: Upstream, tmp_path: Path) -> None:
    """One user, 20 requests/s asked, each stream taking at least 300 ms: a closed loop could
    send at most ~3/s; the open loop keeps several streams of the one user in flight."""
    upstream.script(ttft_ms=300, itl_ms=1, tokens=3)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", str(unmissable(tmp_path)), "--arrival-rate", "20",
                      "--arrival", "constant", users=1, run_time="3s")  # fmt: skip
    run = checked_run(
        out, str(tmp_path / "unmissable.yaml"), result.returncode, result.stdout + result.stderr
    )
    assert run.run["arrival"] == {"mode": "constant", "rate": 20.0, "max_in_flight": 1000}
    assert all(s["scheduled"] is not None and s["scheduled"] <= s["start"] for s in run.streams)
    # streams overlapped: some stream started before the one before it ended
    ordered = sorted(run.measured, key=lambda s: s["start"])
    assert any(b["start"] < a["end"] for a, b in itertools.pairwise(ordered))
    assert run.run["dropped"] == 0 and run.run["scheduled"] >= run.run["sent"] > 0
    assert run.recorded["arrival"]["asked_per_s"] is not None


def test_a_rate_the_configuration_cannot_send_fails_and_says_asked_vs_achieved(
    upstream: Upstream, tmp_path: Path
) -> None:
    """At most one stream in flight, each taking at least 400 ms: at most 2.5 streams/s can be
    sent, whatever the machine; 20/s are asked. The arrivals that find no room are dropped."""
    upstream.script(ttft_ms=400, itl_ms=1, tokens=2)
    out = tmp_path / "run"
    result = loadtest(out, upstream, "--profile", str(unmissable(tmp_path)), "--arrival-rate", "20",
                      "--max-in-flight", "1", users=1, run_time="3s")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    run = checked_run(out, str(tmp_path / "unmissable.yaml"), result.returncode, output)
    assert run.run["dropped"] > 0 and run.run["sent"] < run.run["scheduled"]
    miss = next(line for line in output.splitlines() if "MISS" in line and "arrival rate" in line)
    assert "asked" in miss and "achieved" in miss, miss
    # the other thresholds held: the run failed on its rate alone
    assert [o.label for o in run.verdict.outcomes if not o.passed] == [run.outcome("arrival rate").label]
