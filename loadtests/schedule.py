"""Open-loop arrivals: when each request is due, independent of when earlier ones finish.

A closed loop (each user sends its next request when the previous one ended) lets a slow
server slow the load down; a server under real traffic gets requests at their own pace. With
``--arrival-rate X`` each of the N users of a process draws its own seeded schedule at X/N
requests per second:

- ``poisson``: exponential inter-arrival times (mean N/X). The superposition of independent
  Poisson processes is a Poisson process at the summed rate: the requests of the whole run
  arrive as a Poisson process at X/s, MLPerf's server scenario;
- ``constant``: evenly spaced, every N/X seconds, each user at a seeded phase within the
  period (so N users do not fire together).

Pure Python: the schedule is tested without a network or a clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

MODES = ("poisson", "constant")


def offsets(mode: str, rate: float, seed: int | str) -> Iterator[float]:
    """Seconds after the start at which this user's arrivals are due (rate: per second, > 0)."""
    if rate <= 0:
        raise ValueError(f"arrival rate {rate:g}: must be above 0")
    rng = random.Random(seed)  # noqa: S311 - a load schedule, not security
    if mode == "poisson":
        at = 0.0
        while True:
            at += rng.expovariate(rate)
            yield at
    elif mode == "constant":
        period = 1.0 / rate
        at = rng.uniform(0, period)
        while True:
            yield at
            at += period
    else:
        raise ValueError(f"--arrival {mode!r}: one of {', '.join(MODES)}")


def duration_s(text: str) -> float:
    """``10s``, ``2m``, ``1m30s``, ``15`` (seconds) -> seconds (``--warm-up``)."""
    text = text.strip()
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total, number = total + float(number) * units[ch], ""
        else:
            raise ValueError(f"--warm-up {text!r}: give a duration, e.g. 10s, 2m or 1m30s")
    if number:
        raise ValueError(f"--warm-up {text!r}: give a duration, e.g. 10s, 2m or 1m30s")
    return total
