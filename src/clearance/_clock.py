"""The one clock: `now_us()` everywhere, and a manual clock tests move instead of sleeping.

Every module reads the time through `now_us()`. Production runs on the system clock; a test
installs a `ManualClock` (`using(clock)`, or the `clock` fixture of the test suite) and moves it
with `advance` / `set`. Code that waits for time to pass waits through the current clock
(`wait_async`, or a `Waiter`, which listens with `on_advance`), so moving a manual clock wakes it:
a test moves the clock past an approval's expiry and then waits on the outcome, never sleeps.

    with using(ManualClock()) as clock:
        ...                                  # start something that waits on the clock
        clock.wait_parked("approval sweep")  # it is asleep (no race with the move below)
        clock.advance(60)                    # and now it wakes, 60 s later by every clock reading
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar


class Clock(Protocol):
    """What waiting code needs from a clock."""

    manual: bool  # True: stands still until moved, so real timeouts mean nothing to it

    def now_ns(self) -> int:
        """Nanoseconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back (for intervals, not dates)."""
        ...

    def on_advance(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` (from the mover's thread) whenever the clock moves; returns the undo."""
        ...

    def parked(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Mark a waiter named `what` as asleep for the duration (seen by `wait_parked`)."""
        ...

    async def wait_async(self, event: asyncio.Event, until_us: int, what: str) -> bool:
        """Wait for `event` (True) or until the clock reads `until_us` (False)."""
        ...


def _ignore() -> None:
    """Undo nothing: the system clock never moves by itself in steps."""


class SystemClock:
    """The wall clock; waits are real timeouts."""

    manual = False

    now_ns = staticmethod(time.time_ns)
    monotonic = staticmethod(time.monotonic)

    def on_advance(self, listener: Callable[[], None]) -> Callable[[], None]:
        """The system clock flows instead of jumping: nobody is ever called."""
        return _ignore

    def parked(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Nothing observes the system clock's sleepers."""
        return contextlib.nullcontext()

    async def wait_async(self, event: asyncio.Event, until_us: int, what: str) -> bool:
        """Wait for `event` (True) or until the clock reads `until_us` (False)."""
        left = (until_us - now_us()) / 1e6
        if left <= 0 or event.is_set():
            return event.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), left)
        return event.is_set()


class ManualClock:
    """A clock that stands still until a test moves it (thread-safe).

    Args:
        start: Seconds since the epoch to start at (default: now, so stored times look real).
    """

    manual = True

    def __init__(self, start: float | None = None) -> None:
        self._ns = time.time_ns() if start is None else round(start * 1e9)
        self._changed = threading.Condition()
        self._listeners: dict[int, Callable[[], None]] = {}
        self._asleep: dict[int, str] = {}
        self._ids = itertools.count()

    def now_ns(self) -> int:
        """Nanoseconds since the epoch, as last set."""
        return self._ns

    def monotonic(self) -> float:
        """Seconds since the epoch, as last set (it only moves forward)."""
        return self._ns / 1e9

    def advance(self, seconds: float) -> None:
        """Move forward by `seconds` and wake every waiter to re-check its deadline."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        step = round(seconds * 1e9)  # whole nanoseconds: a float of the epoch would lose microseconds
        self._move(lambda ns: ns + step)

    def set(self, when: float) -> None:
        """Move to `when` (seconds since the epoch) and wake every waiter to re-check its deadline."""
        self._move(lambda _: round(when * 1e9))

    def _move(self, to: Callable[[int], int]) -> None:
        """Set the time to `to(now)`, then wake every waiter.

        Every waiter counts as awake from this moment until it parks again, so a `wait_parked`
        after a move returns only once the woken code has done its work and gone back to sleep.
        """
        with self._changed:
            self._ns = to(self._ns)
            self._asleep.clear()
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` whenever the clock moves; returns the undo."""
        key = next(self._ids)
        with self._changed:
            self._listeners[key] = listener

        def undo() -> None:
            with self._changed:
                self._listeners.pop(key, None)

        return undo

    @contextlib.contextmanager
    def parked(self, what: str) -> Iterator[None]:
        """Mark a waiter named `what` as asleep for the duration, or until the clock moves."""
        key = next(self._ids)
        with self._changed:
            self._asleep[key] = what
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._asleep.pop(key, None)

    def wait_parked(self, what: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block (in real time) until `count` waiters named `what` are asleep on this clock.

        Raises:
            TimeoutError: They were not, within `timeout` real seconds.
        """

        def asleep() -> int:
            return sum(name == what for name in self._asleep.values())

        with self._changed:
            if not self._changed.wait_for(lambda: asleep() >= count, timeout):
                raise TimeoutError(f"{what!r}: {asleep()} of {count} asleep after {timeout}s")

    async def wait_async(self, event: asyncio.Event, until_us: int, what: str) -> bool:
        """Wait for `event` (True) or until a move of the clock reaches `until_us` (False)."""
        loop = asyncio.get_running_loop()
        while not event.is_set():
            moved = asyncio.Event()
            with contextlib.ExitStack() as asleep:
                with self._changed:  # the deadline check and the parking are one step: no move slips between
                    if self._ns // 1000 >= until_us:
                        return False
                    asleep.callback(self.on_advance(functools.partial(_set_soon, loop, moved)))
                    asleep.enter_context(self.parked(what))
                await _either(event, moved)
        return True


def _set_soon(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
        loop.call_soon_threadsafe(event.set)


async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


_current: Clock = SystemClock()
_now_ns: Callable[[], int] = time.time_ns
_monotonic: Callable[[], float] = time.monotonic


def now_us() -> int:
    """Time in microseconds since the epoch, on the current clock."""
    return _now_ns() // 1000


def monotonic() -> float:
    """Seconds on the current clock's monotonic scale: for intervals (timeouts, TTLs), not dates."""
    return _monotonic()


def current() -> Clock:
    """The clock in use."""
    return _current


async def wait_async(event: asyncio.Event, until_us: int, what: str) -> bool:
    """Wait for `event` (True) or until the current clock reads `until_us` (False).

    The deadline is absolute, so a clock moved while the caller computed it is not missed.
    `what` names the waiter for a test's `ManualClock.wait_parked`.
    """
    return await _current.wait_async(event, until_us, what)


C = TypeVar("C", bound=Clock)


@contextlib.contextmanager
def using(clock: C) -> Iterator[C]:
    """Make `clock` the current clock for the duration, then restore the one before."""
    global _current, _now_ns, _monotonic
    before = _current, _now_ns, _monotonic
    _current, _now_ns, _monotonic = clock, clock.now_ns, clock.monotonic
    try:
        yield clock
    finally:
        _current, _now_ns, _monotonic = before
