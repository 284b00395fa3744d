"""The remote backend: decides from the server's policy, in-process when it can.

- A call whose rules need nothing from the server (no facts, no approval) is decided locally
  from the synced policy; its record is committed to the local spool before the tool runs. No
  network on an allowed call.
- A call policy puts to approval that a grant the agent holds covers (one without a call or
  total limit, from the snapshot: see `_grants`) is allowed locally too, recorded with the
  grant's id. A grant with a limit is counted on the server: its calls go there.
- With a shadow policy, a locally decided call is also decided by it and what it decided is
  recorded beside; when the shadow needs facts for the tool, the call is decided on the server,
  which decides both (and locally after all when the server cannot be reached).
- A call that needs facts (rolling sums, session cost: the server's), an approval (created on
  the server), or every call with `evaluation="server"`, is decided by `POST /v1/check`.
- If the server cannot be reached for such a call it fails closed — recorded as blocked — unless
  the tool's policy says `when_server_unreachable: allow`.
- A waiting call long-polls the server for its approval, retrying (with jittered backoff) while
  the server cannot be reached, until 30 s past the approval's expiry.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, RootModel, ValidationError

from .. import _trace
from .._clock import now_us
from .._context import get_user
from .._guard._backend import AsyncPoll, Backend, Poll
from .._guard._leases import Leases
from .._guard._record import Prepared, decided_event, prepare, refused
from .._guard._tickets import ApprovalView, PendingApproval, Ticket, view_of
from .._names import MODEL_CALL, admit_names, in_model_call_gate
from .._retry import aretrying, retrying
from .._settings import Settings
from .._store import _grants as grants
from .._store._events import Event, make_event, new_id
from .._wire import ApprovalOut, CheckResponse
from ..errors import (
    ApprovalAlreadyExecuted,
    ApprovalNotFound,
    ApprovalTimeout,
    ConfigurationError,
    ServerError,
    StoreError,
)
from ..policy import Decision, Effect, Policy
from . import _local
from ._client import Client
from ._snapshot import PolicySync
from ._spool import Shipper, Spool

log = logging.getLogger("clearance.remote")
_UNREACHABLE = ("server_unreachable",)
# How long to wait for the server's decision. Longer than the server can take to commit one
# (`server._commits`: a call waits at most START_WITHIN = 10 s for the writer, then a commit
# whose connection was lost is looked up for RESOLVE_FOR = 15 s): giving up earlier, recording
# our own block while the server then committed its allow, would leave two decisions for one call.
CHECK_TIMEOUT = 35.0
_GRACE_US = 30_000_000  # how long past an approval's expiry a waiter keeps trying an unreachable server


class RemoteGovernor(Backend):
    """Everything one remote-mode `configure()` set up. Safe to share between threads."""

    # The server holds each poll until the approval changes (and expires it on time itself).
    recheck_seconds = 30.0

    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise ConfigurationError("remote mode needs an agent key: configure(api_key=...) or CLEARANCE_API_KEY")
        assert settings.server_url is not None
        key = settings.api_key.get_secret_value()
        self.client = Client(settings.server_url, key)
        try:
            self._connect(settings, key)
        except BaseException:
            self.client.close()
            raise

    def _connect(self, settings: Settings, key: str) -> None:
        """Learn who the key is, load the policy, open the spool; clean up what opened if one fails."""
        assert settings.server_url is not None
        agent, environment = settings.agent, settings.environment
        try:
            me = self.client.call("GET", "/v1/me").json()
            if "agent" not in me["scopes"]:
                raise ConfigurationError(f"the key {me['id']} is not an agent key (scopes: {', '.join(me['scopes'])})")
            agent, environment = me["agent"], me["environment"]
        except ServerError as exc:
            if exc.status in (401, 403):
                raise ConfigurationError(f"the server refused the API key: {exc}") from None
            log.warning("cannot reach %s yet (%s); recording as %s", settings.server_url, exc, agent)
        self._identify(settings, agent, environment)
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
        self._leases = Leases(self._renew)

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
        *,
        refusal: str | None = None,
    ) -> Ticket:
        """Decide a call (locally or on the server) and commit its record before it runs."""
        synced = self.sync.state
        policy, shadow = synced.policy, synced.shadow
        tool, session, names_refusal = admit_names(tool, session or self.default_session)
        refusal = "; ".join(w for w in (refusal, names_refusal) if w) or None
        prepared = prepare(policy, tool, args, refusal)
        blocked = refused(prepared, policy)
        if blocked is not None:  # the server would refuse it too: record the refusal here
            shadowed = refused(prepared, shadow) if shadow is not None else None
            return self._record_locally(tool, prepared, session, blocked, shadow=shadowed)
        plan = policy.plan(tool)
        local, grant = None, None
        if self.settings.evaluation == "local" and not plan.facts:
            requester, at = get_user(), now_us()
            local, grant = _local.decide(synced, tool, prepared.args, session=session, requester=requester, at=at)
            if local.effect is not Effect.REQUIRE_APPROVAL:
                shadowed = None
                if shadow is not None:
                    shadowed = _local.shadow(synced, tool, prepared.args, session=session, requester=requester, at=at)
                # A shadow only the server can decide is decided there, beside the same decision.
                if shadow is None or shadowed is not None:
                    return self._record_locally(tool, prepared, session, local, shadow=shadowed, grant=grant)
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
            if tool == MODEL_CALL and in_model_call_gate():
                body["model_gate"] = True  # the server admits the reserved name only so
            span = _trace.current()  # the call's: the traceparent an instrumented HTTP client sends is its own
            traced = {"Clearance-Trace": span} if span is not None else None
            check = self.client.call("POST", "/v1/check", json=body, headers=traced, timeout=CHECK_TIMEOUT)
            answer = _read_model(CheckResponse, check)
        except ServerError as exc:  # unreachable, refused, or an answer this client cannot read
            if local is not None and local.effect is not Effect.REQUIRE_APPROVAL:
                # Only its shadow needed the server: decided here after all, recorded without it.
                return self._record_locally(tool, prepared, session, local, grant=grant)
            allow = plan.when_server_unreachable == "allow" and (exc.status is None or exc.status >= 500)
            effect = Effect.ALLOW if allow else Effect.BLOCK
            why = "this tool's policy allows calls then" if allow else "the call fails closed"
            decision = Decision(effect, f"{exc}; {why}", _UNREACHABLE, (), None, policy.revision)
            return self._record_locally(tool, prepared, session, decision)
        ticket = self._ticket(tool, prepared, answer)
        ticket.trace = span
        return ticket

    def _record_locally(
        self,
        tool: str,
        prepared: Prepared,
        session: str,
        decision: Decision,
        *,
        shadow: Decision | None = None,
        grant: grants.Use | None = None,
    ) -> Ticket:
        call_id = new_id("call")
        trace = _trace.current()
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
                    shadow=shadow,
                    grant=grant,
                    trace=trace,
                )
            ]
        )
        ticket = Ticket(call_id, tool, session, decision, prepared.args_hash)
        ticket.trace = trace
        return ticket

    def _ticket(self, tool: str, prepared: Prepared, r: CheckResponse) -> Ticket:
        decision = Decision(
            r.decision,
            r.reason,
            tuple(r.rule_ids),
            tuple(r.errors),
            None,
            r.policy_revision,
            budget=r.budget,
            grant_id=r.grant_id,
        )
        ticket = Ticket(r.call_id, tool, r.session_id, decision, prepared.args_hash, r.approval_id)
        ticket.asked_in = _trace.checked(r.asked_in)  # a replayed call: where it was first asked
        if ticket.approval_id is not None:
            if r.expires_at_us is None:
                raise ServerError(f"the server created approval {r.approval_id} without an expiry", status=200)
            ticket.pending = PendingApproval(
                ticket.approval_id,
                ticket.call_id,
                tool,
                prepared.recorded,
                decision.reason,
                decision.rule_ids,
                r.expires_at_us,
            )
        return ticket

    def _keep_outcome(self, ticket: Ticket, fields: dict[str, Any], error: BaseException | None) -> None:
        """Spool the record; never raises: the tool has run.

        For an approved call the server marks its approval executed or failed when the record
        arrives.
        """
        try:
            self.spool.put([make_event("tool_call.finished", now_us(), fields)])
        except StoreError as exc:
            log.error("the outcome of %s could not be spooled: %s", ticket.call_id, exc)

    def _append(self, batch: list[Event]) -> None:
        self.spool.put(batch)

    # -- approvals ---------------------------------------------------------------------------

    def _read(self, approval_id: str) -> ApprovalView:
        try:
            return _view(self.client.call("GET", f"/v1/approvals/{approval_id}"))
        except ServerError as exc:
            if exc.status == 404:
                raise ApprovalNotFound(f"no approval has the id {approval_id!r}") from None
            raise

    @contextlib.contextmanager
    def _waiting(self, ticket: Ticket) -> Iterator[Poll]:
        path, give_up = self._polled(ticket)

        def poll(wait: float) -> ApprovalView:
            attempts = retrying(_retryable, give_up=give_up, log=log, what=f"waiting for {path}")
            return _view(attempts(self.client.call, "GET", path, params=_waiting(ticket, wait), timeout=wait + 15))

        with _timing_out(ticket):
            yield poll

    @contextlib.asynccontextmanager
    async def _awaiting(self, ticket: Ticket) -> AsyncIterator[AsyncPoll]:
        path, give_up = self._polled(ticket)
        async with self.client.async_client() as http:

            async def poll(wait: float) -> ApprovalView:
                attempts = aretrying(_retryable, give_up=give_up, log=log, what=f"waiting for {path}")
                answer: httpx.Response = await attempts(
                    self.client.acall, http, "GET", path, params=_waiting(ticket, wait), timeout=wait + 15
                )
                return _view(answer)

            with _timing_out(ticket):
                yield poll

    def _polled(self, ticket: Ticket) -> tuple[str, Callable[[], bool]]:
        """Where a waiting call reads its approval, and when it stops trying an unreachable server."""
        assert ticket.approval_id is not None and ticket.pending is not None
        last_try = ticket.pending.expires_at_us + _GRACE_US
        return f"/v1/approvals/{ticket.approval_id}", lambda: now_us() > last_try

    def claim(self, ticket: Ticket) -> None:
        """Claim the approved call on the server: exactly one claimant ever runs it.

        Raises:
            ApprovalAlreadyExecuted: Another process claimed it first.
        """
        assert ticket.approval_id is not None
        path = f"/v1/approvals/{ticket.approval_id}/claim"
        try:
            self.client.call("POST", path, json={"by": self.executor, "lease": True})
        except ServerError as exc:
            if exc.status == 409:
                raise ApprovalAlreadyExecuted(ticket.approval_id, ticket.tool, "approved", str(exc)) from None
            if exc.status != 422:
                raise
            # A server older than leases refuses the field: claim without one (never judged dead).
            try:
                self.client.call("POST", path, json={"by": self.executor})
            except ServerError as again:
                if again.status == 409:
                    raise ApprovalAlreadyExecuted(ticket.approval_id, ticket.tool, "approved", str(again)) from None
                raise
            return
        self._leases.hold(ticket.approval_id)  # renewed while it runs: a process killed inside is seen to be

    def _renew(self, approval_id: str) -> bool:
        """Renew the lease of this process's claim on the server; False when there is none to renew."""
        try:
            self.client.call("POST", f"/v1/approvals/{approval_id}/claim", json={"by": self.executor, "renew": True})
        except ServerError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

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
        listed = _read_model(_Approvals, found)
        due = [(a.id, a.tool) for a in listed.root if a.tool in tools and a.status.decided]
        return due + self._stranded(tools)

    def _stranded(self, tools: Sequence[str]) -> list[tuple[str, str]]:
        """This agent's approved wait-mode calls of `tools` whose waiter is gone, for a worker to run."""
        found = self.client.call("GET", "/v1/approvals", params={"status": "approved", "mode": "wait"})
        listed = _read_model(_Approvals, found)
        return [(a.id, a.tool) for a in listed.root if a.tool in tools and a.waiter_gone and a.resumable]

    # -- shutdown ----------------------------------------------------------------------------

    def flush(self) -> bool:
        """Ship the spool now (as much as the server takes within 10 s); True when every record was delivered."""
        return self.shipper.flush()

    def close(self) -> None:
        """Stop syncing, ship what the server takes within a few seconds, keep the rest on disk.

        What could not be delivered is logged as a warning (see `Shipper.flush`).
        """
        self._leases.close()
        self.sync.close()
        self.shipper.close()
        try:
            self.shipper.flush(timeout=5)
        finally:
            self.spool.close()
            self.client.close()


def _waiting(ticket: Ticket, wait: float) -> dict[str, Any]:
    """A waiting call's long-poll query: it keeps the waiter's heartbeat, saying whether a worker can run it."""
    from .._guard._resume import resumable  # the runtime imports this module

    return {"wait": wait, "resumable": "true"} if resumable(ticket.tool) else {"wait": wait}


def _retryable(exc: BaseException) -> bool:
    """The server was not reached, or failed (5xx); a refusal (4xx) is raised at once."""
    return isinstance(exc, ServerError) and (exc.status is None or exc.status >= 500)


@contextlib.contextmanager
def _timing_out(ticket: Ticket) -> Iterator[None]:
    """Turn a server that stayed unreachable past the approval's expiry into `ApprovalTimeout`."""
    try:
        yield
    except ServerError as exc:
        if not _retryable(exc):
            raise
        assert ticket.approval_id is not None
        raise ApprovalTimeout(ticket.approval_id, ticket.tool, f"{ticket.tool}: {exc}") from None


_Approvals = RootModel[list[ApprovalOut]]
_Model = TypeVar("_Model", bound=BaseModel)


def _read_model(model: type[_Model], response: httpx.Response) -> _Model:
    """The server's answer as `model`.

    Raises:
        ServerError: The answer is not one (another server, or another version of it).
    """
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ServerError(
            f"the Clearance server answered what this client cannot read: {exc.error_count()} problem(s), "
            f"first {exc.errors()[0]['msg']!r} at {'.'.join(map(str, exc.errors()[0]['loc']))}",
            status=response.status_code,
        ) from None


def _view(response: httpx.Response) -> ApprovalView:
    a = _read_model(ApprovalOut, response)
    return view_of(a, edited_args=a.executed_args if a.edited_args_hash else None)
