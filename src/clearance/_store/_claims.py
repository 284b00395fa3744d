"""A claimed approved call's lease: whether the process running it is still there, and what a person says if not.

A claim (see `_approvals.claim`) lets exactly one process run an approved call. The embedded
SDK's claimant writes `claim_seen_at_us` every `HEARTBEAT_SECONDS` while the tool runs (the
pattern of the waiters' heartbeat, `_approval_waiters`). A claim not seen for longer than
`GRACE_SECONDS`, its call not finished, is *dead*: the process was killed inside the tool, so
whether the tool ran — or how far — is unknown. At most once wins over "exactly once": nothing
runs it again by itself. A person says what happened (`resolve`): "did not run" releases the
claim, so `resume` or `clearance worker` can run it again; "ran" closes it as executed with an
unknown result. Each is an `approval.claim_resolved` record in the audit log.

A claim without a lease (`claim_seen_at_us` NULL: a remote agent's, through the server) is never
judged dead here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .._wire import ApprovalFields, ApprovalStatus, OnTimeout
from ..errors import ApprovalError, ApprovalForbidden, ApprovalNotFound
from . import _approvals as approvals
from ._db import Database
from ._events import append, make_event

HEARTBEAT_SECONDS = 5.0
GRACE_SECONDS = 30.0
_GRACE_US = int(GRACE_SECONDS * 1e6)
# Claimed to run, and not finished: approved, or expired with on_timeout allow.
_RUNNING = (
    "claimed_by = :by AND finished_at_us IS NULL"
    " AND (status = :approved OR (status = :expired AND on_timeout = :allow))"
)
_STATES = {"approved": ApprovalStatus.APPROVED, "expired": ApprovalStatus.EXPIRED, "allow": OnTimeout.ALLOW}


def running(a: ApprovalFields) -> bool:
    """Whether `a`'s call is claimed to run and has not finished."""
    runs = a.status is ApprovalStatus.APPROVED or (
        a.status is ApprovalStatus.EXPIRED and a.on_timeout is OnTimeout.ALLOW
    )
    return a.claimed_by is not None and a.finished_at_us is None and runs


def dead(a: ApprovalFields, now_us: int) -> bool:
    """Whether the process that claimed `a`'s call stopped while running it (its lease expired)."""
    seen = a.claim_seen_at_us
    return seen is not None and now_us - seen > _GRACE_US and running(a)


def why(a: ApprovalFields) -> str:
    """What people are told about a dead claim."""
    at = datetime.fromtimestamp((a.claim_seen_at_us or 0) / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"claimed by a dead process: {a.claimed_by} was last seen running the call at {at}; whether the tool "
        f"ran is unknown, so nothing runs it again until a person says (`clearance approvals resolve {a.id} "
        "--ran|--did-not-run`)"
    )


def beat(db: Database, approval_id: str, *, by: str, now_us: int) -> bool:
    """Renew the lease of `by`'s claim of a call still running; whether there was one to renew."""
    with db.write() as cur:
        cur.execute(
            db.sql(f"UPDATE approvals SET claim_seen_at_us = :now WHERE id = :id AND {_RUNNING}"),
            {"now": now_us, "id": approval_id, "by": by, **_STATES},
        )
        return bool(cur.rowcount == 1)


def resolve(
    db: Database,
    approval_id: str,
    *,
    ran: bool,
    by: str,
    note: str | None,
    now_us: int,
    refusal: Callable[[approvals.Approval], str | None] | None = None,
) -> approvals.Approval:
    """A person's word on a dead claim: the call ran (closed as executed, result unknown) or did not (runnable again).

    Recorded as `approval.claim_resolved`, with the dead claimant and when it was last seen.
    `refusal` says why this person may not (whoever may not decide the approval may not say
    its call did not run: that lets it run again), checked in the same transaction.

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalForbidden: `refusal` refused.
        ApprovalError: Its claim is not dead (nobody claimed it, it finished, or its claimant is
            still seen): nothing to resolve.
    """
    with db.write() as cur:
        current = approvals._get(db, cur, approval_id)
        if current is None:
            raise ApprovalNotFound(f"no approval has the id {approval_id!r}")
        why = refusal(current) if refusal is not None else None
        if why is not None:
            raise ApprovalForbidden(approval_id, current.tool, why)
        if not dead(current, now_us):
            raise ApprovalError(
                approval_id,
                current.tool,
                f"approval {approval_id} is not claimed by a dead process (status {current.status}"
                f"{', claimed by ' + current.claimed_by if current.claimed_by else ''}): there is nothing to resolve",
            )
        said = note or ("confirmed it ran" if ran else "confirmed it did not run")
        if ran:
            sql = (
                "UPDATE approvals SET status = :executed, finished_at_us = :now, error = :why"
                f" WHERE id = :id AND {_RUNNING}"
            )
            params = {"executed": ApprovalStatus.EXECUTED, "why": f"result unknown: {by} {said}"}
        else:
            sql = (
                "UPDATE approvals SET claimed_by = NULL, claimed_at_us = NULL, claim_seen_at_us = NULL"
                f" WHERE id = :id AND {_RUNNING}"
            )
            params = {}
        cur.execute(db.sql(sql), {"now": now_us, "id": approval_id, "by": current.claimed_by, **_STATES, **params})
        fields = {
            "agent": current.agent,
            "environment": current.environment,
            "session": current.session,
            "tool": current.tool,
            "call_id": current.call_id,
            "approval_id": current.id,
            "decision": "ran" if ran else "did_not_run",
            "by": by,
            "note": said,
            "claimed_by": current.claimed_by,
            "claim_seen_at_us": current.claim_seen_at_us,
        }
        append(db, cur, [make_event("approval.claim_resolved", now_us, fields)])
        approvals._redraw(db, cur, approval_id)
        db.notify(cur, "approvals")
        moved = approvals._get(db, cur, approval_id)
    assert moved is not None
    return moved


def dead_claims(db: Database, now_us: int, *, agent: str | None = None) -> list[approvals.Approval]:
    """Approvals whose claimant died running the call, oldest lease first (for `approvals list`)."""
    mine = " AND agent = :agent" if agent is not None else ""
    with db.read() as cur:
        cur.execute(
            db.sql(
                f"{approvals._SELECT} WHERE claim_seen_at_us IS NOT NULL AND claim_seen_at_us < :cutoff"
                " AND claimed_by IS NOT NULL AND finished_at_us IS NULL"
                f" AND (status = :approved OR (status = :expired AND on_timeout = :allow)){mine}"
                " ORDER BY claim_seen_at_us"
            ),
            {"cutoff": now_us - _GRACE_US, "agent": agent, **_STATES},
        )
        return [approvals._from_row(r) for r in cur.fetchall()]
