"""What long polls share: a wake-up per topic, and the server's own shutdown.

A long poll waits on its topic's event (set when something changes in this process) with a
re-check every second (changes made by other processes), and answers at once when its client
leaves or the server is stopping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from starlette.datastructures import State

RECHECK_SECONDS = 1.0  # without a change feed: changes by other processes arrive this fast
RECHECK_WITH_FEED_SECONDS = 5.0  # with PostgreSQL LISTEN/NOTIFY the re-check is only a safety net
T = TypeVar("T")
log = logging.getLogger("clearance.server")


def topic_event(state: State, topic: str) -> asyncio.Event:
    """The event the next change of `topic` sets (take it before reading, then wait on it)."""
    events: dict[str, asyncio.Event] = state.__dict__.setdefault("topics", {})
    return events.setdefault(topic, asyncio.Event())


def announce_to(state: State, topic: str) -> None:
    """Wake every long poll of this process waiting on `topic`."""
    if topic == "policy" and "policy_cache" in state.__dict__:
        state.policy_cache.clear()  # decisions follow an activation at once
    events: dict[str, asyncio.Event] = state.__dict__.setdefault("topics", {})
    old = events.get(topic)
    events[topic] = asyncio.Event()  # the next waiters wait for the next change
    if old is not None:
        old.set()


def announce_threadsafe(state: State, topic: str) -> None:
    """`announce_to` from a worker thread (a sync route): run on the server's event loop."""
    loop = getattr(state, "loop", None)
    if loop is not None:
        loop.call_soon_threadsafe(announce_to, state, topic)


def announce(request: Request, topic: str) -> None:
    """Wake every long poll of this process waiting on `topic`."""
    announce_to(request.app.state, topic)


async def listen(state: State, conninfo: str) -> None:
    """Relay PostgreSQL notifications to this replica's long polls, reconnecting as needed."""
    import psycopg

    backoff = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute("LISTEN clearance")
                state.feed = True
                backoff = 0.5
                async for note in conn.notifies():
                    announce_to(state, note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away: long polls fall back to re-checking
            state.feed = False
            log.warning("change feed lost (%s); reconnecting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30)


def recheck_seconds(state: State) -> float:
    """How often a waiter re-reads the store for changes no notification tells it of."""
    return RECHECK_WITH_FEED_SECONDS if getattr(state, "feed", False) else RECHECK_SECONDS


async def hold(
    request: Request, topic: str, wait: float, read: Callable[[], Awaitable[T]], done: Callable[[T], bool]
) -> T:
    """Read until `done(value)`, `wait` seconds pass, the client leaves or the server stops."""
    deadline = time.monotonic() + wait
    recheck = recheck_seconds(request.app.state)
    while True:
        changed = topic_event(request.app.state, topic)
        value = await read()
        left = deadline - time.monotonic()
        stopping = bool(getattr(request.app.state, "stopping", False))
        if done(value) or left <= 0 or stopping or await request.is_disconnected():
            return value
        try:
            await asyncio.wait_for(changed.wait(), min(left, recheck))
        except TimeoutError:
            pass
