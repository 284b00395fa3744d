"""Event sinks over the audit log: each sink's delivered position, and the events after one.

One process per sink name (and store) delivers; the others stand by. On PostgreSQL by a session
advisory lock: whoever holds it delivers until its connection ends (a process that dies hands
over at once). On SQLite, which has no such lock, by a lease in the sink's row (`holder`,
`lease_until_us`): taken with a compare-and-set in a short write transaction, renewed as the
holder's passes go, released when its source closes; a killed holder's lease runs out after
`LEASE_US`. PostgreSQL leaves those columns empty: its lock needs no clock and frees itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._db import Database

LEASE_US = 30_000_000  # a SQLite holder that stops renewing (killed, or stuck in one call) loses the sink after this
RENEW_US = 10_000_000  # the holder renews once this much of its lease has passed: one write per 10 s, not per pass
_LEASE = "SELECT holder, lease_until_us, position FROM sink_positions WHERE sink = :s"
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


def claim(db: Database, name: str, position: int, *, holder: str, now_us: int) -> int | None:
    """Whether this process delivers sink `name` now, and from where.

    None while another process holds the sink (its lock, or its lease not run out); from the
    saved position when this one has just taken it over (the last holder may have moved on);
    from `position` while it holds it. `holder` names the caller on SQLite (unique per source).
    """
    if db.dialect == "sqlite":
        return _lease(db, name, position, holder, now_us)
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


def _lease(db: Database, name: str, position: int, holder: str, now_us: int) -> int | None:
    """SQLite: take, renew or respect the sink's lease; a read decides when no write is needed."""
    with db.read() as cur:
        row = cur.execute(_LEASE, {"s": name}).fetchone()
    if row is None:  # no row to hold (start() makes one): nothing to share
        return position
    if row[0] == holder and row[1] - now_us > LEASE_US - RENEW_US:
        return position  # renewed recently: nobody can take it before it runs out
    if row[0] not in (None, holder) and row[1] > now_us:
        return None
    # Free, ours, or run out: compare and set under the write lock (a few statements, microseconds).
    with db.write() as cur:
        held, until, saved = cur.execute(_LEASE, {"s": name}).fetchone()
        if held not in (None, holder) and until > now_us:
            return None  # another process took it since the read
        cur.execute(
            "UPDATE sink_positions SET holder = :h, lease_until_us = :u WHERE sink = :s",
            {"s": name, "h": holder, "u": now_us + LEASE_US},
        )
    return position if held == holder else int(saved)


def release(db: Database, holder: str) -> None:
    """SQLite: give up the leases `holder` holds, so another process takes those sinks over at once."""
    if db.dialect == "sqlite":
        with db.write() as cur:
            cur.execute(
                "UPDATE sink_positions SET holder = NULL, lease_until_us = NULL WHERE holder = :h", {"h": holder}
            )


def backlog(db: Database, position: int) -> int:
    """How many committed events come after `position`."""
    with db.read() as cur:
        cur.execute(db.sql("SELECT COUNT(*) FROM events WHERE seq > :after"), {"after": position})
        return int(cur.fetchone()[0])
