"""The clock: `now_us()` follows a manual clock while it is installed, and moving it wakes whoever waits on time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from clearance import _clock
from clearance._clock import ManualClock, now_us
from clearance._notify import Waiter, wake


def test_now_us_reads_the_installed_clock_and_the_system_clock_after() -> None:
    with _clock.using(ManualClock(start=1_000)) as clock:
        assert now_us() == 1_000_000_000
        clock.advance(1.5)
        assert now_us() == 1_001_500_000
        clock.set(2_000)
        assert now_us() == 2_000_000_000
        with pytest.raises(ValueError, match="only moves forward"):
            clock.advance(-1)
    assert abs(now_us() - time.time_ns() // 1000) < 5_000_000


def test_the_clock_fixture_starts_near_the_real_time(clock: ManualClock) -> None:
    assert _clock.current() is clock and abs(now_us() / 1e6 - time.time()) < 5


def test_a_timed_wait_ends_only_when_the_clock_passes_its_deadline(clock: ManualClock) -> None:
    async def main() -> bool:
        event = asyncio.Event()
        waiting = asyncio.create_task(_clock.wait_async(event, now_us() + 10_000_000, "test"))
        await asyncio.to_thread(clock.wait_parked, "test")
        await asyncio.to_thread(clock.advance, 9)  # not yet: it wakes, finds time left, sleeps again
        await asyncio.to_thread(clock.wait_parked, "test")
        assert not waiting.done()
        await asyncio.to_thread(clock.advance, 1)
        return await waiting

    assert asyncio.run(main()) is False


def test_a_timed_wait_ends_at_once_on_its_event(clock: ManualClock) -> None:
    async def main() -> bool:
        event = asyncio.Event()
        waiting = asyncio.create_task(_clock.wait_async(event, now_us() + 10_000_000, "test"))
        await asyncio.to_thread(clock.wait_parked, "test")
        event.set()
        return await waiting

    assert asyncio.run(main()) is True


def test_a_deadline_already_passed_does_not_wait(clock: ManualClock) -> None:
    assert asyncio.run(_clock.wait_async(asyncio.Event(), now_us(), "test")) is False


def test_wait_parked_fails_when_nobody_sleeps(clock: ManualClock) -> None:
    with pytest.raises(TimeoutError, match="'nobody': 0 of 1 asleep"):
        clock.wait_parked("nobody", timeout=0.01)


def test_a_waiter_wakes_when_the_clock_moves_but_counts_only_real_wake_ups(clock: ManualClock) -> None:
    with Waiter() as waiter:
        results: list[bool] = []
        thread = threading.Thread(target=lambda: results.append(waiter.wait(60)))
        thread.start()
        clock.wait_parked("approval")
        clock.advance(60)
        thread.join(10)
        assert results == [False] and waiter.wakeups == 0
        clock.advance(1)  # a move while nobody waits is kept for the next wait: no move is missed
        assert waiter.wait(60) is False
        wake(waiter.address)
        assert waiter.wait(60) is True and waiter.wakeups == 1


def test_an_async_waiter_wakes_when_the_clock_moves(clock: ManualClock) -> None:
    async def main() -> tuple[bool, bool]:
        with Waiter() as waiter:
            moved = asyncio.create_task(waiter.wait_async(60))
            await asyncio.to_thread(clock.wait_parked, "approval")
            clock.advance(60)
            first = await moved
            wake(waiter.address)
            return first, await waiter.wait_async(60)

    assert asyncio.run(main()) == (False, True)


def test_a_waiter_on_the_system_clock_times_out_in_real_time() -> None:
    with Waiter() as waiter:
        assert waiter.wait(0.01) is False and waiter.wakeups == 0
        wake(waiter.address)
        assert waiter.wait(5) is True


def test_moves_are_exact_to_the_nanosecond(clock: ManualClock) -> None:
    start = now_us()
    for _ in range(1000):
        clock.advance(0.001)
    assert now_us() - start == 1_000_000  # an expiry exactly 1 s later has come, not 1 µs short of it
