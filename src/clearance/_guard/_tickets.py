"""What a governed call carries between deciding, waiting and running, for every backend.

A `Ticket` is one call in flight; an `ApprovalView` is its approval as a backend read it (from
the store or from the server); `settle` says what a decided approval lets the call do. The
records of a call's outcome are built here, so the embedded store, the remote spool and the
server's ingest write them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .. import _trace
from .._boundary import storable
from .._canonical import canonical_json, to_plain
from .._clock import now_us
from .._notify import Waiter
from .._store import _claims as claims
from .._store._approvals import Approval
from .._store._events import Event, make_event
from .._text import escaped
from .._wire import ApprovalOut, ApprovalStatus
from ..errors import ApprovalAlreadyExecuted, ApprovalDenied, ApprovalError, ApprovalTimeout
from ..policy import Decision, Effect

_MAX_ERROR = 2000
_MAX_RESULT = 64 * 1024


@dataclass(frozen=True)
class PendingApproval:
    """A call waiting for a human, as handed to an `on_pending` callback.

    Attributes:
        approval_id: Decide it with `clearance approve ID` / `clearance deny ID`.
        call_id: The call's id in the audit log.
        tool: The tool.
        args: The arguments as shown to approvers (redacted).
        reason: Why it needs approval.
        rule_ids: The rules that asked for it.
        expires_at_us: When it expires (microseconds since the epoch).
    """

    approval_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    reason: str
    rule_ids: tuple[str, ...]
    expires_at_us: int


@dataclass(frozen=True)
class Approved:
    """An approval that lets a call run, as the code running it sees it.

    Attributes:
        approval_id: The approval.
        decided_by: Who approved it (`system` when it ran on an `on_timeout: allow` expiry).
        note: The approver's note for the agent, if any.
        args: The approver's edited arguments (all of them), or None when they are unchanged.
    """

    approval_id: str
    decided_by: str | None
    note: str | None
    args: dict[str, Any] | None = None


@dataclass
class Ticket:
    """One governed call in flight.

    Attributes:
        call_id: The call's id in the audit log.
        tool: The tool.
        session: The session it is recorded under.
        decision: What policy decided.
        args_hash: Hash of the full arguments.
        approval_id: The approval created for it, if any.
        waiter: Where its wake-up arrives while it waits (embedded store only).
        pending: The approval as announced to `on_pending`.
        executed_args_hash: Set when an approver's edit runs instead.
        asked_in: The span the call was asked in, when it runs from another one (a resume):
            its outcome record links to it.
        trace: The span it was made in (tracing on): its outcome record notes it too, so a span
            made from the outcome alone still nests where the call was made.
    """

    call_id: str
    tool: str
    session: str
    decision: Decision
    args_hash: str
    approval_id: str | None = None
    waiter: Waiter | None = None
    pending: PendingApproval | None = None
    executed_args_hash: str | None = None
    asked_in: str | None = None
    trace: str | None = None


@dataclass(frozen=True)
class UsageRecord:
    """What `record_usage` recorded.

    Attributes:
        event_id: The audit event.
        cost_usd: The cost, or None when the model is unpriced.
        price_source: `genai-prices X.Y.Z`, `override`, or why it is unpriced.
    """

    event_id: str
    cost_usd: Decimal | None
    price_source: str


@dataclass(frozen=True)
class ApprovalView:
    """An approval as a backend read it: what a waiting or resuming call needs of it.

    Attributes:
        approval_id: The approval.
        call_id: The call it holds.
        tool: The tool.
        session: The call's session.
        status: `pending`, `approved`, `denied`, `expired`, `cancelled`, `executed` or `failed`.
        args_hash: The hash of the arguments it was asked for.
        reason: Why it was asked for.
        decided_by: Who decided.
        note: The decider's note.
        on_timeout: What its expiry does (`deny`, `allow`).
        expires_at_us: When it expires.
        edited_args: The approver's edited arguments (all of them), None when unchanged.
        edited_args_hash: Their hash.
        executed_args: The arguments to run (None: they cannot be returned exactly).
        claimed_by: The executor that claimed the approved call.
        trace: The span the call was asked in (a traceparent), when the agent traced it.
        result: The approved call's recorded result, once it ran.
        error: Why the approved call failed, when it did.
        dead: Set when the claimant died running the call (its lease expired): what a person
            must confirm before anything runs it again (see `_store._claims`).
    """

    approval_id: str
    call_id: str
    tool: str
    session: str | None
    status: ApprovalStatus
    args_hash: str
    reason: str
    decided_by: str | None
    note: str | None
    on_timeout: str
    expires_at_us: int
    edited_args: dict[str, Any] | None = None
    edited_args_hash: str | None = None
    executed_args: dict[str, Any] | None = None
    claimed_by: str | None = None
    trace: str | None = None
    result: Any = None
    error: str | None = None
    dead: str | None = None


def view_of(a: Approval | ApprovalOut, *, edited_args: dict[str, Any] | None) -> ApprovalView:
    """The view of an approval read from the store or the server; `edited_args` as that source holds them."""
    return ApprovalView(
        a.id,
        a.call_id,
        a.tool,
        a.session,
        a.status,
        a.args_hash,
        a.reason,
        a.decided_by,
        a.note,
        a.on_timeout,
        a.expires_at_us,
        edited_args=edited_args,
        edited_args_hash=a.edited_args_hash,
        executed_args=a.executed_args,
        claimed_by=a.claimed_by,
        trace=a.trace,
        result=a.result,
        error=a.error,
        # The server judges a claim it shows; the store's is judged on this process's clock.
        dead=claims.why(a) if (a.claim_dead if isinstance(a, ApprovalOut) else claims.dead(a, now_us())) else None,
    )


def ticket_for(view: ApprovalView, default_session: str) -> Ticket:
    """A ticket for running an approved call outside the call that asked for it (a resume)."""
    decision = Decision(Effect.REQUIRE_APPROVAL, view.reason, (), (), None, "")
    ticket = Ticket(
        view.call_id, view.tool, view.session or default_session, decision, view.args_hash, view.approval_id
    )
    ticket.executed_args_hash = view.edited_args_hash
    ticket.asked_in = view.trace
    return ticket


def settle(ticket: Ticket, a: ApprovalView) -> Approved:
    """What a decided approval lets the call do: run (as approved, maybe edited), or raise.

    Raises:
        ApprovalError: The approval holds other arguments than this call, or was cancelled.
        ApprovalDenied: A human denied it.
        ApprovalTimeout: It expired and `on_timeout` denies.
        ApprovalAlreadyExecuted: The approved call already ran, or is running elsewhere.
    """
    if a.args_hash != ticket.args_hash:
        raise ApprovalError(
            a.approval_id, ticket.tool, f"approval {a.approval_id} holds other arguments than this call"
        )
    status = a.status
    if status is ApprovalStatus.APPROVED and a.claimed_by is None:
        return Approved(a.approval_id, a.decided_by, a.note, a.edited_args)
    if status in (ApprovalStatus.APPROVED, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED):
        raise ApprovalAlreadyExecuted(
            a.approval_id, ticket.tool, status, a.claimed_by, result=a.result, error=a.error, dead=a.dead
        )
    if status is ApprovalStatus.DENIED:
        raise ApprovalDenied(a.approval_id, ticket.tool, a.decided_by or "unknown", a.note)
    if status is ApprovalStatus.EXPIRED:
        if a.on_timeout == "allow":
            return Approved(a.approval_id, "system", None)
        raise ApprovalTimeout(a.approval_id, ticket.tool, f"{ticket.tool}: approval {a.approval_id} expired undecided")
    raise ApprovalError(a.approval_id, ticket.tool, f"approval {a.approval_id} is {status}")


def outcome_fields(
    ticket: Ticket, base: dict[str, Any], *, error: BaseException | None, duration_s: float
) -> dict[str, Any]:
    """The fields of a call's `tool_call.finished` record."""
    fields: dict[str, Any] = {
        **base,
        "session": ticket.session,
        "tool": ticket.tool,
        "call_id": ticket.call_id,
        "decision": "error" if error else "ok",
        "duration_ms": round(duration_s * 1000, 3),
    }
    if error is not None:
        fields["error"] = escaped(f"{type(error).__name__}: {error}"[:_MAX_ERROR])
    if ticket.approval_id is not None:
        fields["approval_id"] = ticket.approval_id
        if ticket.executed_args_hash is not None:
            fields["executed_args_hash"] = ticket.executed_args_hash
    # The span it was made in, read when it was decided; one run from elsewhere (a resume, a
    # replayed hook) says where it ran, and where it was asked when that is another trace.
    asked_in = ticket.asked_in
    trace = ticket.trace if asked_in is None else _trace.current()
    if trace is not None:
        fields["trace"] = trace
        if asked_in is not None and _trace.trace_id(asked_in) != _trace.trace_id(trace):
            fields["asked_in"] = asked_in
    return fields


def executed_event(finished: dict[str, Any], status: str, by: str | None, at: int) -> Event:
    """The `approval.executed` / `approval.failed` record: the lifecycle's last step, and who ran it.

    `finished` is the fields of the call's `tool_call.finished` record.
    """
    keep = ("agent", "environment", "session", "tool", "call_id", "approval_id", "duration_ms", "error")
    fields: dict[str, Any] = {k: finished[k] for k in keep if k in finished}
    fields.update(decision=status, by=by)
    return make_event("approval.executed" if status == ApprovalStatus.EXECUTED else "approval.failed", at, fields)


def result_value(result: Any) -> Any:
    """A call's result as recorded for an approved call.

    Plain JSON, or its repr when it is not JSON-like or too large.
    """
    try:
        plain = storable(to_plain(result))  # a tool's output is not checked like its arguments
        text = canonical_json(plain)
    except (TypeError, ValueError):
        return {"repr": escaped(repr(result)[:_MAX_RESULT])}
    if len(text) > _MAX_RESULT:
        return {"repr": text[:_MAX_RESULT], "truncated": True}
    return plain
