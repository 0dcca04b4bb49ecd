"""What every real `sovereign loadtest` run is checked for, whatever this machine's speed.

A run renders its SLA verdict (``sla.json``, printed at the end) from the stream records it
also writes (``samples.json`` v2). Whether a threshold holds depends on how fast the machine
was, so no test asserts that: the verdict is recomputed here with ``loadtests.sla.evaluate``
from the records and must be the recorded one, whole; Locust's own tables (the CSV, the JSON)
must count the same streams and failures as ``sla.json``; the printed report must name every
threshold with the recomputed outcome and value; the exit code must be the verdict's (0
passed, 1 missed, 3 stopped by an auth failure). Used by tests/loadtests/test_runs.py,
test_accuracy.py, test_open_loop.py and tests/e2e.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import sla

REPORTS = (
    "sla.json",
    "samples.json",
    "sla.html",
    "llm_stats.csv",
    "report.html",
    "locust_stats.csv",
    "locust.json",
)
PLOTTED = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")  # a PNG each, when the run has samples of it


@dataclass(frozen=True)
class Run:
    """A finished run whose verdict was found consistent with its stream records."""

    verdict: sla.Verdict  # recomputed from samples.json
    recorded: dict[str, Any]  # sla.json as written
    run: dict[str, Any]  # samples.json "run"
    streams: list[dict[str, Any]]  # samples.json "streams", every one (warm-up included)

    @property
    def measured(self) -> list[dict[str, Any]]:
        """The streams the verdict counts (warm-up excluded)."""
        return [s for s in self.streams if not s["warm_up"]]

    def values(self, metric: str) -> list[float]:
        """Every value of *metric* over the measured finished streams (ITL: every gap)."""
        return sla.values(self.measured, metric)

    @property
    def requests(self) -> int:
        return self.verdict.requests

    @property
    def completed(self) -> int:
        """Measured streams that finished."""
        return sum(1 for s in self.measured if s["ok"])

    def outcome(self, label: str) -> sla.Outcome:
        return next(o for o in self.verdict.outcomes if o.label.startswith(label))


def locust_counts(out: Path) -> dict[str, tuple[int, int]]:
    """(requests, failures) per row name of Locust's final stats, from locust_stats.csv, with the
    JSON's totals checked against it."""
    with (out / "locust_stats.csv").open(newline="") as fh:
        rows = {r["Name"]: (int(r["Request Count"]), int(r["Failure Count"])) for r in csv.DictReader(fh)}
    entries = json.loads((out / "locust.json").read_text())
    from_json = {e["name"]: (int(e["num_requests"]), int(e["num_failures"])) for e in entries}
    assert {k: v for k, v in rows.items() if k != "Aggregated"} == from_json, (rows, from_json)
    total = (sum(n for n, _ in from_json.values()), sum(f for _, f in from_json.values()))
    assert rows.get("Aggregated", (0, 0)) == total, (rows, total)
    return rows


def checked_run(out: Path, profile: str, returncode: int, output: str) -> Run:
    """Check the run that wrote *out* with *profile* (a shipped name or a file path), exited with
    *returncode* and printed *output* (stdout and stderr); return it for further checks."""
    for name in REPORTS:
        assert (out / name).is_file(), f"{name} was not written"
    recorded: dict[str, Any] = json.loads((out / "sla.json").read_text())
    raw = json.loads((out / "samples.json").read_text())
    assert raw["version"] == 2, raw.get("version")
    run, streams = raw["run"], raw["streams"]
    measured = [s for s in streams if not s["warm_up"]]

    # every stream record is whole: finished ones with their timings, failed ones with a code
    for s in streams:
        assert s["start"] <= s["end"], s
        assert len(s["request_id"]) == 36 and s["request_id"].count("-") == 4, s["request_id"]
        if s["ok"]:
            assert (s["connect_ms"] is None) == s["reused"], s  # a connect is timed for new connections only
            assert s["error"] is None and s["status"] == 200
            assert 0 <= s["ttft_ms"] <= s["e2e_ms"] and s["output_tokens"] >= 1
        else:
            assert isinstance(s["error"], str) and s["error"], s
    assert len({s["request_id"] for s in streams}) == len(streams), "request ids repeat"
    for metric in PLOTTED:
        assert (out / f"{metric}.png").is_file() == bool(sla.values(measured, metric)), f"{metric}.png"

    expected = sla.load_profile(profile)
    verdict = sla.evaluate(expected, streams, run)
    assert recorded == json.loads(json.dumps(verdict.to_json())), (
        "sla.json is not the verdict of the run's records"
    )
    assert recorded["requests"] == len(measured)
    assert recorded["failures"] == sum(1 for s in measured if not s["ok"])
    named = [t["threshold"] for t in recorded["thresholds"]]
    assert named[: len(expected.thresholds)] == [t.label for t in expected.thresholds]

    # Locust's tables count exactly the streams sla.json counts: one request per measured
    # stream, named by its use case, its failures as failures
    rows = locust_counts(out)
    assert rows.get("Aggregated", (0, 0)) == (recorded["requests"], recorded["failures"]), (rows, recorded)
    per_use_case = Counter(s["use_case"] for s in measured)
    failed = Counter(s["use_case"] for s in measured if not s["ok"])
    assert {k: v for k, v in rows.items() if k != "Aggregated"} == {
        name: (n, failed[name]) for name, n in per_use_case.items()
    }, rows
    with (out / "llm_stats.csv").open(newline="") as fh:
        llm = {r["use case"]: r for r in csv.DictReader(fh)}
    if measured:
        assert int(llm["Aggregated"]["streams"]) == recorded["requests"]
        assert int(llm["Aggregated"]["failures"]) == recorded["failures"]

    # the printed report: the headline once (only the master prints it in distributed mode),
    # and a line per threshold with its outcome and the value the records give
    printed = [line.strip() for line in output.splitlines()]
    headline = f"SLA profile {expected.name}: {'PASSED' if verdict.passed else 'FAILED'}"
    assert printed.count(headline) == 1, output[-3000:]
    assert sum(line.startswith(f"SLA profile {expected.name}:") for line in printed) == 1
    for o in verdict.outcomes:
        line = f"{'ok  ' if o.passed else 'MISS'} {o.label}: {o.margin}"
        assert line in printed, (line, output[-3000:])
    expected_rc = 3 if run.get("aborted") else (0 if verdict.passed else 1)
    assert returncode == expected_rc, (returncode, verdict.report())
    return Run(verdict, recorded, run, streams)
