"""Approvals on the store: create, read, decide once, expire, finish.

The first decision wins atomically: the update only applies while the row is still pending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._canonical import canonical_json
from .._wire import DECISIONS, ApprovalFields, ApprovalMode, ApprovalStatus, OnTimeout
from ..errors import ApprovalAlreadyDecided, ApprovalAlreadyExecuted, ApprovalError, ApprovalNotFound
from . import _outbox as outbox
from ._db import Database
from ._events import Event, append
from ._shown import shown

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
    "requested_by",
    "edited_args_json",
    "edited_args_hash",
    "edited_shown_json",
    "votes_json",
    "escalate_to",
    "escalation_timeout_s",
    "escalated_at_us",
    "webhook_url",
    "claimed_by",
    "claimed_at_us",
    "result_json",
    "error",
    "finished_at_us",
    "quorum",
    "mode",
    "call_key",
    "trace_context",
    "waiter_seen_at_us",
    "resumable",
    "claim_seen_at_us",
)
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM approvals"


@dataclass(frozen=True, kw_only=True)
class Approval(ApprovalFields):
    """An approval as stored: its `ApprovalFields`, and what only the store keeps.

    Attributes:
        args: The exact arguments that will run.
        shown_args: The arguments as shown to people (redacted).
        rule_ids: The rules that required approval.
        approvers: Who may approve (as the rule says).
        waiter: Where the waiting process listens for a wake-up.
        edited_args: The arguments an approver set instead (full), when edited.
        edited_shown: The edited arguments as shown to people (redacted).
        votes: Approvals so far, for a quorum: `{"by", "at_us", "note"}` each.
        escalate_to: Who decides after an escalation.
        escalation_timeout_s: How long they have.
        webhook_url: Where its events are POSTed (webhook mode).
        claimed_at_us: When it was claimed.
        result: The call's result (JSON), once it ran.
        call_key: The framework's id of the call (its tool-call id), unique per agent.
        degraded: How the arguments or result read differ from those stored (empty: they do not),
            for values no reader can return whole (see `_shown.shown`).
    """

    args: dict[str, Any]
    shown_args: dict[str, Any]
    rule_ids: tuple[str, ...]
    approvers: tuple[str, ...]
    waiter: str | None
    edited_args: dict[str, Any] | None = None
    edited_shown: dict[str, Any] | None = None
    votes: tuple[dict[str, Any], ...] = ()
    escalate_to: tuple[str, ...] = ()
    escalation_timeout_s: int | None = None
    webhook_url: str | None = None
    claimed_at_us: int | None = None
    result: Any = None
    call_key: str | None = None
    degraded: tuple[str, ...] = ()

    @property
    def executed_args(self) -> dict[str, Any]:
        """The arguments the call runs with: the approver's edit, else as proposed."""
        return self.edited_args if self.edited_args is not None else self.args

    @property
    def deciders(self) -> tuple[str, ...]:
        """Who may decide it now: the escalation's approvers once escalated."""
        return self.escalate_to if self.escalated_at_us is not None else self.approvers


def _json(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


INEXACT_ARGS = "the arguments to run cannot be decoded exactly (too deep, or not JSON); they are shown marked"


def _exact(text: str | None, notes: dict[str, None]) -> Any:
    """Arguments to run, decoded exactly; when no decoder can, as shown (and `notes` say so)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (RecursionError, ValueError):
        notes[INEXACT_ARGS] = None
        return _shown(text, notes)


def _shown(text: str | None, notes: dict[str, None], *, mapping: bool = True) -> Any:
    """A stored JSON value as readers show it (an object, when `mapping`), its differences in `notes`."""
    if text is None:
        return None
    found = shown(text)
    notes.update(dict.fromkeys(found.notes))
    if mapping and not isinstance(found.value, dict):
        note = "a stored value that must be a JSON object is not one"
        notes[note] = None
        return {"$unreadable": note, "$value": found.value}
    return found.value


def _from_row(row: Sequence[Any]) -> Approval:
    r = dict(zip(_FIELDS, row, strict=True))
    notes: dict[str, None] = {}
    return Approval(
        id=r["id"],
        call_id=r["call_id"],
        status=ApprovalStatus(r["status"]),
        tool=r["tool"],
        agent=r["agent"],
        environment=r["environment"],
        session=r["session"],
        args=_exact(r["args_json"], notes),
        args_hash=r["args_hash"],
        shown_args=_shown(r["shown_args_json"], notes),
        rule_ids=tuple(json.loads(r["rule_ids"])),
        reason=r["reason"],
        policy_revision=r["policy_revision"],
        approvers=tuple(json.loads(r["approvers"])),
        on_timeout=OnTimeout(r["on_timeout"]),
        created_at_us=r["created_at_us"],
        expires_at_us=r["expires_at_us"],
        decided_by=r["decided_by"],
        decided_at_us=r["decided_at_us"],
        note=r["note"],
        waiter=r["waiter"],
        requested_by=r["requested_by"],
        edited_args=_exact(r["edited_args_json"], notes),
        edited_args_hash=r["edited_args_hash"],
        edited_shown=_shown(r["edited_shown_json"], notes),
        votes=tuple(_json(r["votes_json"]) or ()),
        escalate_to=tuple(_json(r["escalate_to"]) or ()),
        escalation_timeout_s=r["escalation_timeout_s"],
        escalated_at_us=r["escalated_at_us"],
        webhook_url=r["webhook_url"],
        claimed_by=r["claimed_by"],
        claimed_at_us=r["claimed_at_us"],
        result=_shown(r["result_json"], notes, mapping=False),
        error=r["error"],
        finished_at_us=r["finished_at_us"],
        quorum=r["quorum"],
        mode=ApprovalMode(r["mode"]),
        call_key=r["call_key"],
        trace=r["trace_context"],
        waiter_seen_at_us=r["waiter_seen_at_us"],
        claim_seen_at_us=r["claim_seen_at_us"],
        resumable=bool(r["resumable"]),
        degraded=tuple(notes),
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


def by_key(db: Database, cur: Any, agent: str, call_key: str) -> Approval | None:
    """The approval of `agent`'s call with this framework id, if one was requested."""
    cur.execute(db.sql(f"{_SELECT} WHERE agent = :agent AND call_key = :key"), {"agent": agent, "key": call_key})
    row = cur.fetchone()
    return _from_row(row) if row else None


def _get(db: Database, cur: Any, approval_id: str) -> Approval | None:
    cur.execute(db.sql(f"{_SELECT} WHERE id = :id"), {"id": approval_id})
    row = cur.fetchone()
    return _from_row(row) if row else None


def listing(
    db: Database,
    *,
    status: str | None = ApprovalStatus.PENDING,
    limit: int = 200,
    agent: str | None = None,
    mode: str | None = None,
    unclaimed: bool = False,
    tool: str | None = None,
    environment: str | None = None,
    keep: Callable[[Approval], bool] | None = None,
) -> list[Approval]:
    """Approvals, pending by default, nearest expiry first (others newest first).

    `agent`, `mode`, `unclaimed`, `tool` and `environment` narrow them down in the query, and
    `keep` (a test no query can make, such as who may decide) after it: both before the limit
    applies, reading on in batches until `limit` are kept or none are left.
    """
    clauses: list[str] = []
    params: dict[str, Any] = {"n": limit}
    narrowed = {"status": status or None, "agent": agent, "mode": mode, "tool": tool, "environment": environment}
    for column, value in narrowed.items():
        if value is not None:  # column names from this list only; every value is bound
            clauses.append(f"{column} = :{column}")
            params[column] = value
    if unclaimed:
        clauses.append("claimed_by IS NULL")
    pending = status == ApprovalStatus.PENDING
    key, op, order = (
        ("expires_at_us", ">", "expires_at_us, id")
        if pending
        else ("created_at_us", "<", "created_at_us DESC, id DESC")
    )
    kept: list[Approval] = []
    after: tuple[int, str] | None = None
    while len(kept) < limit:
        where = list(clauses)
        if after is not None:  # the next batch: past the last row read, in the same order
            where.append(f"({key} {op} :after_at OR ({key} = :after_at AND id {op} :after_id))")
            params["after_at"], params["after_id"] = after
        sql = f"{_SELECT}{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order} LIMIT :n"
        with db.read() as cur:
            cur.execute(db.sql(sql), params)
            batch = [_from_row(r) for r in cur.fetchall()]
        kept.extend(a for a in batch if keep is None or keep(a))
        if len(batch) < limit or keep is None:
            break
        last = batch[-1]
        after = (last.expires_at_us if pending else last.created_at_us, last.id)
    return kept[:limit]


def transition(
    db: Database,
    approval_id: str,
    *,
    to: str,
    by: str | None,
    note: str | None,
    now_us: int,
    events: Callable[[Approval], Sequence[Event]],
    check: Callable[[Approval], None] | None = None,
    changes: Callable[[Approval], dict[str, Any]] | None = None,
    also: Callable[[Any, Approval], None] | None = None,
) -> Approval:
    """Move a pending approval to `to`, once.

    `to` is approved, denied, expired or cancelled, or `voted` / `escalated`, which keep it
    pending (a quorum vote that is not the last; an escalation to other approvers). A pending
    approval past its expiry can only be expired (or escalated). `by` None means the
    requesting agent itself (a cancellation). `check` may refuse the move after the current
    state is read inside the transaction; `changes` gives more columns to set (JSON columns
    as text); `events` builds the audit records from the approval as it was; `also` writes
    more in the same transaction after them (a grant given with the decision). All in one
    transaction, so concurrent deciders see exactly one win.

    Raises:
        ApprovalNotFound: When there is no such approval.
        ApprovalAlreadyDecided: When it is no longer pending, naming who decided.
    """
    with db.write() as cur:
        current = _get(db, cur, approval_id)
        if current is None:
            raise ApprovalNotFound(f"no approval has the id {approval_id!r}")
        if current.status is not ApprovalStatus.PENDING:
            raise ApprovalAlreadyDecided(approval_id, current.tool, current.status, current.decided_by)
        if to not in (ApprovalStatus.EXPIRED, "escalated") and current.expires_at_us <= now_us:
            raise ApprovalAlreadyDecided(approval_id, current.tool, ApprovalStatus.EXPIRED, None)
        if check is not None:
            check(current)
        extra = changes(current) if changes else {}
        assert set(extra) <= set(_FIELDS), f"not approval columns: {set(extra) - set(_FIELDS)}"
        status = ApprovalStatus.PENDING if to in ("voted", "escalated") else ApprovalStatus(to)
        decided = (
            {}
            if status is ApprovalStatus.PENDING
            else {"decided_by": by or current.agent, "decided_at_us": now_us, "note": note}
        )
        values = {"status": status, **decided, **extra}
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        cur.execute(
            db.sql(f"UPDATE approvals SET {assignments} WHERE id = :id AND status = :pending"),
            {**values, "id": approval_id, "pending": ApprovalStatus.PENDING},
        )
        if cur.rowcount != 1:
            raise ApprovalAlreadyDecided(approval_id, current.tool, current.status, current.decided_by)
        _redraw(db, cur, approval_id)
        append(db, cur, events(current))
        if also is not None:
            also(cur, current)
        after = _get(db, cur, approval_id)
        assert after is not None
        if after.mode is ApprovalMode.WEBHOOK and after.webhook_url and after.status in DECISIONS:
            message_id = outbox.new_id()
            outbox.enqueue(
                db,
                cur,
                message_id=message_id,
                approval_id=approval_id,
                event_type=f"approval.{after.status}",
                url=after.webhook_url,
                payload=webhook_payload(after, message_id, now_us),
                now_us=now_us,
            )
        db.notify(cur, "approvals")
    return after


def webhook_payload(a: Approval, message_id: str, now_us: int) -> str:
    """The body POSTed to a webhook-mode approval's URL: the event and the approval as people see it."""
    return canonical_json(
        {
            "id": message_id,
            "type": f"approval.{a.status}",
            "created_at_us": now_us,
            "approval": {
                "id": a.id,
                "call_id": a.call_id,
                "status": a.status,
                "tool": a.tool,
                "agent": a.agent,
                "environment": a.environment,
                "session": a.session,
                "args": a.shown_args,
                "edited_args": a.edited_shown,
                "reason": a.reason,
                "rule_ids": list(a.rule_ids),
                "decided_by": a.decided_by,
                "decided_at_us": a.decided_at_us,
                "note": a.note,
                "expires_at_us": a.expires_at_us,
            },
        }
    )


def expired_ids(db: Database, now_us: int) -> list[str]:
    """Pending approvals whose expiry has passed."""
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT id FROM approvals WHERE status = :pending AND expires_at_us <= :now"),
            {"now": now_us, "pending": ApprovalStatus.PENDING},
        )
        return [r[0] for r in cur.fetchall()]


def next_expiry(db: Database) -> int | None:
    """When the next pending approval expires (None: nothing pending)."""
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT MIN(expires_at_us) FROM approvals WHERE status = :pending"),
            {"pending": ApprovalStatus.PENDING},
        )
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


# The states named in the claims' SQL, bound as parameters.
_RUNS = {"approved": ApprovalStatus.APPROVED, "expired": ApprovalStatus.EXPIRED, "allow": OnTimeout.ALLOW}
_DENIES = {
    "denied": ApprovalStatus.DENIED,
    "cancelled": ApprovalStatus.CANCELLED,
    "expired": ApprovalStatus.EXPIRED,
    "allow": OnTimeout.ALLOW,
}
_DECIDED = {f"d_{s}": s for s in sorted(DECISIONS)}
_DECIDED_MARKS = ", ".join(f":{k}" for k in _DECIDED)


def claim(db: Database, approval_id: str, *, by: str, now_us: int, lease: bool = False) -> Approval:
    """Claim an approved call for execution: exactly one claimant ever wins.

    The approval id is the idempotency key. With `lease`, the claimant keeps the claim's lease
    while it runs the call (`_claims.beat`), so a claimant that dies is seen to (`_claims.dead`).

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalAlreadyExecuted: Someone claimed it first (it ran, or is running).
        ApprovalError: It is not approved (pending, denied, expired, cancelled).
    """
    with db.write() as cur:
        cur.execute(
            db.sql(
                "UPDATE approvals SET claimed_by = :by, claimed_at_us = :now, claim_seen_at_us = :seen"
                " WHERE id = :id AND claimed_by IS NULL"
                " AND (status = :approved OR (status = :expired AND on_timeout = :allow))"
            ),
            {"by": by, "now": now_us, "seen": now_us if lease else None, "id": approval_id, **_RUNS},
        )
        won = cur.rowcount == 1
        current = _get(db, cur, approval_id)
    if current is None:
        raise ApprovalNotFound(f"no approval has the id {approval_id!r}")
    if won:
        return current
    if current.claimed_by is not None or current.status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED):
        from ._claims import dead, why  # it reads approvals

        raise ApprovalAlreadyExecuted(
            approval_id,
            current.tool,
            current.status,
            current.claimed_by,
            result=current.result,
            error=current.error,
            dead=why(current) if dead(current, now_us) else None,
        )
    raise ApprovalError(approval_id, current.tool, f"approval {approval_id} is {current.status}, not approved")


def claim_denial(db: Database, approval_id: str, *, by: str, now_us: int) -> bool:
    """Claim the delivery of a denial (or a timeout that denies) to the agent's callback, once.

    Returns whether this claimant won.
    """
    with db.write() as cur:
        cur.execute(
            db.sql(
                "UPDATE approvals SET claimed_by = :by, claimed_at_us = :now WHERE id = :id AND claimed_by IS NULL"
                " AND (status IN (:denied, :cancelled) OR (status = :expired AND on_timeout != :allow))"
            ),
            {"by": by, "now": now_us, "id": approval_id, **_DENIES},
        )
        return bool(cur.rowcount == 1)


def due_for(db: Database, agent: str, tools: Sequence[str], *, limit: int = 100) -> list[Approval]:
    """An agent's async-mode approvals of these tools that are decided and not yet handled."""
    if not tools:
        return []
    marks = ", ".join(f":t{i}" for i in range(len(tools)))
    with db.read() as cur:
        cur.execute(
            db.sql(
                f"{_SELECT} WHERE agent = :agent AND mode = :async AND claimed_by IS NULL"
                f" AND status IN ({_DECIDED_MARKS}) AND tool IN ({marks})"
                " ORDER BY decided_at_us LIMIT :n"
            ),
            {
                "agent": agent,
                "n": limit,
                "async": ApprovalMode.ASYNC,
                **_DECIDED,
                **{f"t{i}": t for i, t in enumerate(tools)},
            },
        )
        return [_from_row(r) for r in cur.fetchall()]


def finish(
    db: Database,
    cur: Any,
    approval_id: str,
    status: ApprovalStatus,
    *,
    now_us: int,
    result_json: str | None = None,
    error: str | None = None,
    agent: str | None = None,
) -> bool:
    """Mark an approved call executed or failed, with its result or error.

    Inside a write transaction; with `agent`, only that agent's approval. Returns whether it
    changed (False: it was already finished, or is not this agent's).
    """
    mine = " AND agent = :agent" if agent is not None else ""
    cur.execute(
        db.sql(
            "UPDATE approvals SET status = :s, result_json = :r, error = :e, finished_at_us = :now"
            f" WHERE id = :id AND status = :approved{mine}"
        ),
        {
            "s": status,
            "r": result_json,
            "e": error,
            "now": now_us,
            "id": approval_id,
            "agent": agent,
            "approved": ApprovalStatus.APPROVED,
        },
    )
    changed = cur.rowcount == 1
    if changed:
        _redraw(db, cur, approval_id)
        db.notify(cur, "approvals")
    return bool(changed)


def _redraw(db: Database, cur: Any, approval_id: str) -> None:
    """Mark every channel's message of an approval out of date (see `_channels`), in its transaction.

    Each is due at once, whatever failed before: its failures in a row start again from none,
    so a message parked or waiting for its backoff still shows a decision soon.
    """
    cur.execute(
        db.sql("UPDATE channel_messages SET shown = NULL, failing = 0, retry_at_us = NULL WHERE approval_id = :id"),
        {"id": approval_id},
    )
