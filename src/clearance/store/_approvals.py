"""Approvals on the store: create, read, decide once, expire, finish.

The first decision wins atomically: the update only applies while the row is still pending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ApprovalAlreadyDecided, ApprovalNotFound
from ._db import Database
from ._events import Event, append

_FIELDS = (
    "id",
    "call_id",
    "status",
    "tool",
    "agent",
    "environment",
    "session",
    "args_json",
    "args_hash",
    "shown_args_json",
    "rule_ids",
    "reason",
    "policy_revision",
    "approvers",
    "on_timeout",
    "created_at_us",
    "expires_at_us",
    "decided_by",
    "decided_at_us",
    "note",
    "waiter",
)
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM approvals"


@dataclass(frozen=True)
class Approval:
    """An approval as stored.

    Attributes:
        id: Its id (`apr_…`).
        call_id: The call it holds.
        status: pending, approved, denied, expired, cancelled, executed or failed.
        tool: The tool.
        agent: The requesting agent.
        environment: The agent's environment.
        session: The session of the call.
        args: The exact arguments that will run.
        args_hash: SHA-256 of their canonical JSON.
        shown_args: The arguments as shown to people (redacted).
        rule_ids: The rules that required approval.
        reason: Why.
        policy_revision: The revision that decided.
        approvers: Who may approve (as the rule says).
        on_timeout: deny or allow.
        created_at_us: When it was requested.
        expires_at_us: When it expires.
        decided_by: Who decided.
        decided_at_us: When.
        note: The decider's note.
        waiter: Where the waiting process listens for a wake-up.
    """

    id: str
    call_id: str
    status: str
    tool: str
    agent: str
    environment: str
    session: str | None
    args: dict[str, Any]
    args_hash: str
    shown_args: dict[str, Any]
    rule_ids: tuple[str, ...]
    reason: str
    policy_revision: str
    approvers: tuple[str, ...]
    on_timeout: str
    created_at_us: int
    expires_at_us: int
    decided_by: str | None
    decided_at_us: int | None
    note: str | None
    waiter: str | None


def _from_row(row: Sequence[Any]) -> Approval:
    r = dict(zip(_FIELDS, row, strict=True))
    return Approval(
        id=r["id"],
        call_id=r["call_id"],
        status=r["status"],
        tool=r["tool"],
        agent=r["agent"],
        environment=r["environment"],
        session=r["session"],
        args=json.loads(r["args_json"]),
        args_hash=r["args_hash"],
        shown_args=json.loads(r["shown_args_json"]),
        rule_ids=tuple(json.loads(r["rule_ids"])),
        reason=r["reason"],
        policy_revision=r["policy_revision"],
        approvers=tuple(json.loads(r["approvers"])),
        on_timeout=r["on_timeout"],
        created_at_us=r["created_at_us"],
        expires_at_us=r["expires_at_us"],
        decided_by=r["decided_by"],
        decided_at_us=r["decided_at_us"],
        note=r["note"],
        waiter=r["waiter"],
    )


def insert(db: Database, cur: Any, values: dict[str, Any]) -> None:
    """Insert a pending approval inside a write transaction."""
    cols = [f for f in _FIELDS if f in values]
    sql = f"INSERT INTO approvals ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
    cur.execute(db.sql(sql), {c: values[c] for c in cols})


def get(db: Database, approval_id: str) -> Approval:
    """The approval with this id.

    Raises:
        ApprovalNotFound: When there is none.
    """
    with db.read() as cur:
        found = _get(db, cur, approval_id)
    if found is None:
        raise ApprovalNotFound(f"no approval has the id {approval_id!r}")
    return found


def _get(db: Database, cur: Any, approval_id: str) -> Approval | None:
    cur.execute(db.sql(f"{_SELECT} WHERE id = :id"), {"id": approval_id})
    row = cur.fetchone()
    return _from_row(row) if row else None


def listing(db: Database, *, status: str | None = "pending", limit: int = 200) -> list[Approval]:
    """Approvals, pending by default, nearest expiry first (others newest first)."""
    params: dict[str, Any]
    if status == "pending":
        sql, params = (
            f"{_SELECT} WHERE status = 'pending' ORDER BY expires_at_us LIMIT :n",
            {"n": limit},
        )
    elif status:
        sql, params = (
            f"{_SELECT} WHERE status = :s ORDER BY created_at_us DESC LIMIT :n",
            {"s": status, "n": limit},
        )
    else:
        sql, params = f"{_SELECT} ORDER BY created_at_us DESC LIMIT :n", {"n": limit}
    with db.read() as cur:
        cur.execute(db.sql(sql), params)
        return [_from_row(r) for r in cur.fetchall()]


def transition(
    db: Database,
    approval_id: str,
    *,
    to: str,
    by: str | None,
    note: str | None,
    now_us: int,
    events: Callable[[Approval], Sequence[Event]],
) -> Approval:
    """Move a pending approval to `to` (approved, denied, expired, cancelled), once.

    A pending approval past its expiry can only be expired. `by` None means the requesting
    agent itself (a cancellation). `events` builds the audit records
    from the approval as it was, appended in the same transaction.

    Raises:
        ApprovalNotFound: When there is no such approval.
        ApprovalAlreadyDecided: When it is no longer pending, naming who decided.
    """
    with db.write() as cur:
        current = _get(db, cur, approval_id)
        if current is None:
            raise ApprovalNotFound(f"no approval has the id {approval_id!r}")
        if current.status == "pending" and to != "expired" and current.expires_at_us <= now_us:
            raise ApprovalAlreadyDecided(approval_id, current.tool, "expired", None)
        cur.execute(
            db.sql(
                "UPDATE approvals SET status = :to, decided_by = :by, decided_at_us = :now, note = :note"
                " WHERE id = :id AND status = 'pending'"
            ),
            {"to": to, "by": by or current.agent, "now": now_us, "note": note, "id": approval_id},
        )
        if cur.rowcount != 1:
            raise ApprovalAlreadyDecided(approval_id, current.tool, current.status, current.decided_by)
        append(db, cur, events(current))
        db.notify(cur, "approvals")
    return get(db, approval_id)


def expired_ids(db: Database, now_us: int) -> list[str]:
    """Pending approvals whose expiry has passed."""
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT id FROM approvals WHERE status = 'pending' AND expires_at_us <= :now"),
            {"now": now_us},
        )
        return [r[0] for r in cur.fetchall()]


def finish(db: Database, cur: Any, approval_id: str, status: str) -> None:
    """Mark an approved call executed or failed, inside a write transaction."""
    cur.execute(
        db.sql("UPDATE approvals SET status = :s WHERE id = :id AND status = 'approved'"),
        {"s": status, "id": approval_id},
    )
