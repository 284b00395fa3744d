"""The governor: one configured policy + store; decides, records, waits for approvals.

Hot path of an allowed call: bind → hash → decide (CEL, in-process) → one write transaction
that appends the decision record → the tool runs → one write that appends its outcome.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .. import _decisions as decisions
from .._clock import now_us
from .._notify import FALLBACK_SECONDS, Waiter
from .._settings import Settings
from ..errors import ApprovalAlreadyDecided, ApprovalDenied, ApprovalError, ApprovalTimeout, ClearanceError
from ..policy import Decision, Policy
from ..store import Approval, Database
from ..store import _approvals as approvals
from ..store import _events as events
from ..store._events import make_event
from ._outcomes import OutcomeBuffer
from ._record import llm_event, record_call

_MAX_ERROR = 2000


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

    def begin(self, tool: str, args: dict[str, Any], session: str | None) -> Ticket:
        """Decide a call and commit its record (and its approval, if one is needed)."""
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
                    waiter=listen,
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
                tool,
                call.shown_args,
                call.decision.reason,
                call.decision.rule_ids,
                call.expires_at_us,
            )
        return Ticket(
            call.call_id, tool, call.session, call.decision, call.args_hash, call.approval_id, waiter, pending
        )

    def finish(self, ticket: Ticket, *, error: BaseException | None, duration_s: float) -> None:
        """Record the outcome of a call that ran (see `_outcomes`).

        Never raises for a plain call; an approved call's outcome is committed at once, with
        its approval's status.
        """
        fields: dict[str, Any] = {
            **self._base,
            "session": ticket.session,
            "tool": ticket.tool,
            "call_id": ticket.call_id,
            "decision": "error" if error else "ok",
            "duration_ms": round(duration_s * 1000, 3),
        }
        if error is not None:
            fields["error"] = f"{type(error).__name__}: {error}"[:_MAX_ERROR]
        if ticket.approval_id is None:
            self._outcomes.add(make_event("tool_call.finished", now_us(), fields))
            return
        fields["approval_id"] = ticket.approval_id
        event = make_event("tool_call.finished", now_us(), fields)
        with self._outcomes.draining() as queued, self.db.write() as cur:
            events.append(self.db, cur, [*queued, event])
            approvals.finish(self.db, cur, ticket.approval_id, "failed" if error else "executed")

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

    def _remaining(self, ticket: Ticket) -> float | None:
        """Seconds to wait for a wake-up, or None once decided (having raised if it may not run).

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies.
        """
        approval = self._settle(ticket)
        if approval.status != "pending":
            self._outcome(ticket, approval)
            return None
        # Woken by push; the re-check every FALLBACK_SECONDS only covers a lost wake-up.
        return min(max((approval.expires_at_us - now_us()) / 1e6, 0.0), FALLBACK_SECONDS)

    def wait(self, ticket: Ticket) -> None:
        """Block until a human decides (or the approval expires); return when the call may run.

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies.
        """
        assert ticket.waiter is not None
        try:
            while (timeout := self._remaining(ticket)) is not None:
                ticket.waiter.wait(timeout)
        except BaseException as exc:
            self._cancel_if_pending(ticket, exc)
            raise
        finally:
            ticket.waiter.close()

    async def wait_async(self, ticket: Ticket) -> None:
        """`wait`, awaiting without blocking the event loop."""
        assert ticket.waiter is not None
        try:
            while (timeout := self._remaining(ticket)) is not None:
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

    def _outcome(self, ticket: Ticket, approval: Approval) -> None:
        settle(
            ticket,
            approval_id=approval.id,
            status=approval.status,
            args_hash=approval.args_hash,
            decided_by=approval.decided_by,
            note=approval.note,
            on_timeout=approval.on_timeout,
        )

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


def settle(
    ticket: Ticket,
    *,
    approval_id: str,
    status: str,
    args_hash: str,
    decided_by: str | None,
    note: str | None,
    on_timeout: str,
) -> None:
    """Return when a decided approval lets the call run; raise what the agent must handle otherwise.

    Raises:
        ApprovalError: The approval holds other arguments than this call, or was cancelled.
        ApprovalDenied: A human denied it.
        ApprovalTimeout: It expired and `on_timeout` denies.
    """
    if args_hash != ticket.args_hash:
        raise ApprovalError(approval_id, ticket.tool, f"approval {approval_id} holds other arguments than this call")
    if status in ("approved", "executed", "failed"):
        return
    if status == "denied":
        raise ApprovalDenied(approval_id, ticket.tool, decided_by or "unknown", note)
    if status == "expired":
        if on_timeout == "allow":
            return
        raise ApprovalTimeout(approval_id, ticket.tool, f"{ticket.tool}: approval {approval_id} expired undecided")
    raise ApprovalError(approval_id, ticket.tool, f"approval {approval_id} is {status}")
