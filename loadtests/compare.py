"""``sovereign loadtest compare A B``: what changed from run A (the baseline) to run B.

A and B are run folders, each with the ``sla.json`` and the ``samples.json`` (version 2) the
suite wrote. Every figure is recomputed from the stream records of ``samples.json`` the way
``loadtests.sla`` computes the verdict (warm-up excluded): TTFT, ITL, TPOT and E2E at p50,
p90, p95 and p99, overall and per use case present in both runs; goodput (each run judged
with the per-stream SLO its ``sla.json`` recorded); system output tokens/s; the error ratio;
the achieved request rate.

Each row shows A, B, the difference B - A and the relative difference, and a verdict. The
rule: a row is a **regression** when B is worse than A (higher latency or error ratio, lower
goodput, tokens/s or rate) by more than ``--tolerance`` percent of A (default 10; any change
when A is 0) *and* the change is more than noise: the 95 % bootstrap confidence interval of
the difference, from 1,000 resamples (fixed seed 0) of each run's own measured streams with
replacement (of its ITL gaps, for ITL), lies wholly on the worse side of zero. An
**improvement** is the same the other way; anything else is **unchanged**. The achieved rate
is a count over the window with no per-stream resample: it is judged by the tolerance alone.

Exit code: 1 when any row is a regression, 0 otherwise, 2 when an input is unusable (a
missing folder or file, a ``samples.json`` of an earlier version). Runs that differ in
profile, workload, target, users or arrival mode are compared anyway, with a warning.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.errors import BadInput
from loadtests import sla

SAMPLES_VERSION = 2
RESAMPLES = 1000
SEED = 0
Stream = Mapping[str, Any]


class CompareError(BadInput, ValueError):
    pass


@dataclass(frozen=True)
class Run:
    folder: Path
    verdict: sla.Verdict
    run: dict[str, Any]
    streams: list[Stream]  # measured: warm-up excluded

    @property
    def window(self) -> float | None:
        return sla.window_s(self.run)

    @property
    def slo(self) -> dict[str, float]:
        return dict(self.verdict.goodput.get("slo") or {})


def load(folder: Path) -> Run:
    """A run folder; CompareError names the path and the fix."""
    if not folder.is_dir():
        raise CompareError(
            f"{folder}: no such run folder; give the --out folder of a `sovereign loadtest` run"
        )
    sla_path, samples_path = folder / "sla.json", folder / "samples.json"
    for path in (sla_path, samples_path):
        if not path.is_file():
            raise CompareError(
                f"{path}: missing; give the folder of a complete run of this version of the suite"
            )
    try:
        recorded = json.loads(sla_path.read_text(encoding="utf-8"))
        raw = json.loads(samples_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CompareError(
            f"{folder}: sla.json or samples.json is not valid JSON; run the load test again"
        ) from None
    if not isinstance(raw, dict) or raw.get("version") != SAMPLES_VERSION:
        raise CompareError(
            f"{samples_path}: an earlier samples.json format (version 1: samples per metric, no stream "
            f"records); run the load test again with this version of the suite to compare it"
        )
    if not isinstance(raw.get("streams"), list) or not isinstance(raw.get("run"), dict):
        raise CompareError(f"{samples_path}: field 'streams' or 'run' is missing; run the load test again")
    try:
        verdict = sla.Verdict.from_json(recorded)
    except sla.SlaError as exc:
        raise CompareError(f"{sla_path}: {str(exc).removeprefix('sla.json: ')}") from None
    return Run(folder, verdict, raw["run"], sla.measured(raw["streams"]))


# -- statistics: each a function of (streams, run) --------------------------------------------

Stat = Callable[[Sequence[Stream], Run], float | None]


def _pct(metric: str, p: int) -> Stat:
    def stat(streams: Sequence[Stream], run: Run) -> float | None:
        vals = sla.values(streams, metric)
        return sla.percentile(vals, p) if vals else None

    return stat


def _goodput(streams: Sequence[Stream], run: Run) -> float | None:
    return sum(sla.meets(s, run.slo) for s in streams) / len(streams) if streams else None


def _tokens(streams: Sequence[Stream], run: Run) -> float | None:
    window = run.window
    return sum(int(s.get("output_tokens") or 0) for s in streams if s.get("ok")) / window if window else None


def _errors(streams: Sequence[Stream], run: Run) -> float | None:
    return sum(1 for s in streams if not s.get("ok")) / len(streams) if streams else None


def _rate(streams: Sequence[Stream], run: Run) -> float | None:
    value = run.verdict.arrival.get("achieved_per_s")
    if value is not None:
        return float(value)
    window = run.window
    return len(streams) / window if window else None


def _bootstrap(metric: str, p: int, a: Sequence[Stream], b: Sequence[Stream]) -> tuple[float, float] | None:
    """95 % interval of percentile(B) - percentile(A), resampling each run's whole streams: the
    values of one stream (its ITL gaps) are correlated, so a stream's values are drawn together,
    never one gap at a time (which would understate the interval)."""
    rng = np.random.default_rng(SEED)
    ra, rb = _resampled(a, metric, p, rng), _resampled(b, metric, p, rng)
    if ra is None or rb is None:
        return None
    low, high = np.percentile(rb - ra, [2.5, 97.5])
    return float(low), float(high)


def _resampled(streams: Sequence[Stream], metric: str, p: int, rng: np.random.Generator) -> np.ndarray | None:
    """The nearest-rank p-th percentile of *metric* over RESAMPLES resamples of *streams* (drawn
    with replacement, each drawn stream contributing all its values)."""
    groups = [v for v in (sla.values([s], metric) for s in streams) if v]
    if not groups:
        return None
    owner = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    flat = np.concatenate([np.asarray(g, dtype=float) for g in groups])
    order = np.argsort(flat, kind="stable")
    flat, owner = flat[order], owner[order]
    picks = rng.integers(0, len(groups), (RESAMPLES, len(groups)))
    out = np.empty(RESAMPLES)
    batch = max(1, 2_000_000 // len(flat))  # bounded memory: batch x values weights at a time
    for lo in range(0, RESAMPLES, batch):
        rows = picks[lo : lo + batch]
        counts = np.zeros((len(rows), len(groups)), dtype=np.int64)
        np.add.at(counts, (np.arange(len(rows))[:, None], rows), 1)
        cumulative = np.cumsum(counts[:, owner], axis=1)  # each value weighted by its stream's draws
        total = cumulative[:, -1]
        rank = np.maximum(1, (p * total + 99) // 100)  # nearest rank, exact integer arithmetic
        out[lo : lo + len(rows)] = flat[(cumulative < rank[:, None]).sum(axis=1)]
    return out


def _bootstrap_mean(
    per_a: Sequence[float], scale_a: float, per_b: Sequence[float], scale_b: float
) -> tuple[float, float] | None:
    """95 % interval of scale_b * mean(per_b) - scale_a * mean(per_a), resampling each run's
    per-stream values (goodput: met the SLO or not; tokens/s: a stream's tokens, scaled by
    streams / window)."""
    va, vb = np.asarray(per_a, dtype=float), np.asarray(per_b, dtype=float)
    if not len(va) or not len(vb):
        return None
    rng = np.random.default_rng(SEED)
    ma = va[rng.integers(0, len(va), (RESAMPLES, len(va)))].mean(axis=1) * scale_a
    mb = vb[rng.integers(0, len(vb), (RESAMPLES, len(vb)))].mean(axis=1) * scale_b
    low, high = np.percentile(mb - ma, [2.5, 97.5])
    return float(low), float(high)


PerStream = Callable[[Stream, Run], float]
# per-stream value and whether the statistic is its mean (True) or its sum per second (False)
PER_STREAM: dict[str, tuple[PerStream, bool]] = {
    "goodput": (lambda s, r: float(sla.meets(s, r.slo)), True),
    "error_ratio": (lambda s, r: float(not s.get("ok")), True),
    "system_output_tokens_per_s": (
        lambda s, r: float(s.get("output_tokens") or 0) if s.get("ok") else 0.0,
        False,
    ),
}


def _interval(
    name: str, a: Run, sa: Sequence[Stream], b: Run, sb: Sequence[Stream]
) -> tuple[float, float] | None:
    per, is_mean = PER_STREAM[name]
    if is_mean:
        return _bootstrap_mean([per(s, a) for s in sa], 1.0, [per(s, b) for s in sb], 1.0)
    if not a.window or not b.window:
        return None
    return _bootstrap_mean(
        [per(s, a) for s in sa], len(sa) / a.window, [per(s, b) for s in sb], len(sb) / b.window
    )


@dataclass(frozen=True)
class Row:
    metric: str
    scope: str  # "all" or a use case
    a: float | None
    b: float | None
    delta: float | None
    relative: float | None  # delta / a; None when a is 0 or either is missing
    higher_is_better: bool
    interval: tuple[float, float] | None  # 95 % bootstrap interval of delta; None: not resampled
    verdict: str  # regression | improvement | unchanged | missing


def _row(
    metric: str,
    scope: str,
    stat: Stat,
    a: Run,
    sa: Sequence[Stream],
    b: Run,
    sb: Sequence[Stream],
    tolerance: float,
    higher_is_better: bool,
    interval: Callable[[], tuple[float, float] | None] | None,
) -> Row:
    va, vb = stat(sa, a), stat(sb, b)
    if va is None or vb is None:
        return Row(metric, scope, va, vb, None, None, higher_is_better, None, "missing")
    delta = vb - va
    relative = delta / va if va else None
    beyond = abs(delta) > tolerance / 100 * abs(va) if va else delta != 0
    worse = delta < 0 if higher_is_better else delta > 0
    ci = None
    verdict = "unchanged"
    if beyond:
        if interval is None:  # a count with nothing to resample: the tolerance alone decides
            clear = True
        else:  # outside the noise: the whole interval on the side of the change
            ci = interval()
            clear = ci is not None and (ci[0] > 0 if delta > 0 else ci[1] < 0)
        if clear:
            verdict = "regression" if worse else "improvement"
    return Row(metric, scope, va, vb, delta, relative, higher_is_better, ci, verdict)


def compare(a: Run, b: Run, tolerance: float = 10.0) -> list[Row]:
    rows: list[Row] = []
    shared = sorted({str(s.get("use_case")) for s in a.streams} & {str(s.get("use_case")) for s in b.streams})
    for scope in ["all", *shared]:
        sa = a.streams if scope == "all" else [s for s in a.streams if str(s.get("use_case")) == scope]
        sb = b.streams if scope == "all" else [s for s in b.streams if str(s.get("use_case")) == scope]
        for metric in sla.LATENCIES:
            for p in sla.PERCENTILES:

                def ci(m: str = metric, q: int = p, xa: Sequence[Stream] = sa, xb: Sequence[Stream] = sb
                       ) -> tuple[float, float] | None:  # fmt: skip
                    return _bootstrap(m, q, xa, xb)

                rows.append(
                    _row(f"{metric} p{p}", scope, _pct(metric, p), a, sa, b, sb, tolerance, False, ci)
                )
        for name, stat, higher in (("goodput", _goodput, True), ("error_ratio", _errors, False)):

            def ci_s(n: str = name, xa: Sequence[Stream] = sa, xb: Sequence[Stream] = sb
                     ) -> tuple[float, float] | None:  # fmt: skip
                return _interval(n, a, xa, b, xb)

            rows.append(_row(name, scope, stat, a, sa, b, sb, tolerance, higher, ci_s))
    rows.append(
        _row("system_output_tokens_per_s", "all", _tokens, a, a.streams, b, b.streams, tolerance, True,
             lambda: _interval("system_output_tokens_per_s", a, a.streams, b, b.streams))
    )  # fmt: skip
    rows.append(_row("achieved_req_per_s", "all", _rate, a, a.streams, b, b.streams, tolerance, True, None))
    return rows


def warnings(a: Run, b: Run) -> list[str]:
    """What makes the two runs unlike (they are compared anyway)."""
    out = []
    pairs = {
        "profile": (a.verdict.profile, b.verdict.profile),
        "workload": (a.run.get("workload"), b.run.get("workload")),
        "target": (a.run.get("target"), b.run.get("target")),
        "users": (a.run.get("users"), b.run.get("users")),
        "arrival mode": ((a.run.get("arrival") or {}).get("mode"), (b.run.get("arrival") or {}).get("mode")),
        "arrival rate": ((a.run.get("arrival") or {}).get("rate"), (b.run.get("arrival") or {}).get("rate")),
    }
    for what, (x, y) in pairs.items():
        if x != y:
            out.append(f"the runs differ in {what} (A {x}, B {y}): comparing unlike runs")
    in_a = {str(s.get("use_case")) for s in a.streams}
    in_b = {str(s.get("use_case")) for s in b.streams}
    for name in sorted(in_a ^ in_b):
        out.append(f"use case {name} ran in {'A' if name in in_a else 'B'} only: not compared on its own")
    return out


def _f(v: float | None, rel: bool = False) -> str:
    if v is None:
        return "-"
    if rel:
        return f"{v:+.1%}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.1f}"


def text(a: Run, b: Run, rows: Sequence[Row], notes: Sequence[str], tolerance: float) -> str:
    lines = [
        f"{tag}: {r.folder} ({r.verdict.profile}, {'PASSED' if r.verdict.passed else 'FAILED'})"
        for tag, r in (("A", a), ("B", b))
    ]
    lines += [f"warning: {n}" for n in notes]
    head = ("metric", "scope", "A", "B", "delta", "relative", "95% CI of delta", "verdict")
    table = [head]
    for r in rows:
        ci = "-" if r.interval is None else f"[{_f(r.interval[0])}, {_f(r.interval[1])}]"
        table.append((r.metric, r.scope, _f(r.a), _f(r.b), _f(r.delta), _f(r.relative, rel=True), ci,
                      r.verdict.upper() if r.verdict == "regression" else r.verdict))  # fmt: skip
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for t in table:
        cells = zip(t, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    regressions = sum(r.verdict == "regression" for r in rows)
    improvements = sum(r.verdict == "improvement" for r in rows)
    lines.append(
        f"{'REGRESSION' if regressions else 'NO REGRESSION'}: {regressions} regressions, "
        f"{improvements} improvements beyond {tolerance:g} % and the bootstrap interval"
    )
    return "\n".join(lines)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


DESCRIPTION = "Compare two load-test runs (A: baseline, B: new); exit 1 on a regression."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sovereign loadtest compare`` (loadtests/cli.py registers the sub-command)."""
    parser.add_argument("a", type=Path, help="run folder A (baseline): sla.json and samples.json")
    parser.add_argument("b", type=Path, help="run folder B (new)")
    parser.add_argument(
        "--tolerance", type=float, default=10.0, help="relative change in %% ignored (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    """Compare the runs *args* name: 0, or 1 on a regression. A negative tolerance or an
    unreadable run is a ``CompareError`` (infra/cli.py's handler: exit 2)."""
    if args.tolerance < 0:
        raise CompareError("--tolerance must be at least 0 (percent)")
    a, b = load(args.a), load(args.b)
    rows = compare(a, b, args.tolerance)
    notes = warnings(a, b)
    regression = any(r.verdict == "regression" for r in rows)
    if args.json:
        doc = {
            "a": str(a.folder), "b": str(b.folder), "tolerance_pct": args.tolerance, "warnings": notes,
            "rows": [{k: _clean(v) for k, v in asdict(r).items()} for r in rows],
            "regression": regression,
        }  # fmt: skip
        print(json.dumps(doc, indent=2))
    else:
        for n in notes:
            print(f"sovereign loadtest compare: warning: {n}", file=sys.stderr)
        print(text(a, b, rows, [], args.tolerance))
    return 1 if regression else 0
