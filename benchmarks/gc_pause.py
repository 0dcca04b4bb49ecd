"""The event loop's pause for a full garbage collection in the gateway process, with the
start-up heap frozen (gateway/server.py freeze_start_up_heap) and without, side by side.

    .venv/bin/python -m benchmarks.gc_pause [--rounds 7]

The gateway's app is built as ``python -m gateway`` builds it (create_app on a settings file:
no OpenBao or upstream is contacted to build it), then a full collection (``gc.collect()``, what
the collector runs on its own when enough objects have outlived the younger generations) is
timed ``--rounds`` times, before and after the freeze, in one process. A full collection
stops everything the process does, the event loop included: its length is a pause of every
stream in flight. Median and max per side. (Frozen, a collection here walks nearly nothing:
no request has run; in a serving gateway it walks what requests and connections left, which
``benchmarks/gateway_overhead.py`` reports from the gateway's own
``sovereign_gateway_gc_pause_seconds``.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.support import gateway_config


def timed_collections(rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gc_pause.json"))
    args = parser.parse_args()
    from gateway.app import create_app
    from gateway.server import freeze_start_up_heap
    from gateway.settings import CONFIG_ENV, GatewaySettings

    with tempfile.TemporaryDirectory() as tmp:
        config = gateway_config(Path(tmp), "http://127.0.0.1:1", "unused", "http://127.0.0.1:1")
        os.environ[CONFIG_ENV] = str(config)
        app = create_app(GatewaySettings())
        tracked = len(gc.get_objects())
        before = timed_collections(args.rounds)
        frozen = freeze_start_up_heap()
        after = timed_collections(args.rounds)
        del app
    result = {
        "tracked_objects": tracked,
        "frozen": frozen,
        "full_collection_ms": {
            "unfrozen": {"median": statistics.median(before), "max": max(before), "runs": before},
            "frozen": {"median": statistics.median(after), "max": max(after), "runs": after},
        },
        "cpus": os.cpu_count(),
    }
    print(
        f"start-up heap: {tracked} tracked objects, {frozen} frozen\n"
        f"full collection: {statistics.median(before):.2f} ms unfrozen (max {max(before):.2f}), "
        f"{statistics.median(after):.2f} ms frozen (max {max(after):.2f}); median of {args.rounds}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
