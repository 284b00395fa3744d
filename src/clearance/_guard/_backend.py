"""The governor core: what both backends share, and the few primitives each provides.

A backend — the embedded store (`Governor`) or a Clearance server (`RemoteGovernor`) — differs
only in where a call's records and its approval go. It provides:

- `begin`: decide a call and commit its record (the hot path, its own to keep short);
- `_keep_outcome` and `_append`: commit an outcome record, append usage records;
- `_read`: an approval as an `ApprovalView` (expired first if its time is up, where it may);
- `_waiting` / `_awaiting`: for one waiting call, a poll — "wait up to N seconds for its
  approval to change, then read it" — and whatever must happen when the wait ends;
- `claim`, `claim_denial`, `due`, `flush`, `close`.

The core does the rest once: recording outcomes and usage, waiting for a decision, settling it,
claiming the approved call, resuming one. The wait is written once, as a generator with no I/O
(`_until_decided`); `drive` runs it with a blocking poll and `adrive` with an awaited one.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, ClassVar, TypeVar

from .. import _trace
from .._clock import now_us
from .._settings import Settings
from .._store._events import Event
from ..errors import ApprovalError, ApprovalPending
from ..policy import Policy
from ._record import llm_event
from ._steps import arun, run
from ._tickets import ApprovalView, Approved, Ticket, UsageRecord, outcome_fields, result_value, settle, ticket_for

Poll = Callable[[float], ApprovalView]
AsyncPoll = Callable[[float], Awaitable[ApprovalView]]
Sent = TypeVar("Sent")
Result = TypeVar("Result")

_HOST = socket.gethostname()[:64] or "?"


class Backend(ABC):
    """Decides, records, waits for approvals, records usage. Safe to share between threads.

    Attributes:
        settings: The settings it was configured with.
        agent: The agent its records are made for.
        environment: That agent's environment.
        default_session: The session of calls made outside any `session()`.
        executor: Who runs the approved calls claimed here (agent and process).
        recheck_seconds: The longest a waiting call waits for a change before reading its
            approval again.
    """

    recheck_seconds: ClassVar[float]
    settings: Settings
    agent: str
    environment: str

    def _identify(self, settings: Settings, agent: str, environment: str) -> None:
        """Set who this backend records as."""
        self.settings, self.agent, self.environment = settings, agent, environment
        self._base = {"agent": agent, "environment": environment}
        self.default_session = f"ses_{uuid.uuid4().hex}"

    @property
    def executor(self) -> str:
        """Who runs a claimed call: the agent, this process and its host.

        Read when used, so a process forked after `configure()` (a Celery worker's child) is
        itself, and two containers whose agents are each pid 1 are told apart by host: a claim's
        lease is renewed, and its outcome written, only by the claimant it names.
        """
        return f"agent:{self.agent} (pid {os.getpid()} on {_HOST})"

    @property
    @abstractmethod
    def policy(self) -> Policy:
        """The policy calls are decided from now."""

    # -- deciding and recording -------------------------------------------------------------

    @abstractmethod
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
        ticket back. A `refusal` blocks the call for that reason before policy is asked (an MCP
        proxy's call to a tool none of its servers has): recorded like a boundary refusal.
        """

    def finish(self, ticket: Ticket, *, error: BaseException | None, duration_s: float, result: Any = None) -> None:
        """Record the outcome of a call that ran. Never raises for a plain call.

        An approved call's record also carries its result, and finishes its approval
        (`approval.executed` / `.failed`).
        """
        fields = outcome_fields(ticket, self._base, error=error, duration_s=duration_s)
        if ticket.approval_id is not None:
            fields["result"] = result_value(result) if error is None else None
        self._keep_outcome(ticket, fields, error)

    @abstractmethod
    def _keep_outcome(self, ticket: Ticket, fields: dict[str, Any], error: BaseException | None) -> None:
        """Commit a call's `tool_call.finished` record (`fields`); for an approved call, finish its approval."""

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
        traced: bool = False,
    ) -> UsageRecord:
        """Price one LLM call and record it in the session.

        `traced`: its usage is on a span of the framework's own already (with OpenTelemetry on,
        the record says so, as it does when a GenAI instrumentor is on).
        """
        event, cost = llm_event(
            agent=self.agent,
            environment=self.environment,
            session=session or self.default_session,
            model=model,
            provider=provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached_input_tokens,
            reasoning_tokens=reasoning_tokens,
            latency_ms=latency_ms,
            overrides=self.settings.price_overrides,
            trace=_trace.current(),
            usage_traced=_trace.enabled() and (traced or _trace.usage_traced()),
        )
        self._append([event])
        return UsageRecord(event.id, cost.cost_usd, cost.source)

    @abstractmethod
    def _append(self, batch: list[Event]) -> None:
        """Commit `batch` (records that belong to no call's transaction)."""

    # -- model calls -------------------------------------------------------------------------

    def checks_model_calls(self) -> bool:
        """Whether `before_model_call` can ever stop or pause a model call (the policy has budgets).

        When it cannot, a framework hook may skip calling it at all.
        """
        return _measures_spend(self.policy)

    def before_model_call(self, session: str | None, model: str | None) -> None:
        """Before a model call: stop it, or wait until a human lets it go ahead, while a budget is spent.

        Returns at once, reading nothing, when the policy has no budgets; else as soon as no
        budget is spent. A spent budget is decided and recorded like the next tool call would
        be (see `_budget`): `on_exceed: block` raises, `require_approval` waits for the approval.

        Raises:
            ModelCallBlocked: A spent budget blocks it.
            ApprovalDenied: A human denied it.
            ApprovalTimeout: Nobody decided in time and the budget's `on_timeout` denies.
        """
        if _measures_spend(self.policy):
            from . import _budget  # it imports the embedded backend, which imports this module

            run(_budget.gate(self, session, model))

    async def before_model_call_async(self, session: str | None, model: str | None) -> None:
        """`before_model_call`, waiting without blocking the event loop.

        Raises:
            ModelCallBlocked: A spent budget blocks it.
            ApprovalDenied: A human denied it.
            ApprovalTimeout: Nobody decided in time and the budget's `on_timeout` denies.
        """
        if _measures_spend(self.policy):
            from . import _budget

            await arun(_budget.gate(self, session, model))

    # -- approvals ---------------------------------------------------------------------------

    def wait(self, ticket: Ticket) -> Approved:
        """Block until a human decides (or the approval expires); return when the call may run.

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies (or, remote, the server stayed
                unreachable past its expiry).
            ApprovalAlreadyExecuted: Another process (a resume, a worker) ran it already.
        """
        with self._waiting(ticket) as poll:
            view = drive(self._until_decided(), poll)
        approved = self._approved(ticket, view)
        self.claim(ticket)
        return approved

    async def wait_async(self, ticket: Ticket) -> Approved:
        """`wait`, awaiting without blocking the event loop.

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies.
            ApprovalAlreadyExecuted: Another process ran it already.
        """
        async with self._awaiting(ticket) as poll:
            view = await adrive(self._until_decided(), poll)
        approved = self._approved(ticket, view)
        await self._claim_async(ticket)
        return approved

    def _until_decided(self) -> Generator[float, ApprovalView, ApprovalView]:
        """The wait for a decision, without I/O.

        Yields how long to wait for a change before reading the approval (0 at first), is sent
        the approval as read, and returns it once it is no longer pending.
        """
        view = yield 0.0
        while not view.status.decided:
            left = (view.expires_at_us - now_us()) / 1e6
            # Past its expiry by this clock but not yet by the store's: ask again in a second.
            view = yield min(left if left > 0 else 1.0, self.recheck_seconds)
        return view

    def _approved(self, ticket: Ticket, view: ApprovalView) -> Approved:
        approved = settle(ticket, view)
        ticket.executed_args_hash = view.edited_args_hash
        return approved

    @abstractmethod
    def _waiting(self, ticket: Ticket) -> AbstractContextManager[Poll]:
        """For the length of one call's wait: its poll (read the approval, waiting up to N s for a change)."""

    @abstractmethod
    def _awaiting(self, ticket: Ticket) -> AbstractAsyncContextManager[AsyncPoll]:
        """`_waiting` for async code: the poll is awaited."""

    async def _claim_async(self, ticket: Ticket) -> None:
        """`claim` from async code (on a worker thread, so the event loop runs on)."""
        await asyncio.to_thread(self.claim, ticket)

    @abstractmethod
    def _read(self, approval_id: str) -> ApprovalView:
        """The approval, expired first if its time is up.

        Raises:
            ApprovalNotFound: No such approval (for this agent).
        """

    def approved_call(self, approval_id: str) -> tuple[Ticket, Approved, dict[str, Any]]:
        """The ticket, approval and arguments of an approved call, to run it here (not claimed).

        Raises:
            ApprovalNotFound: No such approval.
            ApprovalPending: Nobody has decided yet.
            ApprovalError: It may not run (denied, timed out, ran already), or the arguments to
                run cannot be returned exactly.
        """
        view = self._read(approval_id)
        ticket = ticket_for(view, self.default_session)
        if not view.status.decided:
            raise ApprovalPending(
                view.approval_id, view.tool, f"approval {view.approval_id} is still pending: nobody has decided yet"
            )
        approved = settle(ticket, view)
        if view.executed_args is None:
            raise ApprovalError(view.approval_id, view.tool, "the arguments to run cannot be returned exactly")
        return ticket, approved, view.executed_args

    def approval_of(self, call_key: str) -> str | None:
        """The id of this agent's approval of the framework call `call_key` (its tool-call id), if it was put to one.

        Reads only: a call nobody asked about is not decided here (unlike `begin`).

        Raises:
            NotImplementedError: This backend cannot look it up (a Clearance server): ask `begin`.
        """
        raise NotImplementedError

    @abstractmethod
    def claim(self, ticket: Ticket) -> None:
        """Claim the approved call for this process: exactly one claimant ever runs it.

        Raises:
            ApprovalAlreadyExecuted: Another process claimed it first.
        """

    @abstractmethod
    def claim_denial(self, approval_id: str) -> bool:
        """Claim the delivery of a denial to the tool's `on_denial`, once across processes."""

    @abstractmethod
    def due(self, tools: Sequence[str]) -> list[tuple[str, str]]:
        """This agent's async-mode approvals of `tools` that are decided and not yet handled: (id, tool)."""

    # -- shutdown ----------------------------------------------------------------------------

    @abstractmethod
    def flush(self) -> bool:
        """Commit (or ship) every queued record now; True when every one was delivered."""

    @abstractmethod
    def close(self) -> None:
        """Commit what is queued and let go of the store or server (idempotent)."""


@functools.lru_cache(maxsize=16)
def _measures_spend(policy: Policy) -> bool:
    """Whether `policy` has a budget a model call is checked against (a policy never changes)."""
    return bool(policy.budget_facts())


def drive(steps: Generator[float, Sent, Result], poll: Callable[[float], Sent]) -> Result:
    """Run a wait written as `steps`, blocking in `poll` for each step."""
    wait = next(steps)
    while True:
        try:
            wait = steps.send(poll(wait))
        except StopIteration as done:
            result: Result = done.value
            return result


async def adrive(steps: Generator[float, Sent, Result], poll: Callable[[float], Awaitable[Sent]]) -> Result:
    """`drive`, awaiting `poll`."""
    wait = next(steps)
    while True:
        try:
            wait = steps.send(await poll(wait))
        except StopIteration as done:
            result: Result = done.value
            return result
