"""SLA thresholds on raw samples: nearest-rank percentiles, pass and miss with the margin,
the error ratio, too few streams, the shipped profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests import sla


def profile(**kw: object) -> sla.Profile:
    base: dict[str, object] = {
        "name": "t", "description": "d", "source": "s", "max_error_ratio": 0.01, "min_requests": 1,
        "thresholds": [{"metric": "ttft_ms", "percentile": 99, "limit": 500},
                       {"metric": "tpot_ms", "percentile": 99, "limit": 30}],
    }  # fmt: skip
    return sla.Profile(**{**base, **kw})


def test_nearest_rank_percentile_uses_every_raw_sample() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100
    assert sla.percentile(samples, 99) == 99.0
    assert sla.percentile(samples, 50) == 50.0
    assert sla.percentile(samples, 100) == 100.0
    assert sla.percentile([503.0], 99) == 503.0
    # Locust's histogram would report 500 for 503 ms (10 ms buckets above 100 ms): a miss it hides
    assert sla.percentile([100.0] * 98 + [503.0, 503.0], 99) == 503.0


def test_a_run_within_every_threshold_passes() -> None:
    verdict = sla.evaluate(profile(), {"ttft_ms": [120, 480], "tpot_ms": [12, 29.9], "e2e_ms": [1, 2]}, 2, 0)
    assert verdict.passed
    assert "PASSED" in verdict.report().splitlines()[0]


def test_a_miss_fails_and_says_which_threshold_by_how_much() -> None:
    samples = {"ttft_ms": [100.0] * 98 + [650.0, 650.0], "tpot_ms": [10.0] * 100, "e2e_ms": [1.0] * 100}
    verdict = sla.evaluate(profile(), samples, 100, 0)
    assert not verdict.passed
    misses = [line for line in verdict.report().splitlines() if line.strip().startswith("MISS")]
    assert misses == ["  MISS ttft_ms p99 <= 500: 650.0 (+150.0, +30%)"]
    assert verdict.to_json()["thresholds"][0]["passed"] is False  # type: ignore[index]


def test_error_ratio_ceiling_and_minimum_streams() -> None:
    ok = {"ttft_ms": [1.0], "tpot_ms": [1.0], "e2e_ms": [1.0]}
    assert not sla.evaluate(profile(max_error_ratio=0.01), ok, 50, 1).passed  # 2 % errors
    assert sla.evaluate(profile(max_error_ratio=0.05), ok, 50, 1).passed
    few = sla.evaluate(profile(min_requests=10), ok, 1, 0)
    assert not few.passed and "MISS completed streams >= 10: 1.0" in few.report()


def test_a_metric_without_samples_is_a_miss_not_a_pass() -> None:
    verdict = sla.evaluate(profile(), {"e2e_ms": [1.0]}, 1, 0)
    assert not verdict.passed and "MISS ttft_ms p99 <= 500: no samples" in verdict.report()


def test_tokens_per_second_is_a_floor() -> None:
    p = profile(thresholds=[{"metric": "tokens_per_s", "percentile": 5, "limit": 20}])
    assert sla.evaluate(p, {"tokens_per_s": [25.0] * 20, "e2e_ms": [1.0]}, 1, 0).passed
    assert not sla.evaluate(p, {"tokens_per_s": [15.0] + [25.0] * 19, "e2e_ms": [1.0]}, 1, 0).passed


def test_shipped_profiles_load_and_cite_their_source() -> None:
    interactive = sla.load_profile("gpu-interactive")
    limits = {(t.metric, t.percentile): t.limit for t in interactive.thresholds}
    assert limits[("ttft_ms", 99)] == 500 and limits[("tpot_ms", 99)] == 30
    assert "MLPerf Inference" in interactive.source
    for name in ("gpu-standard", "cpu-local"):
        assert sla.load_profile(name).source


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
