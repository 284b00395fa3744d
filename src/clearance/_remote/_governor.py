"""The remote governor: decides from the server's policy, in-process when it can.

- A call whose rules need nothing from the server (no facts, no approval) is decided locally
  from the synced policy; its record is committed to the local spool before the tool runs. No
  network on an allowed call.
- A call that needs facts (rolling sums, session cost: the server's), an approval (created on
  the server), or every call with `evaluation="server"`, is decided by `POST /v1/check`.
- If the server cannot be reached for such a call it fails closed — recorded as blocked — unless
  the tool's policy says `when_server_unreachable: allow`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .._clock import now_us
from .._context import get_user
from .._guard._governor import (
    ApprovalView,
    Approved,
    PendingApproval,
    Ticket,
    UsageRecord,
    outcome_fields,
    result_value,
    settle,
    ticket_for,
)
from .._guard._record import Prepared, decided_event, llm_event, prepare, refused
from .._names import admit_names
from .._settings import Settings
from .._store._events import make_event, new_id
from ..errors import (
    ApprovalAlreadyExecuted,
    ApprovalNotFound,
    ApprovalPending,
    ApprovalTimeout,
    ConfigurationError,
    ServerError,
    StoreError,
)
from ..policy import Decision, Effect, Policy
from ._client import Client
from ._snapshot import PolicySync
from ._spool import Shipper, Spool

log = logging.getLogger("clearance.remote")
_UNREACHABLE = ("server_unreachable",)


class RemoteGovernor:
    """Everything one remote-mode `configure()` set up. Safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise ConfigurationError("remote mode needs an agent key: configure(api_key=...) or CLEARANCE_API_KEY")
        assert settings.server_url is not None
        self.settings = settings
        key = settings.api_key.get_secret_value()
        self.client = Client(settings.server_url, key)
        try:
            self._connect(settings, key)
        except BaseException:
            self.client.close()
            raise
        self.default_session = f"ses_{uuid.uuid4().hex}"
        self.executor = f"agent:{self.agent} (pid {os.getpid()})"

    def _connect(self, settings: Settings, key: str) -> None:
        """Learn who the key is, load the policy, open the spool; clean up what opened if one fails."""
        assert settings.server_url is not None
        self.agent, self.environment = settings.agent, settings.environment
        try:
            me = self.client.call("GET", "/v1/me").json()
            if "agent" not in me["scopes"]:
                raise ConfigurationError(f"the key {me['id']} is not an agent key (scopes: {', '.join(me['scopes'])})")
            self.agent, self.environment = me["agent"], me["environment"]
        except ServerError as exc:
            if exc.status in (401, 403):
                raise ConfigurationError(f"the server refused the API key: {exc}") from None
            log.warning("cannot reach %s yet (%s); recording as %s", settings.server_url, exc, self.agent)
        # The sync long-polls on a client of its own, which it can abort on close.
        self.sync = PolicySync(Client(settings.server_url, key), settings.spool_path.with_suffix(".snapshot.json"))
        try:
            self.sync.start()
        except BaseException:
            self.sync.client.close()
            raise
        try:
            self.spool = Spool(settings.spool_path, busy_timeout=settings.busy_timeout)
        except BaseException:
            self.sync.close()
            raise
        self.shipper = Shipper(self.spool, self.client)

    @property
    def policy(self) -> Policy:
        """The policy decisions are made from now."""
        return self.sync.policy

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
        """Decide a call (locally or on the server) and commit its record before it runs."""
        policy = self.sync.policy
        tool, session, refusal = admit_names(tool, session or self.default_session)
        prepared = prepare(policy, tool, args, refusal)
        blocked = refused(prepared, policy)
        if blocked is not None:  # the server would refuse it too: record the refusal here
            return self._record_locally(policy, tool, prepared, session, blocked)
        plan = policy.plan(tool)
        if self.settings.evaluation == "local" and not plan.facts:
            decision = policy.decide(tool, args, {})
            if decision.effect is not Effect.REQUIRE_APPROVAL:
                return self._record_locally(policy, tool, prepared, session, decision)
        try:
            body: dict[str, Any] = {"tool": tool, "args": args, "session_id": session}
            if (user := get_user()) is not None:
                body["requested_by"] = user
            if mode != "wait":
                body["approval_mode"] = mode
            if mode == "webhook":
                body["webhook_url"] = webhook_url
            if call_key is not None:
                body["call_key"] = call_key
            answer = self.client.call("POST", "/v1/check", json=body)
        except ServerError as exc:
            allow = plan.when_server_unreachable == "allow" and (exc.status is None or exc.status >= 500)
            effect = Effect.ALLOW if allow else Effect.BLOCK
            why = "this tool's policy allows calls then" if allow else "the call fails closed"
            decision = Decision(effect, f"{exc}; {why}", _UNREACHABLE, (), None, policy.revision)
            return self._record_locally(policy, tool, prepared, session, decision)
        return self._ticket(tool, prepared, answer.json())

    def _record_locally(
        self, policy: Policy, tool: str, prepared: Prepared, session: str, decision: Decision
    ) -> Ticket:
        call_id = new_id("call")
        self.spool.put(
            [
                decided_event(
                    now_us(),
                    agent=self.agent,
                    environment=self.environment,
                    session=session,
                    tool=tool,
                    call_id=call_id,
                    decision=decision,
                    prepared=prepared,
                    facts={},
                    approval_id=None,
                )
            ]
        )
        return Ticket(call_id, tool, session, decision, prepared.args_hash)

    def _ticket(self, tool: str, prepared: Prepared, r: dict[str, Any]) -> Ticket:
        decision = Decision(
            Effect(r["decision"]), r["reason"], tuple(r["rule_ids"]), tuple(r["errors"]), None, r["policy_revision"]
        )
        ticket = Ticket(r["call_id"], tool, r["session_id"], decision, prepared.args_hash, r.get("approval_id"))
        if ticket.approval_id is not None:
            ticket.pending = PendingApproval(
                ticket.approval_id,
                ticket.call_id,
                tool,
                prepared.recorded,
                decision.reason,
                decision.rule_ids,
                int(r["expires_at_us"]),
            )
        return ticket

    def finish(self, ticket: Ticket, *, error: BaseException | None, duration_s: float, result: Any = None) -> None:
        """Spool the outcome of a call that ran. Never raises: the tool has run.

        For an approved call the server marks its approval executed or failed when the record
        arrives.
        """
        base = {"agent": self.agent, "environment": self.environment}
        fields = outcome_fields(ticket, base, error=error, duration_s=duration_s)
        if ticket.approval_id is not None:
            fields["result"] = result_value(result) if error is None else None
        try:
            self.spool.put([make_event("tool_call.finished", now_us(), fields)])
        except StoreError as exc:
            log.error("the outcome of %s could not be spooled: %s", ticket.call_id, exc)

    # -- approvals ---------------------------------------------------------------------------

    def wait(self, ticket: Ticket) -> Approved:
        """Wait on the server (long poll) until a human decides or the approval expires.

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies — or the server stayed
                unreachable past its expiry.
            ApprovalAlreadyExecuted: Another process (a resume, a worker) ran it already.
        """
        assert ticket.approval_id is not None and ticket.pending is not None
        give_up = ticket.pending.expires_at_us / 1e6 + 30
        backoff = 0.5
        while True:
            try:
                a = self.client.call(
                    "GET", f"/v1/approvals/{ticket.approval_id}", params={"wait": 30}, timeout=45
                ).json()
                if a["status"] != "pending":
                    return self._run_or_raise(ticket, a)
            except ServerError as exc:
                time.sleep(_after_failure(ticket, exc, give_up, backoff))
                backoff = min(backoff * 2, 10)

    def _run_or_raise(self, ticket: Ticket, a: dict[str, Any]) -> Approved:
        approved = settle(ticket, _view(a))
        ticket.executed_args_hash = a.get("edited_args_hash")
        self.claim(ticket)
        return approved

    def claim(self, ticket: Ticket) -> None:
        """Claim the approved call on the server: exactly one claimant ever runs it.

        Raises:
            ApprovalAlreadyExecuted: Another process claimed it first.
        """
        assert ticket.approval_id is not None
        try:
            self.client.call("POST", f"/v1/approvals/{ticket.approval_id}/claim", json={"by": self.executor})
        except ServerError as exc:
            if exc.status == 409:
                raise ApprovalAlreadyExecuted(ticket.approval_id, ticket.tool, "approved", str(exc)) from None
            raise

    def claim_denial(self, approval_id: str) -> bool:
        """Claim the delivery of a denial to the tool's `on_denial` on the server, once."""
        try:
            self.client.call(
                "POST", f"/v1/approvals/{approval_id}/claim", json={"by": self.executor, "for_denial": True}
            )
        except ServerError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def due(self, tools: Sequence[str]) -> list[tuple[str, str]]:
        """This agent's async-mode approvals of `tools` that are decided and not yet handled: (id, tool)."""
        found = self.client.call("GET", "/v1/approvals", params={"status": "", "mode": "async", "unhandled": "true"})
        return [(a["id"], a["tool"]) for a in found.json() if a["tool"] in tools and a["status"] != "pending"]

    def approved_call(self, approval_id: str) -> tuple[Ticket, Approved, dict[str, Any]]:
        """The ticket, approval and arguments of an approved call, to run it here (not claimed).

        Raises:
            ApprovalNotFound: No such approval (for this agent).
            ApprovalPending: Nobody has decided yet.
            ApprovalError: It may not run (denied, timed out, ran already).
        """
        try:
            a = self.client.call("GET", f"/v1/approvals/{approval_id}").json()
        except ServerError as exc:
            if exc.status == 404:
                raise ApprovalNotFound(f"no approval has the id {approval_id!r}") from None
            raise
        ticket = ticket_for(
            a["id"], a["call_id"], a["tool"], a["session"] or self.default_session, a["args_hash"], a["reason"]
        )
        ticket.executed_args_hash = a.get("edited_args_hash")
        if a["status"] == "pending":
            raise ApprovalPending(a["id"], a["tool"], f"approval {a['id']} is still pending: nobody has decided yet")
        return ticket, settle(ticket, _view(a)), a["executed_args"]

    async def wait_async(self, ticket: Ticket) -> Approved:
        """`wait` for async code: the long poll is awaited, so no thread waits and the loop runs on.

        Raises:
            ApprovalDenied: A human denied it.
            ApprovalTimeout: It expired and `on_timeout` denies, or the server stayed
                unreachable past its expiry.
            ApprovalAlreadyExecuted: Another process ran it already.
        """
        assert ticket.approval_id is not None and ticket.pending is not None
        give_up = ticket.pending.expires_at_us / 1e6 + 30
        backoff = 0.5
        async with self.client.async_client() as http:
            while True:
                try:
                    answer = await self.client.acall(
                        http, "GET", f"/v1/approvals/{ticket.approval_id}", params={"wait": 30}, timeout=45
                    )
                    a = answer.json()
                    if a["status"] != "pending":
                        break
                except ServerError as exc:
                    await asyncio.sleep(_after_failure(ticket, exc, give_up, backoff))
                    backoff = min(backoff * 2, 10)
        return await asyncio.to_thread(self._run_or_raise, ticket, a)  # the claim: one quick request

    # -- usage, shutdown ---------------------------------------------------------------------

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
        )
        self.spool.put([event])
        return UsageRecord(event.id, cost.cost_usd, cost.source)

    def flush(self) -> None:
        """Ship the spool now (as much as the server takes within 10 s)."""
        self.shipper.flush()

    def close(self) -> None:
        """Stop syncing, ship what the server takes within a few seconds, keep the rest on disk."""
        self.sync.close()
        self.shipper.close()
        try:
            self.shipper.flush(timeout=5)
        finally:
            self.spool.close()
            self.client.close()


def _after_failure(ticket: Ticket, exc: ServerError, give_up: float, backoff: float) -> float:
    """How long to wait before polling again after `exc`; raise it if retrying cannot help.

    Raises:
        ServerError: The server refused the request (a 4xx): asking again changes nothing.
        ApprovalTimeout: The server stayed unreachable past the approval's expiry.
    """
    assert ticket.approval_id is not None
    if exc.status is not None and exc.status < 500:
        raise exc
    if time.time() > give_up:
        raise ApprovalTimeout(ticket.approval_id, ticket.tool, f"{ticket.tool}: {exc}") from None
    return backoff


def _view(a: dict[str, Any]) -> ApprovalView:
    edited = a.get("executed_args") if a.get("edited_args_hash") else None
    return ApprovalView(
        a["id"], a["status"], a["args_hash"], a["decided_by"], a["note"], a["on_timeout"], edited, a.get("claimed_by")
    )
