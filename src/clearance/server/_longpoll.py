"""What long polls share: a wake-up per topic, and the server's own shutdown.

A long poll waits on its topic's event (set when something changes in this process) with a
re-check every second (changes made by other processes), and answers at once when its client
leaves or the server is stopping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request

RECHECK_SECONDS = 1.0
T = TypeVar("T")


def _event(request: Request, topic: str) -> asyncio.Event:
    events: dict[str, asyncio.Event] = request.app.state.__dict__.setdefault("topics", {})
    return events.setdefault(topic, asyncio.Event())


def announce(request: Request, topic: str) -> None:
    """Wake every long poll waiting on `topic` in this process."""
    events: dict[str, asyncio.Event] = request.app.state.__dict__.setdefault("topics", {})
    old = events.get(topic)
    events[topic] = asyncio.Event()  # the next waiters wait for the next change
    if old is not None:
        old.set()


async def hold(
    request: Request, topic: str, wait: float, read: Callable[[], Awaitable[T]], done: Callable[[T], bool]
) -> T:
    """Read until `done(value)`, `wait` seconds pass, the client leaves or the server stops."""
    deadline = time.monotonic() + wait
    while True:
        changed = _event(request, topic)
        value = await read()
        left = deadline - time.monotonic()
        stopping = bool(getattr(request.app.state, "stopping", False))
        if done(value) or left <= 0 or stopping or await request.is_disconnected():
            return value
        try:
            await asyncio.wait_for(changed.wait(), min(left, RECHECK_SECONDS))
        except TimeoutError:
            pass
