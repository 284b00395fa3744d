"""Where sinks read committed events from: the store's audit log, or the agent's spool.

Each keeps every sink's delivered position durably beside the events, so a process that dies
between a commit and its delivery delivers on the next start (at least once).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson

from .._clock import now_us
from .._remote._spool import FORGET, SHIPPER, Spool
from .._store._db import Database, on_commit
from ._record import Record

_READ = "SELECT seq, id, kind, at_us, body, prev_hash, hash FROM events WHERE seq > :after ORDER BY seq LIMIT :n"

# PostgreSQL: one delivering process per sink name and schema, by a session advisory lock on
# (_LOCKS, hash of schema and name). 1: this connection holds it; 2: it just took it; 0: another does.
_LOCKS = 7226063
_KEY = f"{_LOCKS}, hashtext(current_schema() || '/' || :s)"
_CLAIM = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    f" AND classid = {_LOCKS} AND objid = hashtext(current_schema() || '/' || :s)::oid AND objsubid = 2) THEN 1"
    f" WHEN pg_try_advisory_lock({_KEY}) THEN 2 ELSE 0 END"
)


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

    Args:
        url: The store's URL or SQLite path.
        busy_timeout: Seconds to wait for another writer's lock.

    Raises:
        StoreError: The store cannot be opened.
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.db = Database(url, busy_timeout=busy_timeout)
        self.key = self.db.url  # which store: one pass at a time per sink name over it

    def start(self, names: Sequence[str]) -> dict[str, int]:  # noqa: D102
        db = self.db
        with db.write() as cur:
            cur.execute("SELECT sink, position FROM sink_positions")
            known = {str(s): int(p) for s, p in cur.fetchall()}
            new = [n for n in names if n not in known]
            if new:
                cur.execute("SELECT MAX(seq) FROM events")
                head = int(cur.fetchone()[0] or 0)
                cur.executemany(
                    db.sql("INSERT INTO sink_positions (sink, position, updated_at_us) VALUES (:s, :p, :t)"),
                    [{"s": n, "p": head, "t": now_us()} for n in new],
                )
                known.update(dict.fromkeys(new, head))
        return {n: known[n] for n in names}

    def read(self, after: int, n: int) -> list[Record]:  # noqa: D102
        with self.db.read() as cur:
            cur.execute(self.db.sql(_READ), {"after": after, "n": n})
            rows = cur.fetchall()
        return list(map(Record._make, rows))  # the columns in Record's order

    def save(self, name: str, position: int) -> None:  # noqa: D102
        with self.db.write() as cur:
            cur.execute(
                self.db.sql(
                    "UPDATE sink_positions SET position = :p, updated_at_us = :t WHERE sink = :s AND position < :p"
                ),
                {"s": name, "p": position, "t": now_us()},
            )

    def claim(self, name: str, position: int) -> int | None:  # noqa: D102
        db = self.db
        if db.dialect == "sqlite":
            return position
        # A session lock, so it lasts while this connection does: a process that stops or dies
        # (or loses its connection) lets the next one take the sink over.
        with db.read() as cur:
            cur.execute(db.sql(_CLAIM), {"s": name})
            state = int(cur.fetchone()[0])
            if state == 0:
                return None
            if state == 2:
                cur.execute(db.sql("SELECT position FROM sink_positions WHERE sink = :s"), {"s": name})
                row = cur.fetchone()
                return int(row[0]) if row else position
        return position

    def backlog(self, after: int) -> int:  # noqa: D102
        with self.db.read() as cur:
            cur.execute(self.db.sql("SELECT COUNT(*) FROM events WHERE seq > :after"), {"after": after})
            return int(cur.fetchone()[0])

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        return on_commit(self.db.url, wake)

    def close(self) -> None:  # noqa: D102
        self.db.close()


class SpoolSource:
    """Remote mode's spool: what the agent committed, shipped or not, on a connection of its own.

    The spool keeps a row until it is shipped and every sink has passed it. A sink that is no
    longer configured stops holding rows back when the sinks start.

    Args:
        spool: The agent's spool.
        busy_timeout: Seconds to wait for the spool's write lock.
    """

    def __init__(self, spool: Spool, *, busy_timeout: float = 30.0) -> None:
        self.spool = spool
        self.key = str(spool.path)
        self._conn = sqlite3.connect(spool.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)

    def start(self, names: Sequence[str]) -> dict[str, int]:  # noqa: D102
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            marks = ", ".join("?" for _ in names)
            conn.execute(f"DELETE FROM positions WHERE name <> ? AND name NOT IN ({marks})", (SHIPPER, *names))
            head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'spool'").fetchone()[0]
            conn.executemany(
                "INSERT OR IGNORE INTO positions (name, position) VALUES (?, ?)", [(n, head) for n in names]
            )
            conn.execute(FORGET)
            found = dict(
                conn.execute(f"SELECT name, position FROM positions WHERE name IN ({marks})", names).fetchall()
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return {n: int(found[n]) for n in names}

    def read(self, after: int, n: int) -> list[Record]:  # noqa: D102
        rows = self._conn.execute(
            "SELECT seq, body FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (after, n)
        ).fetchall()
        return [_spooled(int(seq), body) for seq, body in rows]

    def save(self, name: str, position: int) -> None:  # noqa: D102
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE positions SET position = MAX(position, ?) WHERE name = ?", (position, name))
            conn.execute(FORGET)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def claim(self, name: str, position: int) -> int | None:  # noqa: D102
        return position  # one agent process per spool

    def backlog(self, after: int) -> int:  # noqa: D102
        return int(self._conn.execute("SELECT COUNT(*) FROM spool WHERE seq > ?", (after,)).fetchone()[0])

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:  # noqa: D102
        self.spool.listeners.append(wake)
        return lambda: self.spool.listeners.remove(wake)

    def close(self) -> None:  # noqa: D102
        self._conn.close()


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
