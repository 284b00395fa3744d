"""Approvals over HTTP: list, read (or wait for a decision), approve and deny.

Only approver keys decide, and never for their own agent; an agent key reads only its own
agent's approvals.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ... import _decisions as decisions
from ..._clock import now_us
from ...errors import ApprovalAlreadyDecided, ApprovalNotFound
from ...store import Approval, Database
from ...store import _approvals as approvals
from ...store._keys import ApiKey
from .. import _longpoll as longpoll
from .._auth import actor, current_key, database, require
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["approvals"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]
Approver = Annotated[ApiKey, Depends(require("approver"))]
_RECHECK_SECONDS = 1.0


class ApprovalOut(BaseModel):
    """An approval as the API shows it (arguments redacted as recorded)."""

    id: str
    call_id: str
    status: str
    tool: str
    agent: str
    environment: str
    session: str | None
    args: dict[str, Any]
    args_hash: str
    rule_ids: list[str]
    reason: str
    policy_revision: str
    approvers: list[str]
    on_timeout: str
    created_at_us: int
    expires_at_us: int
    decided_by: str | None
    decided_at_us: int | None
    note: str | None

    @classmethod
    def of(cls, a: Approval) -> ApprovalOut:
        """The view of a stored approval."""
        return cls(
            id=a.id,
            call_id=a.call_id,
            status=a.status,
            tool=a.tool,
            agent=a.agent,
            environment=a.environment,
            session=a.session,
            args=a.shown_args,
            args_hash=a.args_hash,
            rule_ids=list(a.rule_ids),
            reason=a.reason,
            policy_revision=a.policy_revision,
            approvers=list(a.approvers),
            on_timeout=a.on_timeout,
            created_at_us=a.created_at_us,
            expires_at_us=a.expires_at_us,
            decided_by=a.decided_by,
            decided_at_us=a.decided_at_us,
            note=a.note,
        )


class DecisionIn(BaseModel):
    """An approver's decision."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


def _may_read(key: ApiKey, approval: Approval) -> bool:
    return bool({"approver", "admin"} & set(key.scopes)) or approval.agent == key.agent


def _current(db: Database, approval_id: str) -> Approval:
    """The approval, expired first if its time is up (whoever looks enforces expiry)."""
    approval = approvals.get(db, approval_id)
    if approval.status == "pending" and approval.expires_at_us <= now_us():
        try:
            approval = decisions.expire(db, approval_id)
        except ApprovalAlreadyDecided:
            approval = approvals.get(db, approval_id)
    return approval


@router.get("/approvals", summary="List approvals")
async def list_approvals(
    key: Caller, db: Db, status: Annotated[str | None, Query(pattern=r"^[a-z]+$")] = "pending"
) -> list[ApprovalOut]:
    """Approvals: pending by default (`status=` another status, or empty for all).

    Nearest expiry first. An agent key sees only its own agent's.
    """
    await run_in_threadpool(decisions.sweep, db)
    found = await run_in_threadpool(approvals.listing, db, status=status or None)
    return [ApprovalOut.of(a) for a in found if _may_read(key, a)]


@router.get("/approvals/{approval_id}", summary="One approval, or wait for its decision")
async def get_approval(
    approval_id: str,
    request: Request,
    key: Caller,
    db: Db,
    wait: Annotated[float, Query(ge=0, le=60, description="long poll: seconds to wait while it is pending")] = 0,
) -> ApprovalOut:
    """The approval, or with `wait` a long poll.

    Held while it is pending; answered the moment it is decided (or expires), or when `wait`
    seconds pass.
    """

    async def read() -> Approval:
        try:
            approval = await run_in_threadpool(_current, db, approval_id)
        except ApprovalNotFound:
            raise APIError(404, f"no approval has the id {approval_id!r}") from None
        if not _may_read(key, approval):
            raise APIError(404, f"no approval has the id {approval_id!r}")  # do not reveal others' ids
        return approval

    return ApprovalOut.of(await longpoll.hold(request, "approvals", wait, read, lambda a: a.status != "pending"))


async def _decide(
    request: Request, db: Database, approval_id: str, key: ApiKey, approve: bool, body: DecisionIn
) -> ApprovalOut:
    try:
        approval = await run_in_threadpool(approvals.get, db, approval_id)
    except ApprovalNotFound:
        raise APIError(404, f"no approval has the id {approval_id!r}") from None
    if key.agent is not None and key.agent == approval.agent:
        raise APIError(403, "a key bound to the requesting agent cannot decide that agent's approvals")
    try:
        decided = await run_in_threadpool(
            lambda: decisions.decide(db, approval_id, approve=approve, by=actor(key), note=body.note)
        )
    except ApprovalAlreadyDecided as exc:
        raise APIError(
            409,
            str(exc),
            details=[
                {"location": "status", "message": exc.status},
                {"location": "decided_by", "message": exc.decided_by or ""},
            ],
        ) from None
    longpoll.announce(request, "approvals")
    return ApprovalOut.of(decided)


@router.post("/approvals/{approval_id}/approve", summary="Approve (approver)")
async def approve(
    approval_id: str, request: Request, key: Approver, db: Db, body: DecisionIn | None = None
) -> ApprovalOut:
    """Approve a pending approval: the waiting call runs with the arguments it holds."""
    return await _decide(request, db, approval_id, key, True, body or DecisionIn())


@router.post("/approvals/{approval_id}/deny", summary="Deny (approver)")
async def deny(
    approval_id: str, request: Request, key: Approver, db: Db, body: DecisionIn | None = None
) -> ApprovalOut:
    """Deny a pending approval; the note is returned to the agent."""
    return await _decide(request, db, approval_id, key, False, body or DecisionIn())
