"""The governor: one configured policy + store; decides, records, waits for approvals.

Hot path of an allowed call: bind → hash → decide (CEL, in-process) → one write transaction
that appends the decision record → the tool runs → one write that appends its outcome.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .. import _decisions as decisions
from .._boundary import storable
from .._canonical import canonical_json, to_plain
from .._clock import now_us
from .._context import get_user
from .._notify import FALLBACK_SECONDS, Waiter
from .._settings import Settings
from .._store import Approval, Database
from .._store import _approvals as approvals
from .._store import _events as events
from .._store._events import Event, make_event
from .._text import escaped
from ..errors import (
    ApprovalAlreadyDecided,
    ApprovalAlreadyExecuted,
    ApprovalDenied,
    ApprovalError,
    ApprovalPending,
    ApprovalTimeout,
    ClearanceError,
)
from ..policy import Decision, Effect, Policy
from ._outcomes import OutcomeBuffer
from ._record import llm_event, record_call

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
        waiter: Where its wake-up arrives while it waits.
    """

    call_id: str
    tool: str
    session: str
    decision: Decision
    args_hash: str
    approval_id: str | None = None
    waiter: Waiter | None = None
    pending: PendingApproval | None = None
    executed_args_hash: str | None = None  # set when an approver's edit runs instead


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


class Governor:
    """Everything one `configure()` set up. Safe to share between threads."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.db = Database(settings.database_url, busy_timeout=settings.busy_timeout)
        self.default_session = f"ses_{uuid.uuid4().hex}"
        self._base = {"agent": settings.agent, "environment": settings.environment}
        self._outcomes = OutcomeBuffer(self.db, settings.outcome_delay)
        self.executor = f"agent:{settings.agent} (pid {os.getpid()})"
        self._activate()
        atexit.register(self.close)

    def _activate(self) -> None:
        """Store this policy revision and record its activation for this agent, if new."""
        p = self.policy
        with self.db.write() as cur:
            cur.execute(
                self.db.sql("SELECT id FROM policy_revisions WHERE content_hash = :h"),
                {"h": p.content_hash},
            )
            if cur.fetchone() is None:
                cur.execute(
                    self.db.sql(
                        "INSERT INTO policy_revisions (id, content_hash, source, text, author, parent, created_at_us)"
                        " VALUES (:id, :h, :source, :text, :author, NULL, :at)"
                    ),
                    {
                        "id": p.revision,
                        "h": p.content_hash,
                        "source": p.source,
                        "text": p.source_text,
                        "author": self.settings.agent,
                        "at": now_us(),
                    },
                )
            cur.execute(
                self.db.sql(
                    "SELECT body FROM events WHERE agent = :agent AND kind = 'policy.activated'"
                    " ORDER BY seq DESC LIMIT 1"
                ),
                {"agent": self.settings.agent},
            )
            last = cur.fetchone()
            if last is None or json.loads(last[0]).get("policy_revision") != p.revision:
                fields = {
                    **self._base,
                    "session": None,
                    "policy_revision": p.revision,
                    "source": p.source,
                }
                events.append(self.db, cur, [make_event("policy.activated", now_us(), fields)])

    def flush(self) -> None:
        """Commit every queued outcome record now."""
        self._outcomes.flush()

    def close(self) -> None:
        """Commit queued outcomes and close the store (idempotent)."""
        atexit.unregister(self.close)
        try:
            self._outcomes.close()
        finally:
            self.db.close()

    # -- deciding and recording -------------------------------------------------------------

    def begin(
        self,
        tool: str,
        args: dict[str, Any],
        session: str | None,
        mode: str = "wait",
        webhook_url: str | None = None,
        call_key: str | None = None,
    ) -> Ticket:
        """Decide a call and commit its record (and its approval, if one is needed, in `mode`).

        With a `call_key` (a framework's tool-call id) a call asked about again gets its first
        ticket back: see `record_call`.
        """
        waiter: Waiter | None = None

        def listen() -> str:
            nonlocal waiter
            waiter = Waiter()
            return waiter.address

        try:
            with self._outcomes.draining() as queued:
                call = record_call(
                    self.db,
                    self.policy,
                    agent=self.settings.agent,
                    environment=self.settings.environment,
                    tool=tool,
                    args=args,
                    session=session or self.default_session,
                    prepend=queued,
                    # nobody here waits for a webhook, nor for a framework's own pause
                    waiter=listen if mode in ("wait", "async") else None,
                    requested_by=get_user(),
                    mode=mode,
                    webhook_url=webhook_url,
                    call_key=call_key,
                )
        except BaseException:
            if waiter is not None:
                waiter.close()
            raise
        pending = None
        if call.approval_id is not None and call.expires_at_us is not None:
            pending = PendingApproval(
                call.approval_id,
                call.call_id,
                call.tool,
                call.shown_args,
                call.decision.reason,
                call.decision.rule_ids,
                call.expires_at_us,
            )
        return Ticket(
            call.call_id, call.tool, call.session, call.decision, call.args_hash, call.approval_id, waiter, pending
        )

    def finish(self, ticket: Ticket, *, error: BaseException | None, duration_s: float, result: Any = None) -> None:
        """Record the outcome of a call that ran (see `_outcomes`).

        Never raises for a plain call; an approved call's outcome is committed at once, with
        its approval's status, result or error, and an `approval.executed` / `.failed` record.
        """
        fields = outcome_fields(ticket, self._base, error=error, duration_s=duration_s)
        if ticket.approval_id is None:
            self._outcomes.add(make_event("tool_call.finished", now_us(), fields))
            return
        fields["result"] = result_value(result) if error is None else None
        at = now_us()
        finished = make_event("tool_call.finished", at, fields)
        with self._outcomes.draining() as queued, self.db.write() as cur:
            status = "failed" if error else "executed"
            changed = approvals.finish(
                self.db,
                cur,
                ticket.approval_id,
                status,
                now_us=at,
                result_json=canonical_json(fields["result"]) if error is None else None,
                error=fields.get("error"),
            )
            batch = [*queued, finished]
            if changed:
                batch.append(executed_event(fields, status, self.executor, at))
            events.append(self.db, cur, batch)

    # -- approvals ---------------------------------------------------------------------------

    def _settle(self, ticket: Ticket) -> Approval:
        """The approval once it is no longer pending (expiring it when its time is up)."""
        assert ticket.approval_id is not None
        approval = approvals.get(self.db, ticket.approval_id)
        if approval.status == "pending" and approval.expires_at_us <= now_us():
            try:
                approval = decisions.expire(self.db, approval.id)
            except ApprovalAlreadyDecided:
                approval = approvals.get(self.db, ticket.approval_id)
        return approval

    def _remaining(self, ticket: Ticket) -> tuple[float | None, Approval]:
        """Seconds to wait for a wake-up (None once decided), and the approval as read."""
        approval = self._settle(ticket)
        if approval.status != "pending":
            return None, approval
        # Woken by push; the re-check every FALLBACK_SECONDS only covers a lost wake-up.
        return min(max((approval.expires_at_us - now_us()) / 1e6, 0.0), FALLBACK_SECONDS), approval

    def _run_or_raise(self, ticket: Ticket, approval: Approval) -> Approved:
        approved = settle(ticket, _view(approval))
        ticket.executed_args_hash = approval.edited_args_hash
        self.claim(ticket)
        return approved

    def claim(self, ticket: Ticket) -> None:
        """Claim the approved call for this process: exactly one claimant ever runs it.

        Raises:
            ApprovalAlreadyExecuted: Another process claimed it first.
        """
        assert ticket.approval_id is not None
        approvals.claim(self.db, ticket.approval_id, by=self.executor, now_us=now_us())

    def claim_denial(self, approval_id: str) -> bool:
        """Claim the delivery of a denial to the tool's `on_denial`, once across processes."""
        return approvals.claim_denial(self.db, approval_id, by=self.executor, now_us=now_us())

    def due(self, tools: Sequence[str]) -> list[tuple[str, str]]:
        """This agent's async-mode approvals of `tools` that are decided and not yet handled: (id, tool)."""
        return [(a.id, a.tool) for a in approvals.due_for(self.db, self.settings.agent, tools)]

    def approved_call(self, approval_id: str) -> tuple[Ticket, Approved, dict[str, Any]]:
        """The ticket, approval and arguments of an approved call, to run it here (not claimed).

        Raises:
            ApprovalNotFound: No such approval.
            ApprovalPending: Nobody has decided yet.
            ApprovalError: It may not run (denied, timed out, ran already).
        """
        a = approvals.get(self.db, approval_id)
        if a.status == "pending" and a.expires_at_us <= now_us():
            with contextlib.suppress(ApprovalAlreadyDecided):
                decisions.expire(self.db, a.id)
            a = approvals.get(self.db, approval_id)
        ticket = ticket_for(a.id, a.call_id, a.tool, a.session or self.default_session, a.args_hash, a.reason)
        ticket.executed_args_hash = a.edited_args_hash
        if a.status == "pending":
            raise ApprovalPending(a.id, a.tool, f"approval {a.id} is still pending: nobody has decided yet")
        return ticket, settle(ticket, _view(a)), a.executed_args

    def wait(self, ticket: Ticket) -> Approved:
        """Block until a human decides (or the approval expires); return when the call may run.

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies.
            ApprovalAlreadyExecuted: Another process (a resume, a worker) ran it already.
        """
        assert ticket.waiter is not None
        try:
            while True:
                timeout, approval = self._remaining(ticket)
                if timeout is None:
                    return self._run_or_raise(ticket, approval)
                ticket.waiter.wait(timeout)
        except BaseException as exc:
            self._cancel_if_pending(ticket, exc)
            raise
        finally:
            ticket.waiter.close()

    async def wait_async(self, ticket: Ticket) -> Approved:
        """`wait`, awaiting without blocking the event loop."""
        assert ticket.waiter is not None
        try:
            while True:
                timeout, approval = self._remaining(ticket)
                if timeout is None:
                    return self._run_or_raise(ticket, approval)
                await ticket.waiter.wait_async(timeout)
        except BaseException as exc:
            self._cancel_if_pending(ticket, exc)
            raise
        finally:
            ticket.waiter.close()

    def _cancel_if_pending(self, ticket: Ticket, exc: BaseException) -> None:
        """Cancel the approval of a waiter that stopped waiting, so nobody approves a dead call."""
        if isinstance(exc, ClearanceError) or ticket.approval_id is None:
            return
        with contextlib.suppress(ClearanceError):
            decisions.cancel(self.db, ticket.approval_id, why=f"the waiting agent stopped ({type(exc).__name__})")

    def record_usage(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        reasoning_tokens: int,
        *,
        provider: str | None,
        session: str | None,
        latency_ms: float | None,
    ) -> UsageRecord:
        """Price one LLM call and record it in the session."""
        event, cost = llm_event(
            agent=self.settings.agent,
            environment=self.settings.environment,
            session=session or self.default_session,
            model=model,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            reasoning_tokens=reasoning_tokens,
            latency_ms=latency_ms,
            overrides=self.settings.price_overrides,
        )
        with self._outcomes.draining() as queued, self.db.write() as cur:
            events.append(self.db, cur, [*queued, event])
        return UsageRecord(event.id, cost.cost_usd, cost.source)


@dataclass(frozen=True)
class ApprovalView:
    """What a waiter learns of a decided approval, from the store or the server."""

    approval_id: str
    status: str
    args_hash: str
    decided_by: str | None
    note: str | None
    on_timeout: str
    edited_args: dict[str, Any] | None = None
    claimed_by: str | None = None


def ticket_for(approval_id: str, call_id: str, tool: str, session: str, args_hash: str, reason: str) -> Ticket:
    """A ticket for running an approved call outside the call that asked for it (a resume)."""
    decision = Decision(Effect.REQUIRE_APPROVAL, reason, (), (), None, "")
    return Ticket(call_id, tool, session, decision, args_hash, approval_id)


def _view(a: Approval) -> ApprovalView:
    return ApprovalView(a.id, a.status, a.args_hash, a.decided_by, a.note, a.on_timeout, a.edited_args, a.claimed_by)


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
    if a.status == "approved" and a.claimed_by is None:
        return Approved(a.approval_id, a.decided_by, a.note, a.edited_args)
    if a.status in ("approved", "executed", "failed"):
        raise ApprovalAlreadyExecuted(a.approval_id, ticket.tool, a.status, a.claimed_by)
    if a.status == "denied":
        raise ApprovalDenied(a.approval_id, ticket.tool, a.decided_by or "unknown", a.note)
    if a.status == "expired":
        if a.on_timeout == "allow":
            return Approved(a.approval_id, "system", None)
        raise ApprovalTimeout(a.approval_id, ticket.tool, f"{ticket.tool}: approval {a.approval_id} expired undecided")
    raise ApprovalError(a.approval_id, ticket.tool, f"approval {a.approval_id} is {a.status}")


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
    return fields


def executed_event(finished: dict[str, Any], status: str, by: str | None, at: int) -> Event:
    """The `approval.executed` / `approval.failed` record: the lifecycle's last step, and who ran it.

    `finished` is the fields of the call's `tool_call.finished` record.
    """
    keep = ("agent", "environment", "session", "tool", "call_id", "approval_id", "duration_ms", "error")
    fields: dict[str, Any] = {k: finished[k] for k in keep if k in finished}
    fields.update(decision=status, by=by)
    return make_event(f"approval.{status}", at, fields)


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
