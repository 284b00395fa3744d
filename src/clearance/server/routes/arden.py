"""ardenpy 0.5 wire compatibility: point ardenpy's `api_url` at Clearance and keep your code.

Decisions come from the same policies and land in the same audit log; approving and denying
still need an approver key. Shapes as ardenpy sends and reads them (DESIGN.md); webhook mode
as `_arden_webhooks` says.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ... import _arden_webhooks as arden_webhooks
from ..._guard._record import llm_event
from ..._names import name_problem
from ..._store import Database
from ..._store import _approvals as approvals
from ..._store import _events as events
from ..._store._keys import ApiKey
from ..._wire import ApprovalMode, ApprovalStatus, Sent
from ...errors import ApprovalNotFound
from ...policy import Effect
from .. import _tracing as tracing
from .._auth import actor, current_key, database, require
from .._errors import APIError
from .approvals import Approves, Denies, decide_as, shown_id
from .check import SessionId, ToolName, admitted, decide_for

router = APIRouter(tags=["ardenpy compatibility"])
Db = Annotated[Database, Depends(database)]
Agent = Annotated[ApiKey, Depends(require("agent"))]
Caller = Annotated[ApiKey, Depends(current_key)]
_DECISIONS = {"allow": "allow", "require_approval": "requires_approval", "block": "block"}
ArdenState = Literal[ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.DENIED]
"""The statuses Arden knows: three of ours."""
_STATUS: dict[str, ArdenState] = {
    Effect.ALLOW: ApprovalStatus.APPROVED,
    Effect.REQUIRE_APPROVAL: ApprovalStatus.PENDING,
    Effect.BLOCK: ApprovalStatus.DENIED,
}
# A call that ran was approved, anything else denied.
_APPROVAL_STATUS: dict[ApprovalStatus, ArdenState] = {
    ApprovalStatus.PENDING: ApprovalStatus.PENDING,
    ApprovalStatus.APPROVED: ApprovalStatus.APPROVED,
    ApprovalStatus.EXECUTED: ApprovalStatus.APPROVED,
    ApprovalStatus.FAILED: ApprovalStatus.APPROVED,
}


class ArdenCheck(BaseModel):
    """ardenpy's ToolCallRequest."""

    tool_name: ToolName
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] | None = None


class ArdenDecision(Sent):
    """ardenpy's ToolCallResponse."""

    decision: Literal["allow", "requires_approval", "block"]
    action_id: str
    message: str
    reason: str
    status: ArdenState
    environment: str
    user_id: str | None


class ArdenStatus(Sent):
    """ardenpy's ActionStatusResponse."""

    action_id: str
    status: ArdenState
    message: str | None
    created_at: str


class ArdenApproval(BaseModel):
    """ardenpy's ApprovalRequest."""

    message: str | None = Field(default=None, max_length=2000)


class ArdenTokens(BaseModel):
    """ardenpy's token usage report."""

    model: str = Field(min_length=1, max_length=200)
    prompt_tokens: int = Field(ge=0, le=2**40)
    completion_tokens: int = Field(ge=0, le=2**40)
    session_id: SessionId | None = None


@router.post("/policy/check", summary="ardenpy: decide a call (agent)")
async def policy_check(body: ArdenCheck, request: Request, key: Agent) -> ArdenDecision:
    """Decide and record a call; positional arguments, if any, are recorded as `_args`."""
    args = admitted(dict(body.kwargs), "body.kwargs")
    if body.args:
        args["_args"] = admitted({"args": body.args}, "body")["args"]
    session = (body.metadata or {}).get("session_id")
    if isinstance(session, str) and (why := name_problem(session, "the session id")) is not None:
        raise APIError(422, why, details=[{"location": "body.metadata.session_id", "message": why}])
    assert key.agent is not None  # agent-scoped keys always name their agent
    # ardenpy's webhook mode sends no URL: the operator names the agent's (CLEARANCE_ARDEN_WEBHOOKS).
    hook = arden_webhooks.target_for(request.app.state.settings.arden_webhooks, key.agent)
    call = await decide_for(
        request,
        key,
        body.tool_name,
        args,
        session if isinstance(session, str) else None,
        mode=ApprovalMode.WAIT if hook is None else ApprovalMode.WEBHOOK,
        webhook_url=hook,
    )
    effect = call.decision.effect.value
    return ArdenDecision(
        decision=_DECISIONS[effect],  # type: ignore[arg-type]
        action_id=call.approval_id or call.call_id,
        message=call.decision.reason,
        reason=call.decision.reason if call.decision.rule_ids else "no_policy_configured",
        status=_STATUS[effect],
        environment=key.environment,
        user_id=key.agent,
    )


@router.get("/status/{action_id}", summary="ardenpy: the status of an action")
def status(action_id: str, key: Caller, db: Db) -> ArdenStatus:
    """An approval's status (pending, approved or denied), or a decided call's."""
    privileged = bool({"approver", "admin"} & set(key.scopes))
    unknown = APIError(404, f"no action has the id {shown_id(action_id)!r}")
    if shown_id(action_id) != action_id:  # longer than any id, or text no store keeps
        raise unknown
    if action_id.startswith("apr_"):
        try:
            a = approvals.get(db, action_id)
        except ApprovalNotFound:
            raise unknown from None
        if not privileged and a.agent != key.agent:
            raise unknown
        return ArdenStatus(
            action_id=a.id,
            status=_APPROVAL_STATUS.get(a.status, ApprovalStatus.DENIED),
            message=a.note or a.reason,
            created_at=events.iso(a.created_at_us),
        )
    found = [e.body for e in events.find(db, action_id) if e.body.get("kind") == "tool_call.decided"]
    if not found or (not privileged and found[0]["agent"] != key.agent):
        raise unknown
    decided = found[0]
    return ArdenStatus(
        action_id=action_id,
        status=_STATUS[decided["decision"]],
        message=decided["reason"],
        created_at=events.iso(decided["at_us"]),
    )


def _decide(
    request: Request, action_id: str, key: ApiKey, db: Database, approve: bool, body: ArdenApproval
) -> dict[str, str]:
    with tracing.deciding(request, action_id, approve=approve, by=actor(key)) as traced:
        traced(decide_as(db, action_id, key, approve=approve, note=body.message, note_field="body.message"))
    return {"action_id": action_id, "status": ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED}


@router.post("/approve/{action_id}", summary="ardenpy: approve (approver)")
def approve(
    action_id: str, request: Request, key: Approves, db: Db, body: ArdenApproval | None = None
) -> dict[str, str]:
    """Approve a pending action."""
    return _decide(request, action_id, key, db, True, body or ArdenApproval())


@router.post("/deny/{action_id}", summary="ardenpy: deny (approver)")
def deny(action_id: str, request: Request, key: Denies, db: Db, body: ArdenApproval | None = None) -> dict[str, str]:
    """Deny a pending action; the message is returned to the agent."""
    return _decide(request, action_id, key, db, False, body or ArdenApproval())


@router.post("/token-usage", summary="ardenpy: record token usage (agent)")
def token_usage(body: ArdenTokens, key: Agent, db: Db) -> dict[str, Any]:
    """Record an LLM call's tokens, priced like any other (unpriced models stay unpriced)."""
    assert key.agent is not None
    event, cost = llm_event(
        agent=key.agent,
        environment=key.environment,
        session=body.session_id or f"ses_key_{key.id}",
        model=body.model,
        provider=None,
        input_tokens=body.prompt_tokens,
        output_tokens=body.completion_tokens,
        cached_input_tokens=0,
        reasoning_tokens=0,
        latency_ms=None,
        overrides={},
    )
    with db.write() as cur:
        events.append(db, cur, [event])
    return {"recorded": True, "event_id": event.id, "cost_usd": json.loads(event.body)["cost_usd"]}
