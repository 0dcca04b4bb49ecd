"""SLA evaluation on stream records (samples.json v2): nearest-rank percentiles, pass and miss
with the margin, the error ratio, too few streams, warm-up exclusion, the open-loop rate check,
goodput, system tokens/s, the per-use-case breakdown, connections, sla.json round trip, the
shipped profiles and their sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import sla
from tests.loadtests.streams import profile, run, stream


def test_nearest_rank_percentile_uses_every_raw_sample() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100
    assert sla.percentile(samples, 99) == 99.0
    assert sla.percentile(samples, 50) == 50.0
    assert sla.percentile(samples, 100) == 100.0
    assert sla.percentile([503.0], 99) == 503.0
    # Locust's histogram would report 500 for 503 ms (10 ms buckets above 100 ms): a miss it hides
    assert sla.percentile([100.0] * 98 + [503.0, 503.0], 99) == 503.0


def test_a_run_within_every_threshold_passes() -> None:
    verdict = sla.evaluate(profile(), [stream(ttft=120, tpot=12), stream(ttft=480, tpot=29.9)], run())
    assert verdict.passed
    assert verdict.report().splitlines()[0] == "SLA profile t: PASSED"
    assert (verdict.requests, verdict.failures) == (2, 0)


def test_a_miss_fails_and_says_which_threshold_by_how_much() -> None:
    streams = [stream(ttft=100.0)] * 98 + [stream(ttft=650.0)] * 2
    verdict = sla.evaluate(profile(), streams, run())
    assert not verdict.passed
    misses = [line for line in verdict.report().splitlines() if line.strip().startswith("MISS")]
    assert misses == ["  MISS ttft_ms p99 <= 500: 650.0 (+150.0, +30%)"]
    first = verdict.to_json()["thresholds"][0]
    assert first["passed"] is False and first["source"] == "a rule"


def test_error_ratio_ceiling_and_minimum_streams() -> None:
    streams = [stream()] * 49 + [stream(ok=False)]  # 2 % errors
    missed = sla.evaluate(profile(max_error_ratio=0.01), streams, run())
    assert (
        not missed.passed
        and "  MISS error_ratio <= 0.01: 0.0200 (+0.0100, +100%)" in missed.report().splitlines()
    )
    assert sla.evaluate(profile(max_error_ratio=0.05), streams, run()).passed
    few = sla.evaluate(profile(min_requests=10), [stream()], run())
    assert not few.passed and "MISS completed streams >= 10: 1.0" in few.report()
    nothing = sla.evaluate(profile(), [], run())
    assert not nothing.passed and nothing.outcomes[2].value == 1.0  # no stream: error ratio 1


def test_a_metric_without_samples_is_a_miss_not_a_pass() -> None:
    verdict = sla.evaluate(profile(), [stream(tokens=1)], run())  # one token: no TPOT
    assert not verdict.passed and "MISS tpot_ms p99 <= 30: no samples" in verdict.report()


def test_tokens_per_second_is_a_floor_computed_per_stream() -> None:
    p = profile(thresholds=[{"metric": "tokens_per_s", "percentile": 5, "limit": 20, "source": "s"}])
    fast = stream(tokens=11, e2e=400.0)  # 27.5 tokens/s
    slow = stream(tokens=11, e2e=1000.0)  # 11 tokens/s
    assert sla.evaluate(p, [fast] * 20, run()).passed
    assert not sla.evaluate(p, [slow] + [fast] * 19, run()).passed


def test_warm_up_streams_are_counted_apart_and_left_out() -> None:
    slow_warm_up = stream(ttft=5000.0, warm_up=True, start=1.0)
    failed_warm_up = stream(ok=False, warm_up=True, start=2.0)
    verdict = sla.evaluate(profile(), [slow_warm_up, failed_warm_up, stream(), stream()], run())
    assert verdict.passed, verdict.report()
    assert (verdict.requests, verdict.failures, verdict.warm_up_streams) == (2, 0, 2)
    assert verdict.overall["streams"] == 2 and verdict.overall["ttft_ms"]["p99"] == 100.0
    # the same streams without the warm-up flag miss the TTFT limit and the error ceiling
    assert not sla.evaluate(profile(), [{**slow_warm_up, "warm_up": False}, stream()], run()).passed


def open_loop(scheduled: int, sent: int, held: int | None = None, rate: float = 10.0) -> dict[str, object]:
    return run(
        arrival={"mode": "poisson", "rate": rate, "max_in_flight": None}, scheduled=scheduled, sent=sent,
        held=scheduled if held is None else held,
    )  # fmt: skip


def test_an_open_loop_run_that_falls_short_of_the_asked_rate_fails() -> None:
    # the finding: 10 req/s asked, 4.19 achieved, PASSED; window 60 s
    short = sla.evaluate(profile(), [stream()] * 10, open_loop(600, 251))
    assert not short.passed
    line = next(x for x in short.report().splitlines() if "arrival rate" in x)
    assert line.startswith("  MISS arrival rate: configured 10, asked 10.00 req/s, achieved 4.18 req/s")
    assert short.arrival["asked_per_s"] == 10.0 and short.arrival["achieved_per_s"] == pytest.approx(251 / 60)
    # within 5 %: passes; just beyond: fails
    assert sla.evaluate(profile(), [stream()] * 10, open_loop(600, 571)).passed  # 4.8 % short
    assert not sla.evaluate(profile(), [stream()] * 10, open_loop(600, 569)).passed  # 5.2 % short


def test_asked_is_what_the_schedule_holds_not_what_a_lagging_loop_reached() -> None:
    """The load generator fell behind: its loop reached 251 of the 600 arrivals its schedule
    holds in the window and sent them all. Against the reached ones it kept up; against the
    schedule it sent 42 %."""
    lagging = sla.evaluate(profile(), [stream()] * 10, open_loop(251, 251, held=600))
    assert not lagging.passed
    assert lagging.arrival["asked_per_s"] == 10.0 and lagging.arrival["scheduled"] == 251
    assert [o.label.split(":")[0] for o in lagging.outcomes if not o.passed] == ["arrival rate"]


def test_a_schedule_implausible_for_the_configured_rate_fails() -> None:
    """10 req/s over 60 s: a Poisson count of 600 +- 4 sigma (98); a schedule holding four times
    that (each user scheduled X instead of X/users) fails even when every arrival was sent."""
    fourfold = sla.evaluate(profile(), [stream()] * 10, open_loop(2400, 2400))
    assert [o.label.split(":")[0] for o in fourfold.outcomes if not o.passed] == ["arrival schedule"]
    assert sla.evaluate(profile(), [stream()] * 10, open_loop(690, 690)).passed  # within 4 sigma
    assert not sla.evaluate(profile(), [stream()] * 10, open_loop(500, 500)).passed  # beyond


def test_the_start_lag_is_reported_and_a_long_one_warned() -> None:
    """Sends later than their schedule hide queueing in the load generator (coordinated
    omission): the lag's percentiles are printed, and a p99 above max(10 ms, a tenth of the
    mean gap 1/X) is a WARN."""
    on_time = [stream(start=20.0 + i, scheduled=20.0 + i - 0.002) for i in range(10)]
    late = [stream(start=20.0 + i, scheduled=20.0 + i - 0.5) for i in range(10)]
    ok = sla.evaluate(profile(), on_time, open_loop(600, 600))
    assert ok.arrival["lag_ok"] and ok.arrival["lag_bound_ms"] == 10.0
    assert any(x.startswith("start lag (written - scheduled): p50 2.0 ms") for x in ok.report().splitlines())
    warned = sla.evaluate(profile(), late, open_loop(600, 600))
    assert not warned.arrival["lag_ok"] and warned.arrival["lag_ms"]["p99"] == pytest.approx(500.0)
    assert any(x.startswith("WARN start lag") for x in warned.report().splitlines())
    # at 1 req/s the bound is a tenth of the 1 s mean gap
    slow = sla.evaluate(profile(), late, open_loop(60, 60, rate=1.0))
    assert slow.arrival["lag_bound_ms"] == pytest.approx(100.0)


def test_a_closed_loop_run_has_no_rate_check() -> None:
    verdict = sla.evaluate(profile(), [stream()] * 3, run(sent=3))
    assert not any("arrival rate" in o.label for o in verdict.outcomes)
    assert (
        verdict.arrival["achieved_per_s"] == pytest.approx(3 / 60) and verdict.arrival["asked_per_s"] is None
    )


def test_goodput_counts_streams_that_met_every_slo_and_failures_as_not_good() -> None:
    streams = [stream()] * 6 + [stream(ttft=600.0), stream(tpot=40.0), stream(ok=False), stream(ok=False)]
    verdict = sla.evaluate(profile(max_error_ratio=1), streams, run())
    g = verdict.goodput
    assert g["slo"] == {"ttft_ms": 500, "tpot_ms": 30}  # the limits at the highest percentile
    assert (g["good"], g["share"]) == (6, 0.6)
    assert g["per_s"] == pytest.approx(6 / 60)
    assert "goodput 60.0%: 6 of 10 streams met ttft_ms <= 500, tpot_ms <= 30" in verdict.report()


def test_goodput_slo_defaults_to_the_limit_at_the_highest_percentile() -> None:
    p = profile(thresholds=[
        {"metric": "ttft_ms", "percentile": 50, "limit": 200, "source": "s"},
        {"metric": "ttft_ms", "percentile": 99, "limit": 800, "source": "s"},
        {"metric": "tokens_per_s", "percentile": 5, "limit": 5, "source": "s"},  # a floor: not a default
        {"metric": "e2e_ms", "percentile": 90, "limit": 9000, "source": "s", "use_case": "catalog-search"},
    ])  # fmt: skip
    assert p.stream_slo() == {"ttft_ms": 800}


def test_explicit_slo_and_goodput_floor() -> None:
    p = profile(slo={"ttft_ms": 150, "itl_ms": 20}, min_goodput=0.8)
    spiky = stream(itl=[10.0] * 9 + [25.0])  # one gap above the per-stream ITL limit
    streams = [stream()] * 7 + [stream(ttft=200.0), spiky, stream()]
    verdict = sla.evaluate(p, streams, run())
    assert verdict.goodput["good"] == 8 and verdict.passed
    assert "  ok   goodput >= 0.8: 0.8000 (+0.0000, +0%)" in verdict.report().splitlines()
    worse = sla.evaluate(p, [*streams[:-1], stream(ttft=151.0)], run())
    assert not worse.passed and "MISS goodput >= 0.8" in worse.report()


def test_system_output_tokens_per_second_counts_finished_measured_streams() -> None:
    streams = [stream(tokens=11)] * 5 + [stream(ok=False), stream(tokens=100, warm_up=True)]
    verdict = sla.evaluate(profile(max_error_ratio=1), streams, run())
    assert verdict.system_output_tokens_per_s == pytest.approx(55 / 60)
    assert verdict.window_s == 60.0


def test_per_use_case_breakdown_and_use_case_thresholds() -> None:
    streams = [stream("patient-support", ttft=100.0)] * 4 + [stream("catalog-search", ttft=400.0)] * 2
    streams += [stream("catalog-search", ok=False)]
    p = profile(max_error_ratio=1, thresholds=[
        {"metric": "ttft_ms", "percentile": 50, "limit": 300, "source": "s"},
        {"metric": "ttft_ms", "percentile": 50, "limit": 300, "source": "s", "use_case": "catalog-search"},
    ])  # fmt: skip
    verdict = sla.evaluate(p, streams, run())
    assert [(o.label, o.passed) for o in verdict.outcomes[:2]] == [
        ("ttft_ms p50 <= 300", True), ("ttft_ms p50 <= 300 [catalog-search]", False)]  # fmt: skip
    cs = verdict.use_cases["catalog-search"]
    assert (cs["streams"], cs["failures"], cs["ttft_ms"]["p50"]) == (3, 1, 400.0)
    assert verdict.use_cases["patient-support"]["ttft_ms"] == {
        "p50": 100.0,
        "p90": 100.0,
        "p95": 100.0,
        "p99": 100.0,
    }
    assert verdict.use_cases["patient-support"]["itl_ms"]["p99"] == 10.0
    table = verdict.report().splitlines()
    assert any(line.split()[:3] == ["catalog-search", "3", "1"] for line in table)
    assert any(line.split()[:3] == ["Aggregated", "7", "1"] for line in table)


def test_connection_summary_new_reused_and_handshakes() -> None:
    streams = [stream(reused=False, connect=1.0), stream(reused=False, connect=3.0, tls=5.0)]
    streams += [stream(reused=True)] * 6
    c = sla.evaluate(profile(), streams, run()).connections
    assert (c["new"], c["reused"], c["reused_share"]) == (2, 6, 0.75)
    assert c["connect_ms"]["p50"] == 1.0 and c["connect_ms"]["p95"] == 3.0 and c["tls_ms"]["p50"] == 5.0


def test_sla_json_keeps_its_keys_and_round_trips() -> None:
    streams = [stream(), stream("catalog-search"), stream(ok=False), stream(warm_up=True)]
    meta = open_loop(60, 60)
    verdict = sla.evaluate(profile(max_error_ratio=1), streams, meta)
    doc = json.loads(json.dumps(verdict.to_json()))
    keys: tuple[str, ...] = ("profile", "passed", "requests", "failures", "thresholds", "run", "window_s")
    keys += (
        "goodput",
        "system_output_tokens_per_s",
        "arrival",
        "use_cases",
        "connections",
        "warm_up_streams",
    )
    for key in keys:
        assert key in doc, key
    assert doc["run"] == meta and doc["warm_up_streams"] == 1
    again = sla.Verdict.from_json(doc)
    assert again.to_json() == doc and again.report() == verdict.report()


def test_a_broken_sla_json_names_the_field_and_the_fix() -> None:
    with pytest.raises(
        sla.SlaError, match=r"sla.json: field 'thresholds' is missing; write it with this version"
    ):
        sla.Verdict.from_json({"profile": "p", "passed": True, "requests": 1, "failures": 0})
    with pytest.raises(sla.SlaError, match=r"'thresholds' \(or a summary field\) is malformed"):
        sla.Verdict.from_json(
            {"profile": "p", "passed": True, "requests": 1, "failures": 0, "thresholds": [{}]}
        )


def test_shipped_profiles_load_and_cite_a_source_per_threshold() -> None:
    interactive = sla.load_profile("gpu-interactive")
    limits = {(t.metric, t.percentile): t.limit for t in interactive.thresholds}
    assert limits[("ttft_ms", 99)] == 500 and limits[("tpot_ms", 99)] == 30
    assert ("ttft_ms", 50) not in limits  # the unsourced "TTFT p50 <= 250 ms" is gone
    standard = {(t.metric, t.percentile): t.limit for t in sla.load_profile("gpu-standard").thresholds}
    assert standard[("ttft_ms", 99)] == 2000 and standard[("tpot_ms", 99)] == 100
    for name in ("gpu-interactive", "gpu-standard"):
        mlperf = [t for t in sla.load_profile(name).thresholds if t.metric in ("ttft_ms", "tpot_ms")]
        assert all("mlperf.conf" in t.source for t in mlperf), name
    for name in ("gpu-interactive", "gpu-standard", "cpu-local"):
        p = sla.load_profile(name)
        assert p.source and all(t.source.strip() for t in p.thresholds)
        assert p.stream_slo()


def write(tmp_path: Path, threshold: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\ndescription: d\nsource: s\nmax_error_ratio: 0\nthresholds:\n  - {threshold}\n")
    return path


def test_a_threshold_without_a_source_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(sla.SlaError, match=r"thresholds.0.source: .*give each threshold a source"):
        sla.load_profile(str(write(tmp_path, "{metric: ttft_ms, percentile: 99, limit: 500}")))
    with pytest.raises(sla.SlaError, match=r"thresholds.0.source: .*at least 1 character"):
        sla.load_profile(str(write(tmp_path, "{metric: ttft_ms, percentile: 99, limit: 500, source: '  '}")))


def test_profile_errors_name_the_field_never_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "{metric: ttft_ms, percentile: 99, limit: CANARY-7f3e, source: s}")
    with pytest.raises(sla.SlaError) as caught:
        sla.load_profile(str(path))
    assert "thresholds.0.limit" in str(caught.value) and "CANARY" not in str(caught.value)
    (tmp_path / "x.yaml").write_text("name: x\ndescription: d\nsource: s\nmax_error_ratio: 0\n"
                                     "thresholds: [{metric: ttft_ms, percentile: 9, limit: 1, source: s}]\n"
                                     "slo: {ttft_ms: CANARY-7f3e}\n")  # fmt: skip
    with pytest.raises(sla.SlaError) as caught:
        sla.load_profile(str(tmp_path / "x.yaml"))
    assert str(caught.value).startswith(f"{tmp_path / 'x.yaml'}: slo.ttft_ms") and "CANARY" not in str(
        caught.value
    )


def test_unknown_or_broken_profile_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        sla.SlaError, match="no such SLA profile; known: cpu-local, gpu-interactive, gpu-standard"
    ):
        sla.load_profile("gpu-fast")
    (tmp_path / "bad.yaml").write_text(
        "name: bad\ndescription: d\nsource: s\nmax_error_ratio: 2\nthresholds: []\n"
    )
    with pytest.raises(sla.SlaError, match=r"bad.yaml: thresholds: List should have at least 1 item"):
        sla.load_profile("bad", tmp_path)


def test_a_profile_that_is_not_yaml_or_not_a_mapping_is_named(tmp_path: Path) -> None:
    (tmp_path / "y.yaml").write_text("name: [CANARY-7f3e\n")
    with pytest.raises(
        sla.SlaError,
        match=r"y.yaml: not valid YAML at line \d+, column \d+ \(content not shown\); fix the file's syntax",
    ) as caught:
        sla.load_profile(str(tmp_path / "y.yaml"))
    assert "CANARY" not in str(caught.value)
    (tmp_path / "l.yaml").write_text("- CANARY-7f3e\n")
    with pytest.raises(sla.SlaError, match=r"l.yaml: not a mapping of profile fields") as caught:
        sla.load_profile(str(tmp_path / "l.yaml"))
    assert "CANARY" not in str(caught.value)


def test_percentiles_are_exact_nearest_ranks() -> None:
    """99.9 / 100 * 1000 is 999.0000000000001 in floating point: p99.9 of 1000 values is the
    999th, not the maximum."""
    values = [float(v) for v in range(1, 1001)]
    assert sla.percentile(values, 99.9) == 999.0
    assert sla.percentile(values, 99) == 990.0 and sla.percentile(values, 50) == 500.0
    assert sla.percentile(values, 100) == 1000.0 and sla.percentile([3.0], 99.9) == 3.0
