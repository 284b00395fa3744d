"""What long polls share: a wake-up per topic, and the server's own shutdown.

A long poll waits on its topic's event (set when something changes in this process; for a
derived topic, when any of its parts does) with a re-check every second (changes made by other
processes), and answers at once when its client leaves or the server is stopping. Its waits are
on the current clock, so a test's manual clock drives them. The process counts the long polls
it holds (`held`; `/readyz` reports them).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from starlette.datastructures import State

from .._clock import now_us, wait_async
from .._retry import aretrying

if TYPE_CHECKING:
    import psycopg

RECHECK_SECONDS = 1.0  # without a change feed: changes by other processes arrive this fast
RECHECK_WITH_FEED_SECONDS = 5.0  # with PostgreSQL LISTEN/NOTIFY the re-check is only a safety net
# A topic of topics: its long polls wake when any of them changes (an agent's snapshot v2).
DERIVED = {"snapshot": ("policy", "grants")}
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
    for name in (topic, *(d for d, parts in DERIVED.items() if topic in parts)):
        old = events.get(name)
        events[name] = asyncio.Event()  # the next waiters wait for the next change
        if old is not None:
            old.set()


def stop(state: State) -> None:
    """The server is stopping: every long poll and event stream of this process answers now."""
    state.stopping = True
    events: dict[str, asyncio.Event] = state.__dict__.setdefault("topics", {})
    for event in events.values():  # left set: a wait begun from now on ends at once too
        event.set()


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
    # Each loss starts the backoff afresh; meanwhile long polls fall back to re-checking.
    connecting = aretrying(Exception, most=30, log=log, what="connecting the change feed")
    while True:
        conn: psycopg.AsyncConnection[Any] = await connecting(_subscribe, conninfo)
        try:
            async with conn:
                state.feed = True
                async for note in conn.notifies():
                    announce_to(state, note.payload)
        except Exception as exc:  # the database went away
            log.warning("change feed lost (%s); reconnecting", exc)
        finally:
            state.feed = False


async def _subscribe(conninfo: str) -> psycopg.AsyncConnection[Any]:
    """A connection listening on the `clearance` channel."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        await conn.execute("LISTEN clearance")
    except BaseException:
        await conn.close()
        raise
    return conn


def held(state: State) -> int:
    """How many long polls this process holds now (waiting for a change)."""
    waiting: Counter[str] = state.__dict__.get("held", Counter())
    return sum(waiting.values())


def recheck_seconds(state: State, every: float = RECHECK_SECONDS) -> float:
    """How often a waiter re-reads the store for changes no notification tells it of.

    `every` without a change feed (a long poll whose changes must arrive faster asks for less).
    """
    return RECHECK_WITH_FEED_SECONDS if getattr(state, "feed", False) else every


async def hold(
    request: Request,
    topic: str,
    wait: float,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    every: float = RECHECK_SECONDS,
) -> T:
    """Read until `done(value)`, `wait` seconds pass, the client leaves or the server stops.

    Without a change feed the store is re-read `every` seconds meanwhile.
    """
    deadline = now_us() + int(wait * 1e6)
    recheck = int(recheck_seconds(request.app.state, every) * 1e6)
    while True:
        changed = topic_event(request.app.state, topic)
        value = await read()
        now = now_us()
        stopping = bool(getattr(request.app.state, "stopping", False))
        if done(value) or now >= deadline or stopping or await request.is_disconnected():
            return value
        waiting: Counter[str] = request.app.state.__dict__.setdefault("held", Counter())
        waiting[topic] += 1
        try:
            await wait_async(changed, min(deadline, now + recheck), f"long poll {topic}")
        finally:
            waiting[topic] -= 1
