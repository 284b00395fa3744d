"""Event sinks over the audit log: each sink's delivered position, and the events after one.

On PostgreSQL one process per sink name (and schema) delivers, by a session advisory lock:
whoever holds it delivers, the others stand by until its connection ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._db import Database

_READ = "SELECT seq, id, kind, at_us, body, prev_hash, hash FROM events WHERE seq > :after ORDER BY seq LIMIT :n"

# (_LOCKS, hash of schema and name). 1: this connection holds it; 2: it just took it; 0: another does.
_LOCKS = 7226063
_KEY = f"{_LOCKS}, hashtext(current_schema() || '/' || :s)"
_CLAIM = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    f" AND classid = {_LOCKS} AND objid = hashtext(current_schema() || '/' || :s)::oid AND objsubid = 2) THEN 1"
    f" WHEN pg_try_advisory_lock({_KEY}) THEN 2 ELSE 0 END"
)


def start(db: Database, names: Sequence[str], *, now_us: int) -> dict[str, int]:
    """The position of each sink; a sink seen for the first time starts at the newest event."""
    with db.write() as cur:
        cur.execute("SELECT sink, position FROM sink_positions")
        known = {str(s): int(p) for s, p in cur.fetchall()}
        new = [n for n in names if n not in known]
        if new:
            cur.execute("SELECT MAX(seq) FROM events")
            head = int(cur.fetchone()[0] or 0)
            cur.executemany(
                db.sql("INSERT INTO sink_positions (sink, position, updated_at_us) VALUES (:s, :p, :t)"),
                [{"s": n, "p": head, "t": now_us} for n in new],
            )
            known.update(dict.fromkeys(new, head))
    return {n: known[n] for n in names}


def after(db: Database, position: int, n: int) -> list[tuple[Any, ...]]:
    """Up to `n` committed events after `position`: (seq, id, kind, at_us, body, prev_hash, hash)."""
    with db.read() as cur:
        cur.execute(db.sql(_READ), {"after": position, "n": n})
        return [tuple(row) for row in cur.fetchall()]


def save(db: Database, name: str, position: int, *, now_us: int) -> None:
    """Remember that sink `name` delivered everything up to `position` (a position only moves forward)."""
    with db.write() as cur:
        cur.execute(
            db.sql("UPDATE sink_positions SET position = :p, updated_at_us = :t WHERE sink = :s AND position < :p"),
            {"s": name, "p": position, "t": now_us},
        )


def claim(db: Database, name: str, position: int) -> int | None:
    """Whether this process delivers sink `name` now, and from where.

    SQLite: always, from `position`. PostgreSQL: None while another process holds the sink's
    lock; from the saved position when this one has just taken it over (the last holder may
    have moved on); from `position` while it holds it.
    """
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


def backlog(db: Database, position: int) -> int:
    """How many committed events come after `position`."""
    with db.read() as cur:
        cur.execute(db.sql("SELECT COUNT(*) FROM events WHERE seq > :after"), {"after": position})
        return int(cur.fetchone()[0])
