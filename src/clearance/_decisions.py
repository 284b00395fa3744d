"""Deciding approvals on a store: approve, deny, expire — once — and wake the waiter.

Needs only the store, not a policy, so the CLI in another terminal can decide.
"""

from __future__ import annotations

from ._clock import now_us
from ._notify import wake
from .store import Approval, Database
from .store import _approvals as approvals
from .store._events import Event, make_event


def decide(db: Database, approval_id: str, *, approve: bool, by: str, note: str | None = None) -> Approval:
    """Approve or deny a pending approval, once, record who did, and wake its waiter.

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalAlreadyDecided: It was decided or expired already (says by whom).
    """
    status = "approved" if approve else "denied"
    at = now_us()

    def record(a: Approval) -> list[Event]:
        return [
            make_event(
                "approval.decided",
                at,
                {
                    "agent": a.agent,
                    "environment": a.environment,
                    "session": a.session,
                    "tool": a.tool,
                    "call_id": a.call_id,
                    "approval_id": a.id,
                    "decision": status,
                    "by": by,
                    "note": note,
                    "waited_ms": round((at - a.created_at_us) / 1000, 3),
                },
            )
        ]

    decided = approvals.transition(db, approval_id, to=status, by=by, note=note, now_us=at, events=record)
    wake(decided.waiter)
    return decided


def expire(db: Database, approval_id: str) -> Approval:
    """Expire a pending approval whose time is up (once, across processes) and wake its waiter.

    Raises:
        ApprovalAlreadyDecided: It was decided first.
    """
    at = now_us()

    def record(a: Approval) -> list[Event]:
        outcome = "expired" if a.on_timeout == "deny" else "allowed_on_timeout"
        return [
            make_event(
                "approval.expired",
                at,
                {
                    "agent": a.agent,
                    "environment": a.environment,
                    "session": a.session,
                    "tool": a.tool,
                    "call_id": a.call_id,
                    "approval_id": a.id,
                    "decision": outcome,
                    "by": "system",
                    "on_timeout": a.on_timeout,
                },
            )
        ]

    expired = approvals.transition(db, approval_id, to="expired", by="system", note=None, now_us=at, events=record)
    wake(expired.waiter)
    return expired


def cancel(db: Database, approval_id: str, *, why: str) -> Approval:
    """Cancel a pending approval whose caller stopped waiting.

    Raises:
        ApprovalAlreadyDecided: It was decided first.
    """
    at = now_us()

    def record(a: Approval) -> list[Event]:
        return [
            make_event(
                "approval.decided",
                at,
                {
                    "agent": a.agent,
                    "environment": a.environment,
                    "session": a.session,
                    "tool": a.tool,
                    "call_id": a.call_id,
                    "approval_id": a.id,
                    "decision": "cancelled",
                    "by": a.agent,
                    "note": why,
                },
            )
        ]

    return approvals.transition(db, approval_id, to="cancelled", by=None, note=why, now_us=at, events=record)


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
