"""`sovereign loadtest compare A B`: a clear change is a regression or an improvement, in the
right direction per metric; noise inside the tolerance or inside the bootstrap interval is not;
unlike runs are flagged; unusable folders exit 2 naming the path and the fix."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from infra import cli
from loadtests import compare
from tests.loadtests.streams import profile, run, stream, write_run


def sovereign_compare(argv: list[str]) -> int:
    """``sovereign loadtest compare ARGV`` in this process (its output in capsys)."""
    return cli.main(["loadtest", "compare", *argv])


def population(seed: int, n: int = 300, scale: float = 1.0, tokens: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        use_case = "patient-support" if i % 3 else "catalog-search"
        ttft, tpot = scale * rng.lognormvariate(4.6, 0.3), scale * rng.uniform(8, 12)
        out.append(stream(use_case, ttft=ttft, tpot=tpot, tokens=tokens, start=11.0 + i * 0.1))
    return out


def rows(capsys: pytest.CaptureFixture[str]) -> dict[tuple[str, str], dict[str, Any]]:
    doc = json.loads(capsys.readouterr().out)
    return {(r["metric"], r["scope"]): r for r in doc["rows"]}


def test_the_same_run_twice_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", population(1), run(), profile())
    assert sovereign_compare([str(a), str(a), "--json"]) == 0
    found = rows(capsys)
    assert {r["verdict"] for r in found.values()} == {"unchanged"}
    assert ("ttft_ms p99", "catalog-search") in found and ("goodput", "all") in found
    assert found[("ttft_ms p50", "all")]["delta"] == 0.0


def test_slower_streams_are_a_regression_and_faster_ones_an_improvement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "a", population(1), run(), profile())
    b = write_run(tmp_path / "b", population(2, scale=1.5), run(), profile())
    assert sovereign_compare([str(a), str(b), "--json"]) == 1
    found = rows(capsys)
    ttft = found[("ttft_ms p50", "all")]
    assert ttft["verdict"] == "regression" and ttft["relative"] == pytest.approx(0.5, abs=0.1)
    low, high = ttft["interval"]
    assert 0 < low <= ttft["delta"] <= high
    assert found[("tpot_ms p95", "patient-support")]["verdict"] == "regression"
    assert sovereign_compare([str(b), str(a), "--json"]) == 0  # the other way round: improvements only
    back = rows(capsys)
    assert back[("ttft_ms p50", "all")]["verdict"] == "improvement"
    assert not any(r["verdict"] == "regression" for r in back.values())


def test_direction_goodput_and_tokens_per_second_are_better_higher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "a", population(1, tokens=11), run(), profile())
    b = write_run(tmp_path / "b", population(1, tokens=31), run(), profile())  # more tokens, same TPOT/TTFT
    sovereign_compare([str(a), str(b), "--json"])
    found = rows(capsys)
    assert found[("system_output_tokens_per_s", "all")]["verdict"] == "improvement"
    slow = [{**s, "ttft_ms": 800.0} if i % 2 else s for i, s in enumerate(population(1))]  # half miss the SLO
    c = write_run(tmp_path / "c", slow, run(), profile())
    assert sovereign_compare([str(a), str(c), "--json"]) == 1
    found = rows(capsys)
    assert found[("goodput", "all")]["verdict"] == "regression" and found[("goodput", "all")]["delta"] < 0


def test_more_failures_are_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = population(1)
    a = write_run(tmp_path / "a", good, run(), profile(max_error_ratio=1))
    failing = [stream(ok=False, start=s["start"]) if i % 5 == 0 else s for i, s in enumerate(good)]
    b = write_run(tmp_path / "b", failing, run(), profile(max_error_ratio=1))
    assert sovereign_compare([str(a), str(b), "--json"]) == 1
    assert rows(capsys)[("error_ratio", "all")]["verdict"] == "regression"


def test_noise_is_not_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # two runs of the same server: the same distributions, other draws
    a = write_run(tmp_path / "a", population(1), run(), profile())
    b = write_run(tmp_path / "b", population(2), run(), profile())
    assert sovereign_compare([str(a), str(b), "--json"]) == 0
    assert {r["verdict"] for r in rows(capsys).values()} == {"unchanged"}
    # one outlier in 30 streams moves the p99 (the maximum) by +50 %, far beyond the tolerance,
    # but a third of the resamples leave it out: inside the bootstrap interval, unchanged
    few = population(1, n=30)
    worst = max(range(30), key=lambda i: few[i]["ttft_ms"])
    outlier = [dict(s) for s in few]
    outlier[worst]["ttft_ms"] = few[worst]["ttft_ms"] * 1.5
    a, b = (
        write_run(tmp_path / "c", few, run(), profile()),
        write_run(tmp_path / "d", outlier, run(), profile()),
    )
    assert sovereign_compare([str(a), str(b), "--json"]) == 0
    row = rows(capsys)[("ttft_ms p99", "all")]
    assert row["relative"] == pytest.approx(0.5) and row["verdict"] == "unchanged"
    assert row["interval"][0] <= 0


def test_the_tolerance_decides_what_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", population(1), run(), profile())
    b = write_run(tmp_path / "b", population(1, scale=1.2), run(), profile())
    assert sovereign_compare([str(a), str(b), "--json", "--tolerance", "25"]) == 0
    assert sovereign_compare([str(a), str(b), "--json", "--tolerance", "10"]) == 1
    capsys.readouterr()


def test_unlike_runs_are_compared_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", population(1), run(), profile())
    b = write_run(tmp_path / "b", population(1), run(users=20, workload="long-summaries"), profile(name="u"))
    assert sovereign_compare([str(a), str(b)]) == 0
    out, err = capsys.readouterr()
    assert "the runs differ in profile (A t, B u): comparing unlike runs" in err
    assert "the runs differ in users (A 2, B 20)" in err and "workload" in err
    c = write_run(
        tmp_path / "c", [s for s in population(1) if s["use_case"] != "catalog-search"], run(), profile()
    )
    assert sovereign_compare([str(a), str(c), "--json"]) == 1  # a third fewer streams: fewer tokens/s
    doc = json.loads(capsys.readouterr().out)
    assert {r["metric"] for r in doc["rows"] if r["verdict"] == "regression"} == {
        "system_output_tokens_per_s"
    }
    assert "use case catalog-search ran in A only: not compared on its own" in doc["warnings"]
    assert not any(r["scope"] == "catalog-search" for r in doc["rows"])
    assert "NO REGRESSION" in out.splitlines()[-1]
    assert out.splitlines()[0] == f"A: {a} (t, PASSED)"


def test_unusable_inputs_exit_2_naming_the_path_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "a", population(1, n=10), run(), profile())
    assert sovereign_compare([str(a), str(a), "--tolerance", "-1"]) == 2
    assert "sovereign loadtest compare: --tolerance must be at least 0" in capsys.readouterr().err
    assert sovereign_compare([str(a), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sovereign loadtest compare: {tmp_path / 'nope'}: no such run folder; give the")
    old = tmp_path / "old"
    old.mkdir()
    (old / "sla.json").write_text((a / "sla.json").read_text())
    (old / "samples.json").write_text(json.dumps({"ttft_ms": [[1.0, 100.0]], "e2e_ms": [[1.0, 200.0]]}))
    assert sovereign_compare([str(old), str(a)]) == 2
    err = capsys.readouterr().err
    assert f"{old / 'samples.json'}: an earlier samples.json format (version 1" in err
    assert "run the load test again with this version of the suite" in err
    (old / "samples.json").unlink()
    assert sovereign_compare([str(old), str(a)]) == 2
    assert f"{old / 'samples.json'}: missing" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sla.json").write_text(json.dumps({"profile": "t"}))
    (broken / "samples.json").write_text((a / "samples.json").read_text())
    assert sovereign_compare([str(broken), str(a)]) == 2
    assert f"{broken / 'sla.json'}: field 'passed' is missing" in capsys.readouterr().err


def test_itl_is_resampled_by_whole_streams() -> None:
    """Twenty streams, each at its own steady pace (its 100 gaps all alike): the runs hold twenty
    independent values, not 2000. B's streams are 3 ms slower: resampling single gaps calls that
    certain (an interval of 1.1-4.9 ms); resampling streams finds it within the between-stream
    noise."""
    pace = random.Random(3)
    levels = [pace.uniform(10, 100) for _ in range(20)]
    a = [stream(itl=[v] * 100, tokens=101) for v in levels]
    b = [stream(itl=[v + 3.0] * 100, tokens=101) for v in levels]
    interval = compare._bootstrap("itl_ms", 50, a, b)
    assert interval is not None
    low, high = interval
    assert low < 0 < high, interval
