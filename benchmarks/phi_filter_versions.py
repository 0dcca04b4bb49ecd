"""The PHI filter of two commits side by side, with and without the name recogniser.

    git worktree add /tmp/wt-base <commit>
    .venv/bin/python -m benchmarks.phi_filter_versions --base /tmp/wt-base [--rounds 5]

The same 400 messages of 1 KB (benchmarks/phi_filter.py ``messages``, written once to a file)
go through ``PHIFilter.apply`` in a fresh interpreter per tree and round, the trees alternating
(base, this tree, this tree with ``recognizers(True)``), so a busy machine slows all of them
alike; medians of the rounds' p50/p99 per 1 KB message. The result goes to
benchmarks/results/phi_filter_versions.json; recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

RUN = """
import json, os, sys, time
sys.path.insert(0, {tree!r})
from gateway.phi.context import PatientContext
from gateway.phi.filter import PHIFilter
from gateway.policy import load_policies
msgs = json.load(open({messages!r}))
plugins = []
if {names!r}:
    from gateway.phi.filter import recognizers
    plugins = recognizers(True)
phi = PHIFilter(plugins)
policy = load_policies()["patient-support"]
key = os.urandom(32)
contexts = [PatientContext.model_validate(c) for _, c in msgs]
for (text, _), ctx in zip(msgs[:20], contexts[:20]):
    phi.apply(policy, ctx, [text], key, "bench")  # warm-up
times = []
for (text, _), ctx in zip(msgs, contexts):
    t0 = time.perf_counter_ns()
    phi.apply(policy, ctx, [text], key, "bench")
    times.append(time.perf_counter_ns() - t0)
times.sort()
p50, p99 = times[len(times) // 2], times[round(0.99 * (len(times) - 1))]
print(json.dumps({{"p50_ms": p50 / 1e6, "p99_ms": p99 / 1e6}}))
"""


def run(tree: Path, messages: Path, names: bool) -> dict[str, float]:
    code = RUN.format(tree=str(tree), messages=str(messages), names=names)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tree)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="a worktree of the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "benchmarks" / "results" / "phi_filter_versions.json"))
    args = parser.parse_args()
    from benchmarks.phi_filter import messages

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "messages.json"
        path.write_text(json.dumps(messages(400)))
        paths = {
            "base": (Path(args.base), False),
            "this tree": (HERE, False),
            "this tree + names": (HERE, True),
        }
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, (tree, names) in paths.items():
                rounds[name].append(run(tree, path, names))
    summary = {
        name: {k: statistics.median(r[k] for r in results) for k in ("p50_ms", "p99_ms")}
        for name, results in rounds.items()
    }
    Path(args.out).write_text(json.dumps({"rounds": rounds, "median": summary}, indent=1) + "\n")
    print("| filter (per 1 KB message) | p50 ms | p99 ms |\n|---|---|---|")
    for name, values in summary.items():
        print(f"| {name} | {values['p50_ms']:.3f} | {values['p99_ms']:.3f} |")


if __name__ == "__main__":
    main()
