"""The stream's watchdog (gateway/relay.py): one timer for all the waits of a stream, in place of
a timeout per wait. Every wait still ends at its own deadline, or the drain's, with TimeoutError,
and at no other time.

Deadlines under test are short, the waits that must not time out have deadlines far beyond what
they take (ordering, not timing); asyncio.wait_for around each scenario only detects a hang."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.relay import Watchdog

HANG_S = 10


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), HANG_S))


def test_a_wait_past_its_deadline_times_out_and_the_next_wait_still_works() -> None:
    async def scenario() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=60)
        with pytest.raises(TimeoutError):
            await dog.wait(asyncio.Event().wait(), loop.time() + 0.02)
        task = asyncio.current_task()
        assert task is not None
        done = asyncio.Event()
        loop.call_later(0.05, done.set)
        await dog.wait(done.wait(), loop.time() + 60)
        return task.cancelling(), "ok"

    assert run(scenario) == (0, "ok")  # the task is not left cancelled


def test_a_wait_with_a_deadline_before_the_armed_timer_still_ends_at_it() -> None:
    """The timer is armed for a late deadline; a later wait with an earlier one brings it forward."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=60)
        await dog.wait(asyncio.sleep(0), loop.time() + 60)
        with pytest.raises(TimeoutError):
            await dog.wait(asyncio.Event().wait(), loop.time() + 0.02)

    run(scenario)


def test_the_timer_firing_during_a_wait_with_a_later_deadline_does_not_end_it() -> None:
    """The timer fires every write_timeout_s (0.02 s here) while the stream lives; a wait whose own
    deadline is still ahead goes on, and the timer is armed again."""

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=0.02)
        await dog.wait(asyncio.sleep(0), loop.time() + 0.02)  # the timer armed at 0.02 s
        done = asyncio.Event()
        loop.call_later(0.2, done.set)  # about ten firings of the timer before it
        await dog.wait(done.wait(), loop.time() + 60)
        with pytest.raises(TimeoutError):  # and the timer still ends a wait that is due
            await dog.wait(asyncio.Event().wait(), loop.time() + 0.02)
        return "ok"

    assert run(scenario) == "ok"


def test_the_read_deadline_ends_a_wait_after_the_timer_was_armed_for_writes() -> None:
    """read_by, kept current by the relay, is a deadline the timer honours like a wait's own."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=60)
        dog.read_by = loop.time() + 0.05
        await dog.wait(asyncio.sleep(0), loop.time() + 60)  # a write: the timer armed at 60 s
        with pytest.raises(TimeoutError):
            await dog.wait(asyncio.Event().wait(), dog.read_by)

    run(scenario)


def test_the_drain_ends_the_wait_in_progress_and_bounds_every_later_one() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=60)
        waiting = asyncio.create_task(dog.wait(asyncio.Event().wait(), loop.time() + 60))
        await asyncio.sleep(0)  # the wait has begun
        dog.drain(loop.time() + 0.02)
        with pytest.raises(TimeoutError):
            await waiting
        with pytest.raises(TimeoutError):  # the drain deadline has passed: a new wait ends at once
            await dog.wait(asyncio.Event().wait(), loop.time() + 60)

    run(scenario)


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=60)
        waiting = asyncio.create_task(dog.wait(asyncio.Event().wait(), loop.time() + 60))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run(scenario)


def test_a_closed_watchdog_has_no_timer_left() -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        dog = Watchdog(write_timeout_s=0.01)
        fired: list[bool] = []
        real = dog._fire

        def fire() -> None:
            fired.append(True)
            real()

        dog._fire = fire  # type: ignore[method-assign]
        await dog.wait(asyncio.sleep(0), loop.time() + 0.01)  # the timer armed at 0.01 s
        dog.close()
        await asyncio.sleep(0.05)
        return fired

    assert run(scenario) == []
