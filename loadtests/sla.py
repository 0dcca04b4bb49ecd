"""SLA profiles and their evaluation on the run's stream records (``samples.json`` v2).

A profile (``loadtests/profiles/<name>.yaml``) holds thresholds on percentiles of the named
stream metrics, each with its own cited ``source``, a ceiling on the error ratio, a minimum of
completed streams, and optionally the per-stream SLO that decides goodput and a floor on it.

The percentiles are computed here from every raw value with the nearest-rank method (the value
below which the given share of values lies, never interpolated): Locust's own percentiles come
from a histogram rounded to 10 ms above 100 ms (100 ms above 1 s), too coarse for a TPOT limit
of 30 ms. Streams that started during the warm-up (``warm_up``) are counted apart and left out
of every figure of the verdict.

Goodput is the share of the measured streams that met every per-stream limit of the profile's
``slo`` (a failed stream never does); without an ``slo`` block, each ceiling metric of the
thresholds is held to its limit at its highest percentile (the TTFT p99 limit, the TPOT p99
limit, ...). Pure Python, no gevent, so the evaluation is tested and reused outside a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway import validation
from gateway.errors import BadInput
from loadtests import files

PROFILES = Path(__file__).parent / "profiles"
METRICS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "tokens_per_s")
LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
PERCENTILES = (50, 90, 95, 99)
# for tokens_per_s a higher value is better: its threshold is a floor, every other one a ceiling
FLOOR_METRICS = ("tokens_per_s",)
OPEN_LOOP = ("poisson", "constant")
RATE_SHORTFALL = 0.05  # an open-loop run whose achieved rate falls short of the asked one by more fails
# the seeded schedule's count in the window against the configured rate X: Poisson, X*W +- this
# many standard deviations (a correct Poisson schedule lands outside about once in 16 000 runs)
SCHEDULE_SIGMAS = 4.0
# start lag (request written - scheduled time): a WARN when its p99 exceeds the larger of these,
# a tenth of the mean gap between arrivals (1/X) or a floor no event loop can promise below
LAG_SHARE_OF_GAP = 0.1
LAG_FLOOR_MS = 10.0

Metric = Literal["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "tokens_per_s"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class SlaError(BadInput, ValueError):
    pass


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Metric = Field(
        description="Named metric: time to first token, inter-token latency, time per output "
        "token, end-to-end latency (ms), or output tokens per second per stream."
    )
    percentile: float = Field(gt=0, le=100, description="Percentile of the raw values, e.g. 99.")
    limit: float = Field(gt=0, description="Ceiling (ms), or floor for tokens_per_s.")
    source: Text = Field(description="Where this limit comes from (a citation, or 'this project: why').")
    use_case: str | None = Field(default=None, description="Only the streams of this use case.")

    @property
    def label(self) -> str:
        pct = f"{self.percentile:g}"
        op = ">=" if self.metric in FLOOR_METRICS else "<="
        scope = f" [{self.use_case}]" if self.use_case else ""
        return f"{self.metric} p{pct} {op} {self.limit:g}{scope}"


class Slo(BaseModel):
    """Per-stream limits: a stream is good when it met every one given (tokens_per_s: a floor)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: float | None = Field(default=None, gt=0)
    itl_ms: float | None = Field(default=None, gt=0, description="Every gap of the stream.")
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    tokens_per_s: float | None = Field(default=None, gt=0)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    source: str = Field(description="Where the profile's limits come from, in general (cited).")
    thresholds: list[Threshold] = Field(min_length=1)
    max_error_ratio: float = Field(ge=0, le=1, description="Failed streams / all streams, at most.")
    min_requests: int = Field(default=1, ge=1, description="Fewer completed streams: the run proves nothing.")
    slo: Slo | None = Field(default=None, description="Per-stream limits for goodput.")
    min_goodput: float | None = Field(default=None, ge=0, le=1, description="Goodput at least.")

    def stream_slo(self) -> dict[str, float]:
        """The per-stream limits goodput is judged on: ``slo`` when given, else each ceiling
        metric's limit at its highest percentile among the thresholds on all use cases."""
        if self.slo is not None:
            return {k: v for k, v in self.slo.model_dump().items() if v is not None}
        highest: dict[str, Threshold] = {}
        for t in self.thresholds:
            if t.metric in FLOOR_METRICS or t.use_case:
                continue
            if t.metric not in highest or t.percentile > highest[t.metric].percentile:
                highest[t.metric] = t
        return {m: t.limit for m, t in highest.items()}


def load_profile(name: str, directory: Path = PROFILES) -> Profile:
    """A shipped profile by name, or a profile file of your own by its path (``*.yaml``)."""
    path, raw = files.read_named(name, directory, option="--profile", kind="SLA profile", error=SlaError)
    if not isinstance(raw, dict):
        raise SlaError(
            f"{path}: not a mapping of profile fields; see docs/load-tests.md#sla-profiles-loadtestsprofiles"
        )
    try:
        return Profile(**raw)
    except ValidationError as exc:
        first = validation.first(exc)
        hint = ""
        if first.path.startswith("thresholds.") and first.path.endswith(".source"):
            hint = "; give each threshold a source: the rule or measurement its limit comes from"
        raise SlaError(f"{path}: {first}{hint}") from None


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of *samples* (at least one)."""
    ordered = sorted(samples)
    # exact arithmetic from the percentile's decimal text: 99.9 / 100 * 1000 is 999.0000000000001
    # in binary floating point, whose ceiling (1000) would be the maximum, not p99.9
    rank = max(1, math.ceil(Fraction(str(pct)) * len(ordered) / 100))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99 (nearest rank) of *values*, None each when there are none."""
    return {f"p{p}": (percentile(values, p) if values else None) for p in PERCENTILES}


# -- stream records -------------------------------------------------------------------------


def measured(streams: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The streams the verdict counts: every one that did not start in the warm-up."""
    return [s for s in streams if not s.get("warm_up")]


def stream_tokens_per_s(s: Mapping[str, Any]) -> float | None:
    tokens, e2e = s.get("output_tokens"), s.get("e2e_ms")
    if not tokens or not e2e or e2e <= 0:
        return None
    return float(tokens) / (float(e2e) / 1000)


def values(streams: Iterable[Mapping[str, Any]], metric: str) -> list[float]:
    """Every value of *metric* over the finished (ok) *streams*; ITL: every gap of each."""
    out: list[float] = []
    for s in streams:
        if not s.get("ok"):
            continue
        if metric == "itl_ms":
            out.extend(float(v) for v in s.get("itl_ms") or ())
        elif metric == "tokens_per_s":
            tps = stream_tokens_per_s(s)
            if tps is not None:
                out.append(tps)
        elif s.get(metric) is not None:
            out.append(float(s[metric]))
    return out


def meets(s: Mapping[str, Any], slo: Mapping[str, float]) -> bool:
    """Whether stream *s* met every per-stream limit of *slo*: a failed stream never does; a
    limit on a value the stream has none of (the TPOT or ITL of a one-token answer) is not
    held against it; ITL: every gap."""
    if not s.get("ok"):
        return False
    for metric, limit in slo.items():
        if metric == "itl_ms":
            if any(float(g) > limit for g in s.get("itl_ms") or ()):
                return False
        elif metric == "tokens_per_s":
            tps = stream_tokens_per_s(s)
            if tps is not None and tps < limit:
                return False
        elif s.get(metric) is not None and float(s[metric]) > limit:
            return False
    return True


def window_s(run: Mapping[str, Any]) -> float | None:
    """Seconds between the end of the warm-up and the end of the run (None: not a window)."""
    try:
        width = float(run["ended"]) - float(run["measure_from"])
    except (KeyError, TypeError, ValueError):
        return None
    return width if width > 0 else None


def breakdown(
    streams: Sequence[Mapping[str, Any]], slo: Mapping[str, float], window: float | None
) -> dict[str, Any]:
    """Counts, latency percentiles, goodput and output tokens/s of measured *streams*."""
    failures = sum(1 for s in streams if not s.get("ok"))
    good = sum(1 for s in streams if meets(s, slo))
    tokens = sum(int(s.get("output_tokens") or 0) for s in streams if s.get("ok"))
    out: dict[str, Any] = {
        "streams": len(streams),
        "failures": failures,
        "goodput": good / len(streams) if streams else None,
        "output_tokens_per_s": tokens / window if window else None,
    }
    for metric in LATENCIES:
        out[metric] = summary(values(streams, metric))
    return out


# -- verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    label: str
    value: float | None  # None: no sample of that metric
    limit: float
    passed: bool
    source: str = ""

    @property
    def margin(self) -> str:
        if self.value is None:
            return "no samples"
        delta = self.value - self.limit
        if self.limit < 1:  # a ratio (errors, goodput): four decimals
            return f"{self.value:.4f} ({delta:+.4f}, {delta / self.limit:+.0%})"
        return f"{self.value:.1f} ({delta:+.1f}, {delta / self.limit:+.0%})"


@dataclass(frozen=True)
class Verdict:
    profile: str
    outcomes: list[Outcome]
    requests: int  # measured streams: finished or failed, warm-up excluded
    failures: int
    run: dict[str, Any] = field(default_factory=dict)
    window_s: float | None = None
    goodput: dict[str, Any] = field(default_factory=dict)  # slo, good, share, per_s, min
    system_output_tokens_per_s: float | None = None
    arrival: dict[str, Any] = field(default_factory=dict)
    use_cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    overall: dict[str, Any] = field(default_factory=dict)
    connections: dict[str, Any] = field(default_factory=dict)
    warm_up_streams: int = 0

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def report(self) -> str:
        lines = [f"SLA profile {self.profile}: {'PASSED' if self.passed else 'FAILED'}"]
        for o in self.outcomes:
            lines.append(f"  {'ok  ' if o.passed else 'MISS'} {o.label}: {o.margin}")
        g = self.goodput
        if g.get("share") is not None:
            limits = ", ".join(
                f"{k} {'>=' if k in FLOOR_METRICS else '<='} {v:g}" for k, v in g["slo"].items()
            )
            per_s = f", {g['per_s']:.2f} good streams/s" if g.get("per_s") is not None else ""
            lines.append(
                f"goodput {g['share']:.1%}: {g['good']} of {self.requests} streams met "
                f"{limits or 'no limit'}{per_s}"
            )
        rates = []
        if self.window_s is not None:
            rates.append(f"window {self.window_s:.1f} s")
        if self.warm_up_streams:
            rates.append(f"{self.warm_up_streams} warm-up streams not counted")
        if self.system_output_tokens_per_s is not None:
            rates.append(f"system output {self.system_output_tokens_per_s:.1f} tokens/s")
        if self.arrival.get("achieved_per_s") is not None:
            asked = self.arrival.get("asked_per_s")
            asked_text = f"asked {asked:.2f}, " if asked is not None else ""
            rates.append(f"{asked_text}achieved {self.arrival['achieved_per_s']:.2f} req/s")
        if rates:
            lines.append("; ".join(rates))
        lag = self.arrival.get("lag_ms") or {}
        if lag.get("p99") is not None:
            bound = float(self.arrival.get("lag_bound_ms") or LAG_FLOOR_MS)
            flag = "WARN " if lag["p99"] > bound else ""
            lines.append(
                f"{flag}start lag (written - scheduled): p50 {_ms(lag.get('p50'))}, p99 {_ms(lag['p99'])} "
                f"(bound {bound:g} ms: later sends hide queueing in the load generator)"
            )
        c = self.connections
        if c.get("new") is not None and self.requests:
            connect = c.get("connect_ms") or {}
            lines.append(
                f"connections: {c['new']} new, {c['reused']} reused ({c['reused_share']:.0%}); connect p50 "
                f"{_ms(connect.get('p50'))}, p95 {_ms(connect.get('p95'))}"
            )
        if self.use_cases:
            lines.append(_table(self.use_cases, self.overall))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "passed": self.passed,
            "requests": self.requests,
            "failures": self.failures,
            "thresholds": [
                {
                    "threshold": o.label,
                    "value": o.value,
                    "limit": o.limit,
                    "passed": o.passed,
                    "source": o.source,
                }
                for o in self.outcomes
            ],
            "run": self.run,
            "window_s": self.window_s,
            "warm_up_streams": self.warm_up_streams,
            "goodput": self.goodput,
            "system_output_tokens_per_s": self.system_output_tokens_per_s,
            "arrival": self.arrival,
            "overall": self.overall,
            "use_cases": self.use_cases,
            "connections": self.connections,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        """The verdict an ``sla.json`` holds; SlaError names the first missing or broken field."""
        if not isinstance(data, Mapping):
            raise SlaError("sla.json: not a JSON object; write it with this version of the suite")
        for key in ("profile", "passed", "requests", "failures", "thresholds"):
            if key not in data:
                raise SlaError(f"sla.json: field {key!r} is missing; write it with this version of the suite")
        try:
            outcomes = [
                Outcome(str(t["threshold"]), None if t["value"] is None else float(t["value"]),
                        float(t["limit"]), bool(t["passed"]), str(t.get("source", "")))
                for t in data["thresholds"]
            ]  # fmt: skip
            return cls(
                profile=str(data["profile"]),
                outcomes=outcomes,
                requests=int(data["requests"]),
                failures=int(data["failures"]),
                run=dict(data.get("run") or {}),
                window_s=None if data.get("window_s") is None else float(data["window_s"]),
                goodput=dict(data.get("goodput") or {}),
                system_output_tokens_per_s=(
                    None
                    if data.get("system_output_tokens_per_s") is None
                    else float(data["system_output_tokens_per_s"])
                ),
                arrival=dict(data.get("arrival") or {}),
                use_cases={str(k): dict(v) for k, v in (data.get("use_cases") or {}).items()},
                overall=dict(data.get("overall") or {}),
                connections=dict(data.get("connections") or {}),
                warm_up_streams=int(data.get("warm_up_streams") or 0),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SlaError(
                "sla.json: field 'thresholds' (or a summary field) is malformed; "
                "write it with this version of the suite"
            ) from None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _table(use_cases: Mapping[str, Mapping[str, Any]], overall: Mapping[str, Any]) -> str:
    head = ("use case", "streams", "fail", "ttft p50", "ttft p99", "itl p99", "tpot p50", "tpot p99",
            "e2e p95", "goodput", "tok/s")  # fmt: skip
    rows = [head]
    for name, u in [*sorted(use_cases.items()), *([("Aggregated", overall)] if overall else [])]:
        share = u.get("goodput")
        rows.append((
            name, str(u["streams"]), str(u["failures"]),
            _num(u["ttft_ms"]["p50"]), _num(u["ttft_ms"]["p99"]), _num(u["itl_ms"]["p99"]),
            _num(u["tpot_ms"]["p50"]), _num(u["tpot_ms"]["p99"]), _num(u["e2e_ms"]["p95"]),
            "-" if share is None else f"{share:.1%}", _num(u.get("output_tokens_per_s")),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  "
        + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def _arrival(
    run: Mapping[str, Any], counted: Sequence[Mapping[str, Any]], window: float | None
) -> dict[str, Any]:
    arrival = dict(run.get("arrival") or {"mode": "closed", "rate": None, "max_in_flight": None})
    mode = arrival.get("mode", "closed")
    sent = run.get("sent")
    sent_n = int(sent) if sent is not None else len(counted)
    arrival["sent"] = sent_n
    arrival["achieved_per_s"] = sent_n / window if window else None
    if mode in OPEN_LOOP:
        scheduled = int(run.get("scheduled") or 0)
        # what the seeded schedules hold in the window, reached by the loop or not (older
        # samples.json without it: the arrivals the loop reached)
        held = int(run["held"]) if run.get("held") is not None else scheduled
        arrival["held"] = held
        arrival["scheduled"] = scheduled
        arrival["dropped"] = int(run.get("dropped") or 0)
        arrival["asked_per_s"] = held / window if window else None
        rate = float(arrival.get("rate") or 0.0)
        arrival["expected"] = rate * window if window and rate else None
        lags = [(float(s["start"]) - float(s["scheduled"])) * 1000 for s in counted
                if s.get("scheduled") is not None and s.get("start") is not None]  # fmt: skip
        arrival["lag_ms"] = summary(lags)
        bound = max(LAG_FLOOR_MS, LAG_SHARE_OF_GAP * 1000 / rate) if rate else LAG_FLOOR_MS
        arrival["lag_bound_ms"] = bound
        p99 = arrival["lag_ms"]["p99"]
        arrival["lag_ok"] = p99 is None or p99 <= bound
    else:
        arrival["asked_per_s"] = None
    return arrival


def _rate_outcomes(arrival: Mapping[str, Any]) -> list[Outcome]:
    """Open loop: the requests sent against what the seeded schedule holds in the window (not
    against the arrivals the loop reached: a lagging generator reaches fewer), and the schedule's
    own count against the configured rate (a wrong user count makes it hold a multiple)."""
    asked = arrival["asked_per_s"] or 0.0
    achieved = arrival["achieved_per_s"] or 0.0
    rate = float(arrival.get("rate") or 0.0)
    floor = asked * (1 - RATE_SHORTFALL)
    label = f"arrival rate: configured {rate:g}, asked {asked:.2f} req/s, achieved {achieved:.2f} req/s"
    out = [
        Outcome(f"{label} (>= {1 - RATE_SHORTFALL:.0%} of asked)", achieved, floor or 1e-12,
                achieved >= floor, "open-loop rate check: the suite sent what its schedule asked")
    ]  # fmt: skip
    expected = arrival.get("expected")
    if expected:
        held = int(arrival["held"])
        spread = SCHEDULE_SIGMAS * math.sqrt(expected)
        out.append(
            Outcome(f"arrival schedule: {held} arrivals held, {rate:g} req/s configured expects "
                    f"{expected:.1f} +- {spread:.1f}", float(held), expected, abs(held - expected) <= spread,
                    f"Poisson count of the configured rate over the window, {SCHEDULE_SIGMAS:g} sigma")
        )  # fmt: skip
    return out


def _connections(counted: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    reused = sum(1 for s in counted if s.get("reused"))
    connect = [float(s["connect_ms"]) for s in counted if s.get("connect_ms") is not None]
    tls = [float(s["tls_ms"]) for s in counted if s.get("tls_ms") is not None]
    return {
        "new": len(counted) - reused,
        "reused": reused,
        "reused_share": reused / len(counted) if counted else None,
        "connect_ms": summary(connect),
        "tls_ms": summary(tls),
    }


def evaluate(profile: Profile, streams: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> Verdict:
    """Every threshold of *profile* against the measured streams (warm-up excluded): percentiles
    over the finished ones, the error ratio over all, too few completed streams, the achieved
    arrival rate of an open-loop run against the asked one, the goodput floor."""
    counted = measured(streams)
    finished = [s for s in counted if s.get("ok")]
    failures = len(counted) - len(finished)
    window = window_s(run)
    slo = profile.stream_slo()

    outcomes: list[Outcome] = []
    for t in profile.thresholds:
        scope = [s for s in finished if s.get("use_case") == t.use_case] if t.use_case else finished
        vals = values(scope, t.metric)
        if not vals:
            outcomes.append(Outcome(t.label, None, t.limit, False, t.source))
            continue
        value = percentile(vals, t.percentile)
        ok = value >= t.limit if t.metric in FLOOR_METRICS else value <= t.limit
        outcomes.append(Outcome(t.label, value, t.limit, ok, t.source))
    ratio = failures / len(counted) if counted else 1.0
    outcomes.append(
        Outcome(f"error_ratio <= {profile.max_error_ratio:g}", ratio, profile.max_error_ratio or 1e-12,
                ratio <= profile.max_error_ratio, "profile max_error_ratio")
    )  # fmt: skip
    enough = len(finished) >= profile.min_requests
    outcomes.append(
        Outcome(f"completed streams >= {profile.min_requests}", float(len(finished)),
                float(profile.min_requests), enough, "profile min_requests")
    )  # fmt: skip
    arrival = _arrival(run, counted, window)
    if arrival.get("mode") in OPEN_LOOP:
        outcomes += _rate_outcomes(arrival)
    good = sum(1 for s in counted if meets(s, slo))
    share = good / len(counted) if counted else None
    if profile.min_goodput is not None:
        outcomes.append(
            Outcome(f"goodput >= {profile.min_goodput:g}", share, profile.min_goodput or 1e-12,
                    share is not None and share >= profile.min_goodput, "profile min_goodput")
        )  # fmt: skip
    names = sorted({str(s.get("use_case")) for s in counted})
    return Verdict(
        profile=profile.name,
        outcomes=outcomes,
        requests=len(counted),
        failures=failures,
        run=dict(run),
        window_s=window,
        goodput={
            "slo": slo,
            "good": good,
            "share": share,
            "per_s": good / window if window else None,
            "min": profile.min_goodput,
        },
        system_output_tokens_per_s=(
            sum(int(s.get("output_tokens") or 0) for s in finished) / window if window else None
        ),
        arrival=arrival,
        use_cases={
            n: breakdown([s for s in counted if str(s.get("use_case")) == n], slo, window) for n in names
        },
        overall=breakdown(counted, slo, window),
        connections=_connections(counted),
        warm_up_streams=len(streams) - len(counted),
    )
