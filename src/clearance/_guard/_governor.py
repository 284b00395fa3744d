"""The embedded backend: one configured policy + the local store; decides, records, waits.

Hot path of an allowed call: bind → hash → decide (CEL, in-process) → one write transaction
that appends the decision record → the tool runs → one write that appends its outcome.
A waiting call is woken by push (a `Waiter` whose address the approval row holds).
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from .. import _decisions as decisions
from .. import _trace
from .._canonical import canonical_json
from .._clock import now_us
from .._context import get_user
from .._notify import FALLBACK_SECONDS, Waiter
from .._settings import Settings
from .._store import Approval, Database
from .._store import _approval_waiters as waiters
from .._store import _approvals as approvals
from .._store import _claims as claims
from .._store import _events as events
from .._store import _policies as policies
from .._store import _shadow as shadows
from .._store._events import Event, make_event
from .._wire import ApprovalStatus
from ..errors import ApprovalAlreadyDecided, ClearanceError
from ..policy import Policy
from ._backend import AsyncPoll, Backend, Poll
from ._leases import Leases
from ._outcomes import OutcomeBuffer
from ._record import record_call
from ._tickets import ApprovalView, PendingApproval, Ticket, executed_event, view_of


class Governor(Backend):
    """Everything one embedded `configure()` set up. Safe to share between threads."""

    # Woken by push; the re-check only covers a lost wake-up.
    recheck_seconds = FALLBACK_SECONDS

    def __init__(self, settings: Settings, policy: Policy, shadow: Policy | None = None) -> None:
        self._identify(settings, settings.agent, settings.environment)
        self._policy = policy
        self._shadow = shadow
        self.db = Database(settings.database_url, busy_timeout=settings.busy_timeout)
        self._outcomes = OutcomeBuffer(self.db, settings.outcome_delay)
        self._leases = Leases(lambda id_: claims.beat(self.db, id_, by=self.executor, now_us=now_us()))
        policies.activate_for_agent(
            self.db, policy, agent=settings.agent, environment=settings.environment, author=settings.agent
        )
        if shadow is not None:
            shadows.activate_for_agent(
                self.db, shadow, agent=settings.agent, environment=settings.environment, author=settings.agent
            )
        atexit.register(self.close)

    @property
    def policy(self) -> Policy:
        """The policy calls are decided from."""
        return self._policy

    @property
    def shadow(self) -> Policy | None:
        """The policy calls are also decided from in shadow (recorded, never enforced), if any."""
        return self._shadow

    def flush(self) -> bool:
        """Commit every queued outcome record now (True: the store is the destination)."""
        self._outcomes.flush()
        return True

    def close(self) -> None:
        """Commit queued outcomes and close the store (idempotent)."""
        atexit.unregister(self.close)
        try:
            self._leases.close()
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
        *,
        refusal: str | None = None,
    ) -> Ticket:
        """Decide a call and commit its record (and its approval, if one is needed, in `mode`).

        With a `call_key` (a framework's tool-call id) a call asked about again gets its first
        ticket back: see `record_call`. A `refusal` blocks it for that reason, before policy.
        """
        waiter: Waiter | None = None
        trace = _trace.current()

        def listen() -> str:
            nonlocal waiter
            waiter = Waiter()
            return waiter.address

        # The queued outcomes share this commit (`OutcomeBuffer.draining`, inline: the hot path).
        outcomes = self._outcomes
        queued = outcomes.take()
        try:
            call = record_call(
                self.db,
                self._policy,
                agent=self.agent,
                environment=self.environment,
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
                shadow=self._shadow,
                trace=trace,
                refusal=refusal,
            )
        except BaseException:
            outcomes.put_back(queued)
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
        ticket = Ticket(
            call.call_id, call.tool, call.session, call.decision, call.args_hash, call.approval_id, waiter, pending
        )
        ticket.asked_in, ticket.trace = call.asked_in, trace
        return ticket

    def _keep_outcome(self, ticket: Ticket, fields: dict[str, Any], error: BaseException | None) -> None:
        """A plain call's outcome shares the next commit; an approved call's is committed at once.

        With it go its approval's status, result or error, and an `approval.executed` / `.failed`
        record.
        """
        if ticket.approval_id is None:
            self._outcomes.add(make_event("tool_call.finished", now_us(), fields))
            return
        at = now_us()
        finished = make_event("tool_call.finished", at, fields)
        with self._outcomes.draining() as queued, self.db.write() as cur:
            status = ApprovalStatus.FAILED if error else ApprovalStatus.EXECUTED
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

    def _append(self, batch: list[Event]) -> None:
        with self._outcomes.draining() as queued, self.db.write() as cur:
            events.append(self.db, cur, [*queued, *batch])

    # -- approvals ---------------------------------------------------------------------------

    def _read(self, approval_id: str) -> ApprovalView:
        approval = approvals.get(self.db, approval_id)
        if not approval.status.decided and approval.expires_at_us <= now_us():
            try:
                approval = decisions.expire(self.db, approval.id, by_waiter=True)
            except ApprovalAlreadyDecided:
                approval = approvals.get(self.db, approval_id)
        return _view(approval)

    @contextlib.contextmanager
    def _waiting(self, ticket: Ticket) -> Iterator[Poll]:
        waiter, approval_id = _waiter_of(ticket)
        alive = self._heartbeat(ticket)

        def poll(wait: float) -> ApprovalView:
            if wait > 0:
                waiter.wait(wait)
            alive.beat(now_us())
            return self._read(approval_id)

        with self._watching(ticket, waiter):
            yield poll

    @contextlib.asynccontextmanager
    async def _awaiting(self, ticket: Ticket) -> AsyncIterator[AsyncPoll]:
        waiter, approval_id = _waiter_of(ticket)
        alive = self._heartbeat(ticket)

        async def poll(wait: float) -> ApprovalView:
            if wait > 0:
                await waiter.wait_async(wait)
            alive.beat(now_us())
            return self._read(approval_id)

        with self._watching(ticket, waiter):
            yield poll

    def _heartbeat(self, ticket: Ticket) -> waiters.Heartbeat:
        """The waiting call's heartbeat on its approval: a waiter not seen for a while is gone."""
        from ._resume import resumable  # it imports the runtime, which imports this module

        assert ticket.approval_id is not None
        return waiters.Heartbeat(self.db, ticket.approval_id, resumable=resumable(ticket.tool))

    @contextlib.contextmanager
    def _watching(self, ticket: Ticket, waiter: Waiter) -> Iterator[None]:
        """Close the waiter when the wait ends; cancel the approval of a waiter that stopped.

        Nobody should approve a call whose agent no longer waits for it.
        """
        try:
            yield
        except BaseException as exc:
            if not isinstance(exc, ClearanceError) and ticket.approval_id is not None:
                with contextlib.suppress(ClearanceError):
                    why = f"the waiting agent stopped ({type(exc).__name__})"
                    decisions.cancel(self.db, ticket.approval_id, why=why)
            raise
        finally:
            waiter.close()

    async def _claim_async(self, ticket: Ticket) -> None:
        self.claim(ticket)  # one local write: a thread would cost more than it saves

    def claim(self, ticket: Ticket) -> None:
        """Claim the approved call for this process: exactly one claimant ever runs it.

        Raises:
            ApprovalAlreadyExecuted: Another process claimed it first.
        """
        assert ticket.approval_id is not None
        approvals.claim(self.db, ticket.approval_id, by=self.executor, now_us=now_us(), lease=True)
        self._leases.hold(ticket.approval_id)  # renewed while it runs: a process killed inside is seen to be

    def approval_of(self, call_key: str) -> str | None:
        """The id of this agent's approval of the framework call `call_key`, if it was put to one (reads only)."""
        with self.db.read() as cur:
            found = approvals.by_key(self.db, cur, self.agent, call_key)
        return found.id if found is not None else None

    def claim_denial(self, approval_id: str) -> bool:
        """Claim the delivery of a denial to the tool's `on_denial`, once across processes."""
        return approvals.claim_denial(self.db, approval_id, by=self.executor, now_us=now_us())

    def due(self, tools: Sequence[str]) -> list[tuple[str, str]]:
        """This agent's async-mode approvals of `tools` that are decided and not yet handled: (id, tool).

        With them, its approved wait-mode calls of `tools` whose waiter is gone.
        """
        due = [(a.id, a.tool) for a in approvals.due_for(self.db, self.agent, tools)]
        return due + waiters.runnable(self.db, now_us(), agent=self.agent, tools=tools)


def _waiter_of(ticket: Ticket) -> tuple[Waiter, str]:
    assert ticket.waiter is not None and ticket.approval_id is not None
    return ticket.waiter, ticket.approval_id


def _view(a: Approval) -> ApprovalView:
    return view_of(a, edited_args=a.edited_args)
