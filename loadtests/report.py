"""The run's reports from its stream records and verdict: PNG plots (matplotlib, headless), the
LLM metrics table (``llm_stats.csv``, and its rows for Locust's web UI) and one self-contained
HTML page (``sla.html``: verdict, run metadata, thresholds with their sources, goodput, rates,
the per-use-case table and every plot inlined as a base64 PNG).

Plots: ``ttft_ms.png``, ``tpot_ms.png``, ``itl_ms.png``, ``e2e_ms.png`` (p50/p95/p99 per 5 s
window of the streams' end times, the warm-up shaded; drawn when the measured streams
have values of the metric), ``latency_cdf.png`` (the cumulative
distribution of each metric over the measured streams) and ``rate.png`` (streams started per
second, with the asked rate of an open-loop run beside it).
"""

from __future__ import annotations

import base64
import csv
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.sla import LATENCIES, OPEN_LOOP, PERCENTILES, Verdict, measured, percentile

WINDOW_S = 5.0
Stream = Mapping[str, Any]


def windows(pairs: Sequence[tuple[float, float]], width: float = WINDOW_S, start: float | None = None
            ) -> list[tuple[float, list[float]]]:  # fmt: skip
    """Group (time, value) pairs into windows of *width* seconds from *start* (default: the
    first pair's time); each window as (its start in seconds from *start*, its values)."""
    if not pairs:
        return []
    origin = min(t for t, _ in pairs) if start is None else start
    grouped: dict[int, list[float]] = {}
    for t, v in pairs:
        grouped.setdefault(int((t - origin) // width), []).append(v)
    return [(i * width, grouped[i]) for i in sorted(grouped)]


def timed(streams: Sequence[Stream], metric: str) -> list[tuple[float, float]]:
    """(end time, value) of *metric* over the finished streams; ITL: every gap of a stream."""
    pairs: list[tuple[float, float]] = []
    for s in streams:
        if not s.get("ok") or s.get("end") is None:
            continue
        at = float(s["end"])
        if metric == "itl_ms":
            pairs.extend((at, float(v)) for v in s.get("itl_ms") or ())
        elif s.get(metric) is not None:
            pairs.append((at, float(s[metric])))
    return pairs


def _origin(streams: Sequence[Stream], run: Mapping[str, Any]) -> float:
    if run.get("started") is not None:
        return float(run["started"])
    starts = [float(s["start"]) for s in streams if s.get("start") is not None]
    return min(starts) if starts else 0.0


def plots(streams: Sequence[Stream], run: Mapping[str, Any], out: Path) -> list[Path]:
    """Write the PNG plots of *streams* into *out*; the paths written (a metric without values
    gets no plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    origin = _origin(streams, run)
    warm_up = float(run["measure_from"]) - origin if run.get("measure_from") is not None else 0.0
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    counted = measured(streams)
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        series = windows(timed(streams, metric), start=origin)
        if not series or not timed(counted, metric):  # a plot when the verdict has values of it
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = [x for x, _ in series]
        for pct in (50, 95, 99):
            ax.plot(xs, [percentile(vs, pct) for _, vs in series], marker=".", label=f"p{pct}")
        if warm_up > 0:
            ax.axvspan(0, warm_up, color="grey", alpha=0.15, label="warm-up (not counted)")
        ax.set_xlabel(f"seconds into the run ({WINDOW_S:g} s windows of stream ends)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} percentiles over time")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, f"{metric}.png")

    with_values = [(m, sorted(v for _, v in timed(counted, m))) for m in LATENCIES]
    with_values = [(m, vs) for m, vs in with_values if vs]
    if with_values:
        fig, axes = plt.subplots(1, len(with_values), figsize=(4 * len(with_values), 3.5), squeeze=False)
        for ax, (metric, vs) in zip(axes[0], with_values, strict=True):
            ax.step(vs, [(i + 1) / len(vs) for i in range(len(vs))], where="post")
            ax.set_xlabel(metric)
            ax.set_ylim(0, 1.01)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("share of values at or below")
        fig.suptitle("latency distribution (measured streams, warm-up excluded)")
        save(fig, "latency_cdf.png")

    starts = [float(s["start"]) for s in streams if s.get("start") is not None]
    if starts:
        end = float(run["ended"]) if run.get("ended") is not None else max(starts)
        bins = max(1, int((max(end, max(starts)) - origin) // WINDOW_S) + 1)
        counts = [0] * bins  # empty windows count as 0, not as missing
        for t in starts:
            counts[min(bins - 1, max(0, int((t - origin) // WINDOW_S)))] += 1
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.step([i * WINDOW_S for i in range(bins)], [c / WINDOW_S for c in counts], where="post",
                label="achieved (streams started)")  # fmt: skip
        arrival = run.get("arrival") or {}
        if arrival.get("mode") in OPEN_LOOP and arrival.get("rate"):
            ax.axhline(
                float(arrival["rate"]), color="red", linestyle="--", label=f"asked ({arrival['mode']})"
            )
        if warm_up > 0:
            ax.axvspan(0, warm_up, color="grey", alpha=0.15, label="warm-up (not counted)")
        ax.set_xlabel(f"seconds into the run ({WINDOW_S:g} s windows)")
        ax.set_ylabel("requests per second")
        ax.set_title("arrival rate: asked vs achieved")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "rate.png")
    return written


# -- the LLM metrics table --------------------------------------------------------------------

COLUMNS = ("use case", "streams", "failures",
           *(f"{m.removesuffix('_ms')} p{p} (ms)" for m in LATENCIES for p in PERCENTILES),
           "goodput", "output tokens/s")  # fmt: skip


def llm_rows(verdict: Verdict) -> list[dict[str, Any]]:
    """One row per use case and an "Aggregated" one, keyed by COLUMNS (None: no value)."""
    rows = []
    for name, u in [*sorted(verdict.use_cases.items()), ("Aggregated", verdict.overall)]:
        if not u:
            continue
        row: dict[str, Any] = {"use case": name, "streams": u["streams"], "failures": u["failures"]}
        for m in LATENCIES:
            for p in PERCENTILES:
                row[f"{m.removesuffix('_ms')} p{p} (ms)"] = (u.get(m) or {}).get(f"p{p}")
        row["goodput"] = u.get("goodput")
        row["output tokens/s"] = u.get("output_tokens_per_s")
        rows.append(row)
    return rows


def write_llm_csv(verdict: Verdict, path: Path) -> Path:
    """``llm_stats.csv``: llm_rows with values rounded to 0.01 (empty: no value)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in llm_rows(verdict):
            writer.writerow({k: ("" if v is None else round(v, 4) if isinstance(v, float) else v)
                             for k, v in row.items()})  # fmt: skip
    return path


# -- the HTML report --------------------------------------------------------------------------

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Load test {{ v.profile }}: {{ headline }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.ok{color:#060}.miss{color:#b00;font-weight:bold}
h1 .ok,h1 .miss{padding:0 .3em}img{max-width:100%;display:block;margin:1em 0}small{color:#666}
</style></head><body>
<h1>SLA profile {{ v.profile }}: <span class="{{ 'ok' if v.passed else 'miss' }}">{{ headline }}</span></h1>
<h2>Run</h2>
<table>{% for k, val in meta %}<tr><th>{{ k }}</th><td>{{ val }}</td></tr>{% endfor %}</table>
<h2>Thresholds</h2>
<table><tr><th>threshold</th><th>value</th><th>limit</th><th>outcome</th><th>source</th></tr>
{% for o in v.outcomes %}<tr><td>{{ o.label }}</td><td>{{ o.margin }}</td><td>{{ '%g' % o.limit }}</td>
<td class="{{ 'ok' if o.passed else 'miss' }}">{{ 'ok' if o.passed else 'MISS' }}</td>
<td style="text-align:left"><small>{{ o.source }}</small></td></tr>{% endfor %}</table>
<h2>Goodput and rates</h2>
<table>{% for k, val in rates %}<tr><th>{{ k }}</th><td>{{ val }}</td></tr>{% endfor %}</table>
<h2>Per use case</h2>
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for c in columns %}<td>{{ fmt(r[c]) }}</td>{% endfor %}</tr>{% endfor %}</table>
<h2>Plots</h2>
{% for name, data in images %}<img alt="{{ name }}" src="data:image/png;base64,{{ data }}">{% endfor %}
</body></html>
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 1 or v == 0 else f"{v:.3f}"
    return str(v)


def _lag(arrival: dict[str, Any]) -> str:
    lag = arrival.get("lag_ms") or {}
    if lag.get("p99") is None:
        return "-"
    warn = "" if arrival.get("lag_ok", True) else " WARN"
    return f"{_fmt(lag.get('p50'))} / {_fmt(lag['p99'])} ({_fmt(arrival.get('lag_bound_ms'))}){warn}"


def _pair(summary: Mapping[str, Any] | None) -> str:
    summary = summary or {}
    return f"{_fmt(summary.get('p50'))} / {_fmt(summary.get('p95'))}"


def _when(t: Any) -> str:
    return "-" if t is None else datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_html(
    verdict: Verdict,
    streams: Sequence[Stream],
    run: Mapping[str, Any],
    path: Path,
    images: Sequence[Path] | None = None,
) -> Path:
    """``sla.html``: one self-contained page; *images*: PNGs already drawn by ``plots`` (else
    they are drawn here, in a temporary folder)."""
    import jinja2

    with tempfile.TemporaryDirectory() as tmp:
        pngs = list(images) if images is not None else plots(streams, run, Path(tmp))
        inlined = [(p.stem, base64.b64encode(p.read_bytes()).decode("ascii")) for p in pngs if p.is_file()]
    arrival = verdict.arrival or {}
    meta = [
        ("target", run.get("target")), ("profile", verdict.profile), ("workload", run.get("workload")),
        ("users", run.get("users")), ("spawn rate", run.get("spawn_rate")), ("run time", run.get("run_time")),
        ("processes", run.get("processes")), ("arrival", _arrival_text(arrival)),
        ("started", _when(run.get("started"))), ("ended", _when(run.get("ended"))),
        ("warm-up", f"{_fmt(run.get('warm_up_s'))} s, {verdict.warm_up_streams} streams not counted"),
        ("measured window", f"{_fmt(verdict.window_s)} s"), ("seed", run.get("seed")),
        ("stamps", run.get("stamps")),
        ("commit", f"{run.get('commit')}{' (dirty)' if run.get('dirty') else ''}"),
        ("locust / python", f"{run.get('locust_version')} / {run.get('python')}"),
        ("host", run.get("hostname")),
    ]  # fmt: skip
    g = verdict.goodput or {}
    c = verdict.connections or {}
    rates = [
        ("streams (failed)", f"{verdict.requests} ({verdict.failures})"),
        ("goodput", "-" if g.get("share") is None else f"{g['share']:.1%} ({g.get('good')} streams)"),
        ("goodput SLO per stream", ", ".join(f"{k} {v:g}" for k, v in (g.get("slo") or {}).items()) or "-"),
        ("good streams/s", _fmt(g.get("per_s"))),
        ("system output tokens/s", _fmt(verdict.system_output_tokens_per_s)),
        ("configured req/s", _fmt(arrival.get("rate"))),
        ("asked req/s (the schedule's arrivals in the window)", _fmt(arrival.get("asked_per_s"))),
        ("achieved req/s", _fmt(arrival.get("achieved_per_s"))),
        ("start lag ms p50 / p99 (bound)", _lag(arrival)),
        ("connections new / reused", f"{c.get('new', '-')} / {c.get('reused', '-')}"),
        ("connect ms p50 / p95", _pair(c.get("connect_ms"))),
        ("TLS ms p50 / p95", _pair(c.get("tls_ms"))),
    ]  # fmt: skip
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        v=verdict,
        headline="PASSED" if verdict.passed else "FAILED",
        meta=[(k, _fmt(val)) for k, val in meta],
        rates=rates,
        columns=COLUMNS,
        rows=llm_rows(verdict),
        fmt=_fmt,
        images=inlined,
    )
    path.write_text(html, encoding="utf-8")
    return path


def _arrival_text(arrival: Mapping[str, Any]) -> str:
    mode = arrival.get("mode", "closed")
    if mode not in OPEN_LOOP:
        return "closed loop"
    extra = f", at most {arrival['max_in_flight']} in flight" if arrival.get("max_in_flight") else ""
    rate = arrival.get("rate")
    return f"{mode} at {'-' if rate is None else format(float(rate), 'g')} req/s{extra}"
