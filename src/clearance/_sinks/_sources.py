"""Where sinks read committed events from: the store's audit log, or the agent's spool.

Each keeps every sink's delivered position durably beside the events, so a process that dies
between a commit and its delivery delivers on the next start (at least once).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson

from .._clock import now_us
from .._remote._spool import SinkCursor, Spool
from .._store import _sink_positions as positions
from .._store._db import Database, on_commit
from ..errors import StoreError
from ._record import Record


class Source(Protocol):
    """Committed events in commit order, and the sinks' positions over them."""

    def start(self, names: Sequence[str]) -> dict[str, int]:
        """The position of each sink; a sink seen for the first time starts at the newest event."""
        ...  # pragma: no cover

    def read(self, after: int, n: int) -> list[Record]:
        """Up to `n` events after position `after`, oldest first."""
        ...  # pragma: no cover

    def save(self, name: str, position: int) -> None:
        """Remember that sink `name` has delivered everything up to `position` (never moving it back)."""
        ...  # pragma: no cover

    def claim(self, name: str, position: int) -> int | None:
        """Before a pass: the position to deliver sink `name` from, or None while another process delivers it.

        `position` is where this process got to; a sink taken over from another process
        continues from the position that one saved.
        """
        ...  # pragma: no cover

    def backlog(self, after: int) -> int:
        """How many committed events come after `after`."""
        ...  # pragma: no cover

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` after each commit in this process; returns what unsubscribes it."""
        ...  # pragma: no cover

    def close(self) -> None:
        """Release the connection."""
        ...  # pragma: no cover


class StoreSource:
    """The audit log of a store (embedded SDK and server), on a connection of its own.

    One process at a time delivers each sink name over a store (`claim`); closing the source
    lets the others take its sinks over at once.

    Args:
        url: The store's URL or SQLite path.
        busy_timeout: Seconds to wait for another writer's lock.

    Raises:
        StoreError: The store cannot be opened.
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.db = Database(url, busy_timeout=busy_timeout)
        self.key = self.db.url  # which store: one pass at a time per sink name over it
        self.holder = f"{os.getpid()}-{secrets.token_hex(6)}"  # this source's name on the leases it holds (SQLite)

    def start(self, names: Sequence[str]) -> dict[str, int]:  # noqa: D102
        return positions.start(self.db, names, now_us=now_us())

    def read(self, after: int, n: int) -> list[Record]:  # noqa: D102
        return list(map(Record._make, positions.after(self.db, after, n)))  # the columns in Record's order

    def save(self, name: str, position: int) -> None:  # noqa: D102
        positions.save(self.db, name, position, now_us=now_us())

    def claim(self, name: str, position: int) -> int | None:  # noqa: D102
        return positions.claim(self.db, name, position, holder=self.holder, now_us=now_us())

    def backlog(self, after: int) -> int:  # noqa: D102
        return positions.backlog(self.db, after)

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        return on_commit(self.db.url, wake)

    def close(self) -> None:
        """Release the sinks this source delivers, then the connection."""
        try:
            with contextlib.suppress(StoreError):  # left held, the leases run out by themselves
                positions.release(self.db, self.holder)
        finally:
            self.db.close()


class SpoolSource:
    """Remote mode's spool: what the agent committed, shipped or not, on a connection of its own.

    The spool keeps a row until it is shipped and every sink has passed it. A sink that is no
    longer configured stops holding rows back once it has closed (`forget()`).

    Args:
        spool: The agent's spool.
        busy_timeout: Seconds to wait for the spool's write lock.
    """

    def __init__(self, spool: Spool, *, busy_timeout: float = 30.0) -> None:
        self.spool = spool
        self.key = str(spool.path)
        self._cursor = SinkCursor(spool.path, busy_timeout=busy_timeout)

    def start(self, names: Sequence[str]) -> dict[str, int]:  # noqa: D102
        return self._cursor.start(names)

    def forget(self, keep: Sequence[str]) -> None:
        """Sinks not in `keep` stop holding rows: call once the sinks that used them have closed."""
        self._cursor.forget(keep)

    def read(self, after: int, n: int) -> list[Record]:  # noqa: D102
        return [_spooled(seq, body) for seq, body in self._cursor.after(after, n)]

    def save(self, name: str, position: int) -> None:  # noqa: D102
        self._cursor.save(name, position)

    def claim(self, name: str, position: int) -> int | None:  # noqa: D102
        return position  # one agent process per spool

    def backlog(self, after: int) -> int:  # noqa: D102
        return self._cursor.backlog(after)

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        self.spool.listeners.append(wake)
        return lambda: self.spool.listeners.remove(wake)

    def close(self) -> None:  # noqa: D102
        self._cursor.close()


def _spooled(seq: int, body: str) -> Record:
    """A spool row as a record: its id, kind and time read from the body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # not strict JSON (an older agent's text): the standard library reads more
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = {}
    if not isinstance(data, dict):
        data = {}
    at_us = data.get("at_us")
    return Record(seq, str(data.get("id", "")), str(data.get("kind", "")), at_us if isinstance(at_us, int) else 0, body)
