"""SLA profiles and their evaluation on raw samples.

A profile (``loadtests/profiles/<name>.yaml``) holds thresholds on percentiles of the named
stream metrics and a ceiling on the error ratio. The percentiles are computed here from every
raw sample with the nearest-rank method (the value below which the given share of samples
lies, never interpolated): Locust's own percentiles come from a histogram rounded to 10 ms
above 100 ms (100 ms above 1 s), too coarse for a TPOT limit of 30 ms. Pure Python, no gevent,
so the evaluation is tested and reused outside a Locust run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import validation

PROFILES = Path(__file__).parent / "profiles"
METRICS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "tokens_per_s")
# for tokens_per_s a higher value is better: its threshold is a floor, every other one a ceiling
FLOOR_METRICS = ("tokens_per_s",)


class SlaError(ValueError):
    pass


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "tokens_per_s"] = Field(
        description="Named metric: time to first token, inter-token latency, time per output "
        "token, end-to-end latency (ms), or output tokens per second per stream."
    )
    percentile: float = Field(gt=0, le=100, description="Percentile of the raw samples, e.g. 99.")
    limit: float = Field(gt=0, description="Ceiling (ms), or floor for tokens_per_s.")

    @property
    def label(self) -> str:
        pct = f"{self.percentile:g}"
        op = ">=" if self.metric in FLOOR_METRICS else "<="
        return f"{self.metric} p{pct} {op} {self.limit:g}"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    source: str = Field(description="Where the limits come from (cited).")
    thresholds: list[Threshold] = Field(min_length=1)
    max_error_ratio: float = Field(ge=0, le=1, description="Failed requests / all requests, at most.")
    min_requests: int = Field(default=1, ge=1, description="Fewer completed streams: the run proves nothing.")


def load_profile(name: str, directory: Path = PROFILES) -> Profile:
    """A shipped profile by name, or a profile file of your own by its path (``*.yaml``)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.yaml")))
        raise SlaError(f"--profile {name!r}: no such SLA profile; known: {known} (in {directory})")
    try:
        return Profile(**yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        raise SlaError(f"{path}: {validation.first(exc)}") from None


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of *samples* (at least one)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Outcome:
    label: str
    value: float | None  # None: no sample of that metric
    limit: float
    passed: bool

    @property
    def margin(self) -> str:
        if self.value is None:
            return "no samples"
        delta = self.value - self.limit
        return f"{self.value:.1f} ({delta:+.1f}, {delta / self.limit:+.0%})"


@dataclass(frozen=True)
class Verdict:
    profile: str
    outcomes: list[Outcome]
    requests: int
    failures: int

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def report(self) -> str:
        lines = [f"SLA profile {self.profile}: {'PASSED' if self.passed else 'FAILED'}"]
        for o in self.outcomes:
            lines.append(f"  {'ok  ' if o.passed else 'MISS'} {o.label}: {o.margin}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "passed": self.passed,
            "requests": self.requests,
            "failures": self.failures,
            "thresholds": [
                {"threshold": o.label, "value": o.value, "limit": o.limit, "passed": o.passed}
                for o in self.outcomes
            ],
        }


def evaluate(
    profile: Profile, samples: Mapping[str, Sequence[float]], requests: int, failures: int
) -> Verdict:
    """Every threshold of *profile* against the raw *samples*; the error ratio against
    *failures* / *requests*; too few completed streams fail the run as well."""
    outcomes: list[Outcome] = []
    for t in profile.thresholds:
        values = samples.get(t.metric) or []
        if not values:
            outcomes.append(Outcome(t.label, None, t.limit, False))
            continue
        value = percentile(values, t.percentile)
        ok = value >= t.limit if t.metric in FLOOR_METRICS else value <= t.limit
        outcomes.append(Outcome(t.label, value, t.limit, ok))
    ratio = failures / requests if requests else 1.0
    outcomes.append(
        Outcome(f"error_ratio <= {profile.max_error_ratio:g}", ratio, profile.max_error_ratio or 1e-12,
                ratio <= profile.max_error_ratio)
    )  # fmt: skip
    completed = len(samples.get("e2e_ms") or [])
    outcomes.append(
        Outcome(f"completed streams >= {profile.min_requests}", float(completed), float(profile.min_requests),
                completed >= profile.min_requests)
    )  # fmt: skip
    return Verdict(profile.name, outcomes, requests, failures)
