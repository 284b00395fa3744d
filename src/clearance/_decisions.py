"""Deciding approvals on a store: approve, deny, expire — once — and wake the waiter.

Needs only the store, not a policy, so the CLI in another terminal can decide.
"""

from __future__ import annotations

from ._clock import now_us
from ._notify import wake
from .store import Approval, Database
from .store import _approvals as approvals
from .store._events import Event, make_event


def _transition(
    db: Database, approval_id: str, *, to: str, by: str | None, note: str | None, kind: str, **extra: object
) -> Approval:
    """Move the approval to `to` once, record it as `kind` (with `extra` fields), wake its waiter."""
    at = now_us()

    def record(a: Approval) -> list[Event]:
        outcome = to
        if to == "expired" and a.on_timeout == "allow":
            outcome = "allowed_on_timeout"
        fields: dict[str, object] = {
            "agent": a.agent,
            "environment": a.environment,
            "session": a.session,
            "tool": a.tool,
            "call_id": a.call_id,
            "approval_id": a.id,
            "decision": outcome,
            "by": by or a.agent,
            "note": note,
            "waited_ms": round((at - a.created_at_us) / 1000, 3),
            **extra,
        }
        if to == "expired":
            fields["on_timeout"] = a.on_timeout
        return [make_event(kind, at, fields)]

    moved = approvals.transition(db, approval_id, to=to, by=by, note=note, now_us=at, events=record)
    wake(moved.waiter)
    return moved


def decide(db: Database, approval_id: str, *, approve: bool, by: str, note: str | None = None) -> Approval:
    """Approve or deny a pending approval, once, record who did, and wake its waiter.

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalAlreadyDecided: It was decided or expired already (says by whom).
    """
    status = "approved" if approve else "denied"
    return _transition(db, approval_id, to=status, by=by, note=note, kind="approval.decided")


def expire(db: Database, approval_id: str) -> Approval:
    """Expire a pending approval whose time is up (once, across processes) and wake its waiter.

    Raises:
        ApprovalAlreadyDecided: It was decided first.
    """
    return _transition(db, approval_id, to="expired", by="system", note=None, kind="approval.expired")


def cancel(db: Database, approval_id: str, *, why: str) -> Approval:
    """Cancel a pending approval whose caller stopped waiting (recorded as by its own agent).

    Raises:
        ApprovalAlreadyDecided: It was decided first.
    """
    return _transition(db, approval_id, to="cancelled", by=None, note=why, kind="approval.decided")


def sweep(db: Database) -> list[Approval]:
    """Expire every pending approval whose time is up; returns those this call expired."""
    from .errors import ApprovalAlreadyDecided

    done = []
    for approval_id in approvals.expired_ids(db, now_us()):
        try:
            done.append(expire(db, approval_id))
        except ApprovalAlreadyDecided:
            continue
    return done
