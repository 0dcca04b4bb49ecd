"""What every real `sovereign loadtest` run is checked for, whatever this machine's speed.

A run renders its SLA verdict (``sla.json``, printed at the end) from the raw samples it also
writes (``samples.json``). Whether a threshold holds depends on how fast the machine was, so
no test asserts that: the verdict is recomputed here with ``loadtests.sla.evaluate`` from the
raw samples and must be the recorded one, whole; the printed report must name every threshold
with the recomputed outcome and value; the exit code must be the verdict's (0 passed, 1
missed). Used by tests/loadtests/test_runs.py, test_accuracy.py and tests/e2e.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import sla

REPORTS = ("sla.json", "samples.json", "report.html", "locust_stats.csv", "locust.json")
PLOTTED = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")  # a PNG each, when the run has samples of it


@dataclass(frozen=True)
class Run:
    """A finished run whose verdict was found consistent with its raw samples."""

    verdict: sla.Verdict  # recomputed from samples.json
    recorded: dict[str, Any]  # sla.json as written
    samples: dict[str, list[tuple[float, float]]]  # samples.json: metric -> [(unix time, value)]

    def values(self, metric: str) -> list[float]:
        return [v for _, v in self.samples.get(metric, [])]

    @property
    def requests(self) -> int:
        return self.verdict.requests

    @property
    def completed(self) -> int:
        """Streams that finished (one e2e_ms sample each)."""
        return len(self.values("e2e_ms"))

    def outcome(self, label: str) -> sla.Outcome:
        return next(o for o in self.verdict.outcomes if o.label == label)


def checked_run(out: Path, profile: str, returncode: int, output: str) -> Run:
    """Check the run that wrote *out* with *profile* (a shipped name or a file path), exited with
    *returncode* and printed *output* (stdout and stderr); return it for further checks."""
    for name in REPORTS:
        assert (out / name).is_file(), f"{name} was not written"
    recorded: dict[str, Any] = json.loads((out / "sla.json").read_text())
    raw = json.loads((out / "samples.json").read_text())
    samples = {m: [(float(t), float(v)) for t, v in pairs] for m, pairs in raw.items()}
    values = {m: [v for _, v in pairs] for m, pairs in samples.items()}
    for metric in PLOTTED:
        assert (out / f"{metric}.png").is_file() == bool(values.get(metric)), f"{metric}.png"

    # every request counted is either a finished stream (with its samples) or a failure
    completed = len(values.get("e2e_ms", []))
    assert recorded["requests"] == completed + recorded["failures"], (recorded, completed)
    for metric in ("ttft_ms", "tokens_per_s"):  # one sample of each per finished stream
        assert len(values.get(metric, [])) == completed, metric
    # a stream's samples are recorded together (same time stamp, same order in every metric):
    # its first token came before its end
    ttft, e2e = samples.get("ttft_ms", []), samples.get("e2e_ms", [])
    assert [t for t, _ in ttft] == [t for t, _ in e2e]
    assert all(first <= end for (_, first), (_, end) in zip(ttft, e2e, strict=True))

    expected = sla.load_profile(profile)
    verdict = sla.evaluate(expected, values, int(recorded["requests"]), int(recorded["failures"]))
    assert recorded == verdict.to_json(), "sla.json is not the verdict of the run's own raw samples"
    named = [t["threshold"] for t in recorded["thresholds"]]
    assert named[: len(expected.thresholds)] == [t.label for t in expected.thresholds]

    # the printed report: the headline once (only the master prints it in distributed mode),
    # and a line per threshold with its outcome and the value the samples give
    printed = [line.strip() for line in output.splitlines()]
    headline = f"SLA profile {expected.name}: {'PASSED' if verdict.passed else 'FAILED'}"
    assert printed.count(headline) == 1, output[-3000:]
    assert sum(line.startswith(f"SLA profile {expected.name}:") for line in printed) == 1
    for o in verdict.outcomes:
        line = f"{'ok  ' if o.passed else 'MISS'} {o.label}: {o.margin}"
        assert line in printed, (line, output[-3000:])
    assert returncode == (0 if verdict.passed else 1), (returncode, verdict.report())
    return Run(verdict, recorded, samples)
