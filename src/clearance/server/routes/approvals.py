"""Approvals over HTTP: list, read (or wait for a decision), approve and deny.

Only approver keys decide, and never for their own agent; an agent key reads only its own
agent's approvals. Approving may also grant similar calls or extend the budget that asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ... import _decisions as decisions
from ... import _granting as granting
from ..._clock import now_us
from ..._grant_views import offers, reads
from ..._store import Approval, Database
from ..._store import _approval_waiters as waiters
from ..._store import _approvals as approvals
from ..._store import _claims as claims
from ..._store import _outbox as outbox
from ..._store._keys import ApiKey
from ..._store._shown import show
from ..._text import Text, escaped, text_problem
from ..._wire import (
    ApprovalFields,
    ApprovalMode,
    ApprovalOut,
    ApprovalStatus,
    AttemptOut,
    DeliveryOut,
    DeliveryStatus,
    ExtendIn,
    GrantIn,
    VoteOut,
)
from ...errors import (
    ApprovalAlreadyDecided,
    ApprovalEditRejected,
    ApprovalError,
    ApprovalForbidden,
    ApprovalNotFound,
    GrantRejected,
)
from .. import _longpoll as longpoll
from .. import _tracing as tracing
from .._auth import actor, current_key, database, require
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["approvals"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]
Agent = Annotated[ApiKey, Depends(require("agent"))]
_RECHECK_SECONDS = 1.0


def approval_out(db: Database, a: Approval, key: ApiKey | None = None) -> ApprovalOut:
    """The view of a stored approval (reads the store: call it on a worker thread).

    The requesting agent also gets the full edited arguments; it and the people who decide
    get the result (which the audit log records for approved calls too). Everyone sees what
    an approver may give with it (`grant_limits`, `budget`).
    """
    own = key is not None and key.agent == a.agent
    decides = key is not None and bool({"approver", "admin"} & set(key.scopes))
    degraded, executed = list(a.degraded), None
    if own:  # the arguments to run are returned exactly or not at all, never marked
        executed = a.executed_args
        if approvals.INEXACT_ARGS in a.degraded or show(executed).notes:
            executed = None
            degraded.append("executed_args is left out: the arguments to run cannot be returned exactly")
    grant_limits, budget = offers(db, a)
    return ApprovalOut(
        **{f.name: getattr(a, f.name) for f in dataclasses.fields(ApprovalFields)},
        args=a.shown_args,
        rule_ids=list(a.rule_ids),
        approvers=list(a.approvers),
        edited_args=a.edited_shown,
        votes=[VoteOut.model_validate(v) for v in a.votes],
        escalate_to=list(a.escalate_to),
        result=a.result if own or decides else None,
        executed_args=executed,
        degraded=degraded,
        grant_limits=grant_limits,
        budget=budget,
        reads=reads(db, a),
        may_decide=key is not None and _may_decide(key, a),
        waiter_gone=waiters.gone(a, now_us()),
        claim_dead=claims.dead(a, now_us()),
    )


def _may_decide(key: ApiKey, a: Approval) -> bool:
    """Whether `key` may decide `a` now (as `_decisions.refusal` judges, and not having voted for it yet)."""
    who = decider(key)
    return (
        a.status is ApprovalStatus.PENDING
        and decisions.refusal(a, who) is None
        and not any(v.get("by") == who.name for v in a.votes)
    )


class DecisionIn(BaseModel):
    """An approver's decision: a note for the agent, and (approving) arguments to run instead.

    Approving, an approver may also `grant` similar calls (within the rule's `grant_limits`)
    or `extend` the exhausted budget that asked (`budget`); either is stored with the decision,
    or the whole decision is refused (422) and the approval stays pending.
    """

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)
    args: dict[str, Any] | None = Field(
        default=None,
        description="Approve with these arguments instead (all, or only those that change); "
        "`[REDACTED]` keeps a hidden original",
    )
    grant: GrantIn | None = Field(default=None, description="Also let similar calls through (approving only)")
    extend: ExtendIn | None = Field(
        default=None, description="Also add to the exhausted budget that asked (approving only)"
    )

    def grant_request(self) -> granting.GrantRequest | None:
        """The grant asked for, as `_decisions.decide` takes it."""
        g = self.grant
        if g is None:
            return None
        return granting.GrantRequest(
            scope=g.scope,
            duration=g.duration,
            max_calls=g.max_calls,
            max_total=g.max_total,
            constraints=g.specs(),
            same=tuple(g.same),
        )

    def extension(self) -> granting.BudgetExtension | None:
        """The budget extension asked for, as `_decisions.decide` takes it."""
        return None if self.extend is None else granting.BudgetExtension(usd=self.extend.usd, tokens=self.extend.tokens)


class ClaimIn(BaseModel):
    """Who is about to run an approved call (or hand its denial to the agent's callback)."""

    model_config = ConfigDict(extra="forbid")

    by: Text = Field(min_length=1, max_length=200)
    for_denial: bool = False
    lease: bool = Field(
        default=False, description="the claimant renews the claim's lease while it runs (`renew`), so its death shows"
    )
    renew: bool = Field(default=False, description="renew the lease of this claimant's claim (409: none to renew)")


@dataclasses.dataclass(frozen=True)
class Narrowed:
    """The filters a list of approvals takes (the inbox's): tool, agent, environment, and the caller's to decide."""

    tool: Annotated[Text | None, Query(max_length=200, description="only calls of this tool")] = None
    agent: Annotated[Text | None, Query(max_length=200, description="only this agent's")] = None
    environment: Annotated[Text | None, Query(max_length=200, description="only this environment's")] = None
    mine: Annotated[bool, Query(description="only those the caller may decide now (`may_decide`)")] = False

    def listing(self, db: Database, key: ApiKey, **more: Any) -> list[Approval]:
        """The approvals `key` may read that these filters let through (see `_approvals.listing`)."""
        own_only = not ({"approver", "admin"} & set(key.scopes))
        if own_only and self.agent is not None and self.agent != key.agent:
            return []  # an agent key sees only its own agent's
        return approvals.listing(
            db,
            agent=key.agent if own_only else self.agent,
            tool=self.tool,
            environment=self.environment,
            keep=(lambda a: _may_decide(key, a)) if self.mine else None,
            **more,
        )


Narrow = Annotated[Narrowed, Depends()]


def _may_read(key: ApiKey, approval: Approval) -> bool:
    return bool({"approver", "admin"} & set(key.scopes)) or approval.agent == key.agent


def _current(db: Database, approval_id: str) -> Approval:
    """The approval, expired first if its time is up (whoever looks enforces expiry)."""
    approval = approvals.get(db, approval_id)
    if approval.status is ApprovalStatus.PENDING and approval.expires_at_us <= now_us():
        try:
            approval = decisions.expire(db, approval_id)
        except ApprovalAlreadyDecided:
            approval = approvals.get(db, approval_id)
    return approval


def _seen(db: Database, a: Approval, resumable: bool) -> Approval:
    """`a`, its waiter's heartbeat written first when it is due (the waiting agent's long poll is open)."""
    at = now_us()
    if a.mode is not ApprovalMode.WAIT or not waiters.still_open(a):
        return a
    if a.resumable == resumable and not waiters.due(a, at):
        return a
    waiters.touch(db, a.id, now_us=at, resumable=resumable, agent=a.agent)
    return approvals.get(db, a.id)


@router.get("/approvals", summary="List approvals")
async def list_approvals(
    key: Caller,
    db: Db,
    narrowed: Narrow,
    status: Annotated[str | None, Query(pattern=r"^[a-z]*$")] = ApprovalStatus.PENDING,
    mode: Annotated[Literal[ApprovalMode.WAIT, ApprovalMode.ASYNC] | None, Query()] = None,
    unhandled: Annotated[bool, Query(description="only those no executor has claimed")] = False,
) -> list[ApprovalOut]:
    """Approvals: pending by default (`status=` another status, or empty for all).

    Nearest expiry first (others newest first), at most 200; `tool`, `agent`, `environment` and
    `mine` narrow them down before that limit. An agent key sees only its own agent's.
    """
    await run_in_threadpool(decisions.sweep, db)
    found = await run_in_threadpool(
        lambda: narrowed.listing(db, key, status=status or None, mode=mode, unclaimed=unhandled)
    )
    return await run_in_threadpool(lambda: [approval_out(db, a, key) for a in found if _may_read(key, a)])


_LISTED = TypeAdapter(list[ApprovalOut])  # encodes integers beyond 64 bits too, which orjson refuses
STREAM_KEEPALIVE_SECONDS = 15.0


@router.get(
    "/approvals/stream",
    summary="Pending approvals as a live stream (Server-Sent Events)",
    response_class=StreamingResponse,
)
async def stream(request: Request, key: Caller, db: Db, narrowed: Narrow) -> StreamingResponse:
    """`event: pending` with the whole pending list (as `GET /approvals` gives it) now and at every change.

    The 500 nearest expiry, narrowed as `GET /approvals` narrows them (`tool`, `agent`,
    `environment`, `mine`). Changes made through this server (or another replica on PostgreSQL) are sent at once; an
    agent writing the same SQLite file directly is seen within a second. A comment line is sent
    every 15 s so proxies keep the connection open.
    """
    state = request.app.state

    def pending() -> bytes:
        decisions.sweep(db)
        found = narrowed.listing(db, key, status=ApprovalStatus.PENDING, limit=500)
        return _LISTED.dump_json([approval_out(db, a, key) for a in found if _may_read(key, a)])

    async def events() -> AsyncIterator[bytes]:
        sent: bytes | None = None
        quiet_since = time.monotonic()
        while not getattr(state, "stopping", False):
            changed = longpoll.topic_event(state, "approvals")
            now = await run_in_threadpool(pending)
            if now != sent:
                yield b"event: pending\ndata: " + now + b"\n\n"
                sent, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= STREAM_KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            if await request.is_disconnected():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), longpoll.recheck_seconds(state))

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.get("/approvals/{approval_id}", summary="One approval, or wait for its decision")
async def get_approval(
    approval_id: Annotated[Text, Path()],
    request: Request,
    key: Caller,
    db: Db,
    wait: Annotated[float, Query(ge=0, le=60, description="long poll: seconds to wait while it is pending")] = 0,
    until: Annotated[
        Literal["decided", "finished"], Query(description="what the long poll waits for: a decision, or the end")
    ] = "decided",
    resumable: Annotated[
        bool, Query(description="the waiting agent's tool can be run by `clearance worker` should it stop waiting")
    ] = False,
) -> ApprovalOut:
    """The approval, or with `wait` a long poll.

    Held while it is pending (with `until=finished`, also while it is approved and not yet run);
    answered the moment that changes, or when `wait` seconds pass. The requesting agent's long
    poll on a wait-mode approval is its waiter's heartbeat (`waiter_seen_at_us`), kept while it
    is held.
    """
    waiting = wait > 0

    async def read() -> Approval:
        try:
            approval = await run_in_threadpool(_current, db, approval_id)
        except ApprovalNotFound:
            raise APIError(404, f"no approval has the id {approval_id!r}") from None
        if not _may_read(key, approval):
            raise APIError(404, f"no approval has the id {approval_id!r}")  # do not reveal others' ids
        if waiting and key.agent == approval.agent and not await request.is_disconnected():
            approval = await run_in_threadpool(_seen, db, approval, resumable)  # a waiter that left is not seen
        return approval

    done = (lambda a: a.status.decided) if until == "decided" else (lambda a: a.status.final)
    found = await longpoll.hold(request, "approvals", wait, read, done)
    return await run_in_threadpool(approval_out, db, found, key)


def decider(key: ApiKey) -> decisions.Decider:
    """Who a key or signed-in person is, as a decider: their name, roles and agent."""
    return decisions.Decider(actor(key), frozenset(key.scopes), key.agent)


_MAX_ID = 100  # every approval id is `apr_` and 32 hex digits


def shown_id(approval_id: str) -> str:
    """An approval id as records and messages show it: at most 100 characters, storable by every store."""
    return escaped(approval_id[:_MAX_ID]) + ("…" if len(approval_id) > _MAX_ID else "")


_NOT_AN_APPROVER = "only approvers decide approvals (this key or person lacks the approver role)"


def deciding(approve: bool) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency admitting approvers to decide; anyone else is refused (403) and audited.

    It runs before the body is validated, so a non-approver's attempt is recorded whatever it
    sends (only a body that is not JSON at all is refused before it, unrecorded).
    """

    async def check(request: Request, key: Caller, db: Db) -> ApiKey:
        if "approver" not in key.scopes:
            approval_id = str(next(iter(request.path_params.values()), ""))
            why = _NOT_AN_APPROVER
            await run_in_threadpool(
                lambda: decisions.refuse(db, shown_id(approval_id), decider(key), approve=approve, why=why)
            )
            raise APIError(403, why)
        return key

    return check


Approves = Annotated[ApiKey, Depends(deciding(True))]
Denies = Annotated[ApiKey, Depends(deciding(False))]


def decide_as(
    db: Database,
    approval_id: str,
    key: ApiKey,
    *,
    approve: bool,
    note: str | None,
    note_field: str = "body.note",
    args: dict[str, Any] | None = None,
    grant: granting.GrantRequest | None = None,
    extend: granting.BudgetExtension | None = None,
) -> Approval:
    """Decide as `key`, or answer why not; every refused attempt is audited once (`approval.refused`).

    `key` is an approver: the routes take it through `Approves`/`Denies`, which refuse (and
    audit) anyone else before this runs. An id no approval can have (too long, or text no store
    keeps) is unknown without asking the store.

    Raises:
        APIError: 403 (not theirs to decide), 404 (no such approval), 409 (decided already),
            422 (a note no store keeps, edits that do not fit, a grant or extension refused).
    """
    who = decider(key)
    shown = shown_id(approval_id)
    if shown != approval_id:
        why = f"no approval has the id {shown!r}"
        decisions.refuse(db, shown, who, approve=approve, why=why)
        raise APIError(404, why)
    if note is not None and (problem := text_problem(note)) is not None:
        raise APIError(422, f"the note {problem}", details=[{"location": note_field, "message": problem}])
    try:
        return decisions.decide(
            db, approval_id, approve=approve, by=who, note=note, args=args, grant=grant, extend=extend
        )
    except ApprovalNotFound:
        raise APIError(404, f"no approval has the id {shown!r}") from None
    except ApprovalForbidden as exc:
        raise APIError(403, str(exc)) from None
    except ApprovalEditRejected as exc:
        raise APIError(
            422, str(exc), details=[{"location": "body.args", "message": problem} for problem in exc.problems]
        ) from None
    except GrantRejected as exc:
        given = "body.extend" if extend is not None else "body.grant"
        raise APIError(422, str(exc), details=[grant_problem(p, given) for p in exc.problems]) from None
    except ApprovalAlreadyDecided as exc:
        raise APIError(
            409,
            str(exc),
            details=[
                {"location": "status", "message": exc.status},
                {"location": "decided_by", "message": exc.decided_by or ""},
            ],
        ) from None


_GRANT_FIELD = re.compile(r"(scope|duration|max_calls|max_total|constraints|same)(\.[^:]*)?")


def grant_problem(problem: str, given: str) -> dict[str, str]:
    """A refused grant's problem as an error detail, located at the field it names when it names one."""
    field, sep, _ = problem.partition(": ")
    if sep and field.startswith("extend"):
        return {"location": f"body.{field}", "message": problem}
    if sep and _GRANT_FIELD.fullmatch(field):
        return {"location": f"body.grant.{field}", "message": problem}
    return {"location": given, "message": problem}


async def _decide(
    request: Request, db: Database, approval_id: str, key: ApiKey, approve: bool, body: DecisionIn
) -> ApprovalOut:
    grant, extend = body.grant_request(), body.extension()

    def run() -> ApprovalOut:
        with tracing.deciding(request, approval_id, approve=approve, by=actor(key)) as traced:
            decided = decide_as(
                db, approval_id, key, approve=approve, note=body.note, args=body.args, grant=grant, extend=extend
            )
            traced(decided)
        return approval_out(db, decided, key)

    out = await run_in_threadpool(run)
    longpoll.announce(request, "approvals")
    if grant is not None or extend is not None:
        longpoll.announce(request, "grants")
    return out


@router.post("/approvals/{approval_id}/approve", summary="Approve (approver)")
async def approve(
    approval_id: str, request: Request, key: Approves, db: Db, body: DecisionIn | None = None
) -> ApprovalOut:
    """Approve a pending approval: the waiting call runs with the arguments it holds.

    With `args`, it runs with those instead: checked against the tool's parameters and decided
    again by the active policy (422 when they do not fit or policy blocks them). With a quorum,
    each approver's approval is a vote until enough have voted.

    With `grant`, similar calls are let through without asking, within the rule's
    `grant_limits`; with `extend`, the exhausted budget that asked grows. A grant or extension
    the rule does not permit refuses the whole decision (422, each problem in `details`; the
    approval stays pending and the attempt is audited).
    """
    return await _decide(request, db, approval_id, key, True, body or DecisionIn())


@router.post("/approvals/{approval_id}/deny", summary="Deny (approver)")
async def deny(approval_id: str, request: Request, key: Denies, db: Db, body: DecisionIn | None = None) -> ApprovalOut:
    """Deny a pending approval; the note is returned to the agent (arguments are refused: 422)."""
    return await _decide(request, db, approval_id, key, False, body or DecisionIn())


@router.post("/approvals/{approval_id}/claim", summary="Claim an approved call to run it, once (agent)")
async def claim(
    approval_id: Annotated[Text, Path()], body: ClaimIn, request: Request, key: Agent, db: Db
) -> ApprovalOut:
    """Claim the approved call of this key's agent for execution: exactly one claim ever wins.

    409 when it ran or another executor claimed it; 409 too when it is not approved.
    """
    try:
        current = await run_in_threadpool(approvals.get, db, approval_id)
        if current.agent != key.agent:
            raise ApprovalNotFound(approval_id)
        by = f"{actor(key)}: {body.by}"
        if body.renew:
            if not await run_in_threadpool(lambda: claims.beat(db, approval_id, by=by, now_us=now_us())):
                raise ApprovalError(approval_id, current.tool, f"approval {approval_id} has no running claim of {by}")
            claimed = await run_in_threadpool(approvals.get, db, approval_id)
            return await run_in_threadpool(approval_out, db, claimed, key)
        if body.for_denial:
            if not await run_in_threadpool(lambda: approvals.claim_denial(db, approval_id, by=by, now_us=now_us())):
                raise ApprovalError(approval_id, current.tool, f"approval {approval_id} was handled, or is not denied")
            claimed = await run_in_threadpool(approvals.get, db, approval_id)
        else:
            claimed = await run_in_threadpool(
                lambda: approvals.claim(db, approval_id, by=by, now_us=now_us(), lease=body.lease)
            )
    except ApprovalNotFound:
        raise APIError(404, f"no approval has the id {approval_id!r}") from None
    except ApprovalError as exc:
        raise APIError(409, str(exc)) from None
    longpoll.announce(request, "approvals")
    return await run_in_threadpool(approval_out, db, claimed, key)


class ResolveIn(BaseModel):
    """What a person found out about a call whose claimant died running it."""

    model_config = ConfigDict(extra="forbid")

    ran: bool = Field(description="true: the tool ran (closed as executed, result unknown); false: it did not")
    note: Text | None = Field(default=None, max_length=2000)


Resolves = Annotated[ApiKey, Depends(require("approver"))]


@router.post("/approvals/{approval_id}/resolve", summary="Say whether a call whose claimant died ran (approver)")
async def resolve(
    approval_id: Annotated[Text, Path()], body: ResolveIn, request: Request, key: Resolves, db: Db
) -> ApprovalOut:
    """Resolve an approval claimed by a dead process (`claim_dead`): whether its tool ran is unknown.

    Only someone who may decide the approval may (403 otherwise: its own agent's key, the person
    who requested the call, an approver outside the rule's `approvers`).

    `ran: false` releases the claim, so `resume` or `clearance worker` can run the call again;
    `ran: true` closes it as executed with an unknown result. Audited as `approval.claim_resolved`.
    409 when its claim is not dead (nothing to resolve).
    """
    who = decider(key)
    try:
        done = await run_in_threadpool(
            lambda: claims.resolve(
                db,
                approval_id,
                ran=body.ran,
                by=actor(key),
                note=body.note,
                now_us=now_us(),
                refusal=lambda a: decisions.refusal(a, who),
            )
        )
    except ApprovalNotFound:
        raise APIError(404, f"no approval has the id {approval_id!r}") from None
    except ApprovalForbidden as exc:
        raise APIError(403, str(exc)) from None
    except ApprovalError as exc:
        raise APIError(409, str(exc)) from None
    longpoll.announce(request, "approvals")
    return await run_in_threadpool(approval_out, db, done, key)


@router.get("/approvals/{approval_id}/deliveries", summary="Webhook deliveries of an approval")
async def deliveries(approval_id: Annotated[Text, Path()], key: Caller, db: Db) -> list[DeliveryOut]:
    """Each webhook the approval caused, with every attempt (time, HTTP status or error, duration)."""
    try:
        approval = await run_in_threadpool(approvals.get, db, approval_id)
    except ApprovalNotFound:
        raise APIError(404, f"no approval has the id {approval_id!r}") from None
    if not _may_read(key, approval):
        raise APIError(404, f"no approval has the id {approval_id!r}")
    found = await run_in_threadpool(outbox.for_approval, db, approval_id)
    return [
        DeliveryOut(
            id=m.id,
            event_type=m.event_type,
            url=m.url,
            status=DeliveryStatus(m.status),
            attempts=[AttemptOut(**dataclasses.asdict(a)) for a in attempts],
            next_attempt_at_us=m.next_attempt_at_us if m.status == DeliveryStatus.PENDING else None,
            delivered_at_us=m.delivered_at_us,
            last_error=m.last_error,
        )
        for m, attempts in found
    ]
