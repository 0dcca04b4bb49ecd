"""Workloads: the default sends the suite's earlier requests, seeded and deterministic; the
length distributions keep their bounds and shape (fixed seeds, no flaky statistics); prompt
padding; only fields the gateway accepts; broken files named with the fix."""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.schemas import ChatRequest
from loadtests import workflows
from loadtests.workflows import Empirical, Fixed, Lognormal, Normal, Uniform

# sha256 of 600 (use case, body) picks made by the fixed workflows before workloads existed
# (loadtests/workflows.py at cad6b7f), seeds "7-1" and "11-2", 300 each
EARLIER_REQUESTS = "95a4ba895f856ec8529efd7124eae6473dc4dac789470c4bdb59479709e8bddc"
POLICIES = Path(__file__).resolve().parents[2] / "gateway" / "policies"


def picks(workload: workflows.Workload, seed: str, n: int) -> list[list[Any]]:
    rng = random.Random(seed)
    return [list(workload.pick(rng)) for _ in range(n)]


def test_the_default_workload_sends_the_earlier_requests() -> None:
    default = workflows.load_workload()
    assert default.name == "healthcare-default"
    assert {w.use_case: (w.weight, w.max_tokens) for w in default.workflows} == {
        "patient-support": (35, 64), "appointment-scheduling": (25, 48), "order-support": (20, 48),
        "catalog-search": (15, 32), "telehealth-summary": (5, 96)}  # fmt: skip
    drawn = picks(default, "7-1", 300) + picks(default, "11-2", 300)
    digest = hashlib.sha256(json.dumps(drawn, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == EARLIER_REQUESTS


@pytest.mark.parametrize("name", ["healthcare-default", "long-summaries"])
def test_same_seed_same_requests_and_only_accepted_fields(name: str) -> None:
    workload = workflows.load_workload(name)
    first, again, other = picks(workload, "3", 50), picks(workload, "3", 50), picks(workload, "4", 50)
    assert first == again and first != other
    for use_case, body in first:
        request = ChatRequest.model_validate_json(json.dumps(body))  # the gateway's own schema
        assert request.sovereign is not None and request.sovereign.use_case == use_case
        assert set(body) <= set(ChatRequest.model_fields)


def test_shipped_output_lengths_stay_under_the_policies_max_tokens() -> None:
    for path in sorted(workflows.WORKLOADS.glob("*.yaml")):
        workload = workflows.load_workload(path.stem)
        for flow in workload.workflows:
            cap = yaml.safe_load((POLICIES / f"{flow.use_case}.yaml").read_text())["max_tokens"]
            assert flow.output_tokens.upper <= cap, (path.stem, flow.use_case)


def draws(dist: Any, n: int = 4000, seed: int = 11) -> list[int]:
    rng = random.Random(seed)
    return [dist.draw(rng) for _ in range(n)]


def test_fixed_draws_nothing_from_the_generator() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    assert Fixed(kind="fixed", value=64).draw(rng) == 64
    assert rng.getstate() == state


def test_uniform_covers_its_bounds_and_nothing_else() -> None:
    values = draws(Uniform(kind="uniform", min=10, max=20))
    assert set(values) == set(range(10, 21))
    assert statistics.mean(values) == pytest.approx(15, abs=0.3)  # sd of the mean 0.05


def test_normal_mean_and_sd_and_clamping() -> None:
    values = draws(Normal(kind="normal", mean=400, sd=50, min=100, max=700))
    assert statistics.mean(values) == pytest.approx(400, abs=5)  # sd of the mean 0.8
    assert statistics.stdev(values) == pytest.approx(50, rel=0.1)
    clamped = draws(Normal(kind="normal", mean=400, sd=400, min=300, max=500))
    assert min(clamped) == 300 and max(clamped) == 500  # clamped, the mass piles at the bounds


def test_lognormal_median_and_bounds() -> None:
    values = draws(Lognormal(kind="lognormal", median=1500, sigma=0.5, min=300, max=6000))
    assert statistics.median(values) == pytest.approx(1500, rel=0.05)
    assert min(values) >= 300 and max(values) <= 6000
    assert statistics.mean(values) > statistics.median(values)  # skewed to the right


def test_empirical_draws_only_its_values_about_equally() -> None:
    values = draws(Empirical(kind="empirical", values=[64, 128, 512]), n=3000)
    counts = {v: values.count(v) for v in set(values)}
    assert set(counts) == {64, 128, 512}
    assert all(abs(c - 1000) < 100 for c in counts.values()), counts


def test_prompts_are_padded_to_the_asked_length_with_neutral_filler() -> None:
    workload = workflows.load_workload("long-summaries").only("telehealth-summary")
    rng = random.Random(9)
    for _ in range(20):
        _, body = workload.pick(rng)
        text = body["messages"][0]["content"]
        assert text.startswith("Bitte fasse das Gespräch zusammen:")
        assert workflows.estimated_tokens(text) >= 300
    padded = workflows.pad("Hallo.", 200, random.Random(1))
    assert 200 <= workflows.estimated_tokens(padded) <= 200 + max(map(len, workflows.FILLER)) // 4 + 1
    assert not any(ch.isdigit() for ch in padded)  # filler carries no numbers, dates or names
    assert workflows.pad("Hallo.", 1, random.Random(1)) == "Hallo."


def test_only_keeps_the_named_use_cases_and_refuses_unknown_ones() -> None:
    default = workflows.load_workload()
    assert default.only("catalog-search, order-support").use_cases == ("catalog-search", "order-support")
    assert default.only(None) is default and default.only("") is default
    with pytest.raises(workflows.WorkloadError, match="--use-cases: unknown nope; known in workload"):
        default.only("nope")
    assert [w.use_case for w in workflows.select("catalog-search")] == ["catalog-search"]
    with pytest.raises(ValueError, match="unknown nope"):
        workflows.select("nope")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{weight: 1, output_tokens: {kind: fixed, value: 5}, extra: 1}", "use_cases.catalog-search.extra"),
        ("{weight: 1, output_tokens: {kind: uniform, min: 9, max: 3}}", "min must not exceed max"),
        ("{weight: 0, output_tokens: {kind: fixed, value: 5}}", "use_cases.catalog-search.weight"),
        ("{weight: 1, output_tokens: {kind: zipf, value: 5}}", "use_cases.catalog-search.output_tokens"),
        ("{weight: 1, output_tokens: {kind: empirical, values: []}}", "values"),
    ],
)
def test_a_broken_workload_file_names_the_field(tmp_path: Path, spec: str, message: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(f"name: w\ndescription: d\nuse_cases:\n  catalog-search: {spec}\n")
    with pytest.raises(workflows.WorkloadError, match=message) as caught:
        workflows.load_workload(str(path))
    assert str(caught.value).startswith(str(path)) and "docs/load-tests.md#workloads" in str(caught.value)


def test_an_unknown_workload_or_use_case_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        workflows.WorkloadError, match="no such workload; known: healthcare-default, long-summaries"
    ):
        workflows.load_workload("nope")
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: w\ndescription: d\nuse_cases:\n"
        "  billing: {weight: 1, output_tokens: {kind: fixed, value: 5}}\n"
    )
    with pytest.raises(workflows.WorkloadError, match="use_cases"):
        workflows.load_workload(str(path))
