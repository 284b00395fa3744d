"""Deciding calls on the server, and recording their outcomes.

For `evaluation="server"` agents and other clients. The agent and environment always come from
the API key, never from the body.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ... import _trace
from ..._boundary import check_args, summary
from ..._clock import now_us
from ..._guard._record import RecordedCall, call_recorder
from ..._names import checked_name, tool_name
from ..._store import Database
from ..._store import _events as events
from ..._store import _policies as policies
from ..._store import _shadow as shadows
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire import ApprovalMode, CheckResponse
from ...errors import ApprovalError, PolicyError
from ...policy import Policy, parse_policy
from .. import _longpoll as longpoll
from .._auth import require
from .._caches import TTLCache
from .._commits import GroupCommit
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["decisions"])
Agent = Annotated[ApiKey, Depends(require("agent"))]
_COMPILED_KEEP = 64  # compiled revisions kept per process
log = logging.getLogger("clearance.server")


def _session(value: str) -> str:
    return checked_name(value, "the session id")


def _person(value: str) -> str:
    return checked_name(value, "requested_by")


# The boundary's rules on the wire: a name that breaks them is a 422 naming the field.
ToolName = Annotated[
    str,
    Field(min_length=1, max_length=200, description="ASCII letters, digits, `_ . : / ' -`; compared in lower case"),
    AfterValidator(tool_name),
]
SessionId = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_session)]
Person = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_person)]


def admitted(args: dict[str, Any], location: str) -> dict[str, Any]:
    """`args` when the boundary admits them (see `clearance._boundary`), else a 422 naming each path.

    Raises:
        APIError: 422 with one detail per problem, located like `body.args.amount`.
    """
    problems = check_args(args)  # their size is bounded by the body's (max_body_bytes)
    if problems:
        raise APIError(
            422,
            summary(problems),
            details=[
                {"location": location + p.where.removeprefix("args"), "message": f"{p.where} {p.message}"}
                for p in problems
            ],
        )
    return args


class CheckRequest(BaseModel):
    """A call to decide."""

    model_config = ConfigDict(extra="forbid")

    tool: ToolName
    args: dict[str, Any] = Field(default_factory=dict, description="I-JSON (RFC 7493): see the README's boundary")
    session_id: SessionId | None = None
    requested_by: Person | None = Field(default=None, description="the person the agent acts for (may not approve)")
    approval_mode: ApprovalMode = Field(
        default=ApprovalMode.WAIT,
        description="how the agent waits for an approval this call needs (pause: its framework's own pause)",
    )
    call_key: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the framework's id of the call (tool-call id): asked again, the call's approval is returned",
    )
    webhook_url: Text | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://",
        description="webhook mode: where the decision is POSTed (must match the server's allowed prefixes)",
    )
    model_gate: bool = Field(
        default=False,
        description="set only by the SDK's model-call gate: admits the reserved tool `clearance.model_call`",
    )


class Outcome(BaseModel):
    """What happened when a decided call ran."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "error"]
    duration_ms: float = Field(ge=0, le=1e12, allow_inf_nan=False)
    error: Text | None = Field(default=None, max_length=2000)


class _Compiled:
    """Compiled policies by revision id: compiling is milliseconds, deciding microseconds."""

    def __init__(self) -> None:
        self._by_id: dict[str, Policy] = {}
        self._broken: set[str] = set()  # shadows that do not compile: never tried twice
        self._lock = threading.Lock()

    def peek(self, rev: policies.Revision) -> Policy | None:
        with self._lock:
            return self._by_id.get(rev.id)

    def get(self, rev: policies.Revision) -> Policy:
        found = self.peek(rev)
        if found is None:
            found = parse_policy(rev.text, rev.source)
            with self._lock:
                if len(self._by_id) >= _COMPILED_KEEP:
                    self._by_id.pop(next(iter(self._by_id)))
                self._by_id[rev.id] = found
        return found

    def shadow(self, rev: policies.Revision) -> Policy | None:
        """`get` for a shadow, or None when it does not compile: deciding never stops for a shadow.

        Activation compiled it; a newer version may not, and then it is not tried again.
        """
        with self._lock:
            if rev.id in self._broken:
                return None
        try:
            return self.get(rev)
        except PolicyError as exc:
            log.warning("the shadow policy %s does not compile, so it is not decided: %s", rev.id, exc)
            with self._lock:
                self._broken.add(rev.id)
            return None


async def _active_policy(request: Request, key: ApiKey) -> tuple[Policy, Policy | None]:
    """The compiled policy active for the key's agent, and its shadow; from memory unless they changed."""
    state = request.app.state
    cache: TTLCache[tuple[str | None, str], tuple[policies.Revision | None, policies.Revision | None]] = (
        state.__dict__.setdefault("policy_cache", TTLCache())
    )
    compiled: _Compiled = state.__dict__.setdefault("compiled", _Compiled())
    scope = (key.agent, key.environment)
    db: Database = state.db

    def resolve() -> tuple[policies.Revision | None, policies.Revision | None]:
        return (
            policies.resolve(db, agent=key.agent, environment=key.environment),
            shadows.resolve_shadow(db, agent=key.agent, environment=key.environment),
        )

    rev, shadow_rev = await cache.aget(scope, resolve)
    if rev is None:
        raise APIError(
            409, f"no policy is active for agent {key.agent!r} in {key.environment!r}; nothing can be decided"
        )
    policy = compiled.peek(rev)
    if policy is None:
        policy = await run_in_threadpool(compiled.get, rev)
    if shadow_rev is None:
        return policy, None
    shadow = compiled.peek(shadow_rev)
    return policy, shadow if shadow is not None else await run_in_threadpool(compiled.shadow, shadow_rev)


async def decide_for(
    request: Request,
    key: ApiKey,
    tool: str,
    args: dict[str, Any],
    session: str | None,
    requested_by: str | None = None,
    mode: ApprovalMode = ApprovalMode.WAIT,
    webhook_url: str | None = None,
    call_key: str | None = None,
    model_gate: bool = False,
) -> RecordedCall:
    """Decide and record a call for an agent key, with the policy active for its agent (and its shadow).

    The record is committed with other requests' in one transaction (group commit) before this
    returns. It keeps the span the agent made the call in (`call_span`), whatever the server's
    own `otel`: the dashboard links it to the trace (`trace_url`), and the sink traces it.

    Raises:
        APIError: 409 when no policy is active for the key's agent (nothing can be decided).
        StoreError: The decision could not be recorded (so it is not given).
    """
    policy, shadow = await _active_policy(request, key)
    assert key.agent is not None  # agent-scoped keys always name their agent
    commits: GroupCommit = request.app.state.commits
    step = call_recorder(
        commits.db,
        policy,
        agent=key.agent,
        environment=key.environment,
        tool=tool,
        args=args,
        session=session or f"ses_key_{key.id}",
        requested_by=requested_by,
        mode=mode,
        webhook_url=webhook_url,
        call_key=call_key,
        shadow=shadow,
        # Only the SDK's model-call gate says so: a tool name a client merely forwards (an MCP
        # server's, an ardenpy caller's) is refused under the reserved name, never decided by budgets.
        model_gate=model_gate,
        trace=call_span(request),
    )
    call = await commits.run(step)
    if call.approval_id is not None:
        longpoll.announce(request, "approvals")  # inboxes, Slack and the expiry sweeper see it at once
    return call


def call_span(request: Request) -> str | None:
    """The span the agent made the call in: a well-formed `Clearance-Trace`, else `traceparent`, else None.

    The SDK sends the call's span as `Clearance-Trace`: an instrumented HTTP client (httpx,
    requests) replaces `traceparent` with its own request's span, a child of the call's.
    """
    headers = request.headers
    return _trace.checked(headers.get("clearance-trace")) or _trace.checked(headers.get("traceparent"))


@router.post("/check", summary="Decide a call and record the decision (agent)")
async def check(body: CheckRequest, request: Request, key: Agent) -> CheckResponse:
    """Decide the call with the policy active for the key's agent and environment.

    The decision — and a pending approval, when one is required — is committed before the
    answer. Report what happened with `POST /v1/calls/{call_id}/outcome`.
    """
    if body.approval_mode is ApprovalMode.WEBHOOK:
        allowed: tuple[str, ...] = request.app.state.settings.webhook_allowed
        if body.webhook_url is None:
            raise APIError(422, "webhook mode needs a webhook_url", details=[{"location": "body.webhook_url"}])
        if not any(body.webhook_url.startswith(prefix) for prefix in allowed):
            raise APIError(
                422,
                "this server does not send webhooks there (CLEARANCE_WEBHOOK_ALLOWED)",
                details=[{"location": "body.webhook_url", "message": body.webhook_url}],
            )
    try:
        call = await decide_for(
            request,
            key,
            body.tool,
            admitted(body.args, "body.args"),
            body.session_id,
            body.requested_by,
            body.approval_mode,
            body.webhook_url,
            body.call_key,
            body.model_gate,
        )
    except ApprovalError as exc:  # a replayed call_key with other arguments
        raise APIError(409, str(exc), details=[{"location": "body.call_key", "message": exc.approval_id}]) from exc
    d = call.decision
    return CheckResponse(
        decision=d.effect,
        reason=d.reason,
        rule_ids=list(d.rule_ids),
        errors=list(d.errors),
        policy_revision=d.revision,
        call_id=call.call_id,
        session_id=call.session,
        approval_id=call.approval_id,
        expires_at_us=call.expires_at_us,
        grant_id=d.grant_id,
        budget=d.budget,
        asked_in=call.asked_in,
    )


@router.post("/calls/{call_id}/outcome", summary="Record what happened when a decided call ran (agent)")
async def outcome(call_id: Annotated[Text, Path()], body: Outcome, request: Request, key: Agent) -> dict[str, str]:
    """Record the outcome of one of this agent's calls. Idempotent: a repeat changes nothing."""
    commits: GroupCommit = request.app.state.commits
    db = commits.db

    def record(cur: Any) -> str | None:
        cur.execute(
            db.sql("SELECT kind, agent, tool, session FROM events WHERE call_id = :c ORDER BY seq"),
            {"c": call_id},
        )
        rows = cur.fetchall()
        decided = next((r for r in rows if r[0] == "tool_call.decided"), None)
        if decided is None or decided[1] != key.agent:
            return None
        if any(r[0] == "tool_call.finished" for r in rows):
            return "already recorded"
        fields: dict[str, Any] = {
            "agent": key.agent,
            "environment": key.environment,
            "session": decided[3],
            "tool": decided[2],
            "call_id": call_id,
            "decision": body.status,
            "duration_ms": body.duration_ms,
        }
        if body.error is not None:
            fields["error"] = body.error
        events.append(db, cur, [events.make_event("tool_call.finished", now_us(), fields)])
        return "recorded"

    status = await commits.run(record)
    if status is None:
        raise APIError(404, f"this agent has no call with the id {call_id!r}")
    return {"call_id": call_id, "status": status}
