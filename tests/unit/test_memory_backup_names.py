"""Backup generations sort by their names in the order they were made (gateway/memory/backup.py)."""

from __future__ import annotations

from gateway.memory import backup


def test_generation_names_sort_in_time_order_across_a_second_boundary() -> None:
    second = 1_796_000_000 * 1_000_000_000
    times = [second - 1, second, second + 1, second + 999_999_999, second + 1_000_000_000]
    names = [backup.stamp(t) for t in times]
    assert names == sorted(names) and len(set(names)) == len(names)
    # the old scheme: the seconds from one reading and the fraction from another, a tick later
    straddled = backup.stamp(second - 1)[:15] + f"{(second + 5) % 1_000_000_000:09d}Z"
    assert straddled < backup.stamp(second - 1)  # what the single reading prevents
