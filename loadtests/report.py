"""PNG plots of the stream metrics' percentiles over time (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from loadtests.sla import percentile

WINDOW_S = 5.0


def windows(pairs: Sequence[tuple[float, float]], width: float = WINDOW_S) -> list[tuple[float, list[float]]]:
    """Group (time, value) pairs into windows of *width* seconds from the first sample."""
    if not pairs:
        return []
    start = min(t for t, _ in pairs)
    grouped: dict[int, list[float]] = {}
    for t, v in pairs:
        grouped.setdefault(int((t - start) // width), []).append(v)
    return [(i * width, grouped[i]) for i in sorted(grouped)]


def plots(samples: Mapping[str, Sequence[tuple[float, float]]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        series = windows(samples.get(metric, []))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = [x for x, _ in series]
        for pct in (50, 95, 99):
            ax.plot(xs, [percentile(vs, pct) for _, vs in series], marker=".", label=f"p{pct}")
        ax.set_xlabel(f"seconds into the run ({WINDOW_S:g} s windows)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} percentiles over time")
        ax.grid(alpha=0.3)
        ax.legend()
        path = out / f"{metric}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
