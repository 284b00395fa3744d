"""Whether a wait-mode approval's waiting process is still there: its heartbeat, and what a gone one leaves.

The process waiting for an approval (the embedded SDK, or the server for an agent's open long
poll) writes `waiter_seen_at_us` every `HEARTBEAT_SECONDS` while it waits. A waiter not seen for
longer than `GRACE_SECONDS` is gone — killed, most likely, since one that stops cleanly cancels
its approval — and an approved call it would have run is then run by `clearance worker` when
the tool is `resumable` (`runnable`), else cancelled once it expires (`abandoned`, and
`_decisions.abandon`). A waiter that comes back (a long poll reconnecting) writes again, and is
no longer gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .._wire import ApprovalFields, ApprovalMode, ApprovalStatus, OnTimeout
from ._db import Database

HEARTBEAT_SECONDS = 5.0
GRACE_SECONDS = 30.0
_GRACE_US = int(GRACE_SECONDS * 1e6)
_HEARTBEAT_US = int(HEARTBEAT_SECONDS * 1e6)
# Waiting, or may still run: pending, approved and unclaimed, or expired with on_timeout allow.
_OPEN = " AND claimed_by IS NULL AND (status IN (:pending, :approved) OR (status = :expired AND on_timeout = :allow))"
_STATES = {
    "pending": ApprovalStatus.PENDING,
    "approved": ApprovalStatus.APPROVED,
    "expired": ApprovalStatus.EXPIRED,
    "allow": OnTimeout.ALLOW,
    "wait": ApprovalMode.WAIT,
}
# An open approval whose waiter was last seen before the cutoff.
_GONE = f"mode = :wait AND waiter_seen_at_us IS NOT NULL AND waiter_seen_at_us < :cutoff{_OPEN}"


def still_open(a: ApprovalFields) -> bool:
    """Whether the call may still run (or be decided): pending, approved and unclaimed, or allowed on timeout."""
    if a.claimed_by is not None:
        return False
    allowed = a.status is ApprovalStatus.EXPIRED and a.on_timeout is OnTimeout.ALLOW
    return a.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) or allowed


def gone(a: ApprovalFields, now_us: int) -> bool:
    """Whether `a` waits on a process that has not been seen for longer than the grace."""
    seen = a.waiter_seen_at_us
    return a.mode is ApprovalMode.WAIT and seen is not None and now_us - seen > _GRACE_US and still_open(a)


def why(a: ApprovalFields) -> str:
    """What people are told about an approval whose waiter is gone."""
    seen = a.waiter_seen_at_us or 0
    at = datetime.fromtimestamp(seen / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    then = (
        "`clearance worker` importing its tool runs the call once approved"
        if a.resumable
        else "nothing can run the call"
    )
    return f"waiter gone: the process waiting for this approval stopped at {at}; {then}"


def touch(db: Database, approval_id: str, *, now_us: int, resumable: bool, agent: str | None = None) -> bool:
    """Record that the waiter of a wait-mode approval is still there (and whether a worker can run it).

    Only an approval that may still run is touched; with `agent`, only that agent's. Returns
    whether one was.
    """
    mine = " AND agent = :agent" if agent is not None else ""
    with db.write() as cur:
        cur.execute(
            db.sql(
                "UPDATE approvals SET waiter_seen_at_us = :now, resumable = :r"
                f" WHERE id = :id AND mode = :wait{mine}{_OPEN}"
            ),
            {"now": now_us, "r": int(resumable), "id": approval_id, "agent": agent, **_STATES},
        )
        return bool(cur.rowcount == 1)


def due(a: ApprovalFields, now_us: int) -> bool:
    """Whether a waiter that last wrote `a` should write again now (its heartbeat is older than the interval)."""
    seen = a.waiter_seen_at_us
    return seen is None or now_us - seen >= _HEARTBEAT_US


class Heartbeat:
    """A waiting process's heartbeat on one approval: `beat()` on every look writes at most once an interval."""

    def __init__(self, db: Database, approval_id: str, *, resumable: bool) -> None:
        self._db, self._id, self._resumable = db, approval_id, resumable
        self._last: int | None = None
        self._off = False

    def beat(self, now_us: int) -> None:
        """Write the heartbeat if the last one is older than `HEARTBEAT_SECONDS`.

        Stops writing once the approval takes none (not wait mode, or no longer open).
        """
        if self._off or (self._last is not None and now_us - self._last < _HEARTBEAT_US):
            return
        self._off = not touch(self._db, self._id, now_us=now_us, resumable=self._resumable)
        self._last = now_us


def runnable(db: Database, now_us: int, *, agent: str, tools: Sequence[str]) -> list[tuple[str, str]]:
    """An agent's approved calls of `tools` that a worker can run because their waiter is gone: (id, tool)."""
    if not tools:
        return []
    marks = ", ".join(f":t{i}" for i in range(len(tools)))
    with db.read() as cur:
        cur.execute(
            db.sql(
                f"SELECT id, tool FROM approvals WHERE {_GONE} AND status != :pending AND resumable = 1"
                f" AND agent = :agent AND tool IN ({marks}) ORDER BY decided_at_us"
            ),
            {"cutoff": now_us - _GRACE_US, "agent": agent, **_STATES, **{f"t{i}": t for i, t in enumerate(tools)}},
        )
        return [(r[0], r[1]) for r in cur.fetchall()]


def abandoned(db: Database, now_us: int) -> list[str]:
    """Open approvals nothing can run (the waiter gone, not resumable) whose expiry has passed."""
    with db.read() as cur:
        cur.execute(
            db.sql(f"SELECT id FROM approvals WHERE {_GONE} AND resumable = 0 AND expires_at_us <= :now"),
            {"cutoff": now_us - _GRACE_US, "now": now_us, **_STATES},
        )
        return [r[0] for r in cur.fetchall()]


def close(db: Database, cur: Any, approval_id: str, *, now_us: int, note: str) -> bool:
    """Cancel an open approval whose waiter is gone, inside a write transaction; whether it did.

    Who decided (if anyone) and their note are kept; the reason goes in `error` alone (a copy in
    `note` showed the history the reason twice, and made it read as the approver's words).
    """
    cur.execute(
        db.sql(
            "UPDATE approvals SET status = :cancelled, decided_by = COALESCE(decided_by, 'system'),"
            " decided_at_us = COALESCE(decided_at_us, :now), error = :why,"
            f" finished_at_us = :now WHERE id = :id AND {_GONE}"
        ),
        {
            "cancelled": ApprovalStatus.CANCELLED,
            "now": now_us,
            "why": note,
            "id": approval_id,
            "cutoff": now_us - _GRACE_US,
            **_STATES,
        },
    )
    return bool(cur.rowcount == 1)
