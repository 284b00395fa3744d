"""Google ADK: a plugin that governs every tool call and records every model call's usage.

- `ClearancePlugin()`: pass it to `App(plugins=[...])` or `Runner(plugins=[...])`. Each tool
  call is decided in `before_tool_callback` on the arguments the tool receives; a blocked or
  denied call's result is replaced by `{"error": reason}`, so the agent continues and can tell
  the user (`on_block="raise"` raises instead); an approval is awaited without blocking the
  event loop, and an approver's edit is what runs. Each model response's usage (prompt,
  candidates, cached and thinking tokens) is recorded with its model and cost. While a budget
  is spent, `before_model_callback` stops the model call itself (`ModelCallBlocked`) or waits
  until an approver lets it go ahead, with the reason the next tool call would get.
- Sessions: the ADK session's id is the Clearance session of its tool calls and model usage
  (unless the application chose one with `clearance.session(...)`), so a run paused and
  resumed in another process is one Clearance session, as it is one ADK session.
- `install()` (done by `clearance.configure()` when ADK is imported): ADK has no process-wide
  plugin registry, so every `Runner` made afterwards gets the plugin (unless it has one).

Needs `pip install "clearance[adk]"`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

try:
    import google.adk
    from google.adk.plugins.base_plugin import BasePlugin
    from google.adk.runners import Runner
    from google.genai import types
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the Google ADK integration needs its extra: pip install "clearance[adk]"') from exc

from .._canonical import to_plain
from .._context import get_session, reset_session, set_session
from .._guard import _runtime
from .._guard._tickets import Ticket
from .._names import name_problem
from ..errors import ApprovalAlreadyExecuted, ApprovalError, ApprovalPending, ConfigurationError, ToolCallBlocked
from ._common import (
    OnBlock,
    before_model_call_async,
    begin,
    claim_approved,
    record_model_call,
    recorded_outcome,
    recorded_text,
    refusal_text,
)
from ._patching import check_version, wrap_method
from ._pending import PendingApproval
from ._usage_owner import owned


def _model_done(started: tuple[float, AbstractContextManager[None]] | None) -> float | None:
    """Leave a finished model call's `owned`; when it started."""
    if started is None:
        return None
    try:
        started[1].__exit__(None, None, None)
    except ValueError:  # ended in another context than it began: nothing of it is left here
        pass
    return started[0]


def _adk_session(context: Any) -> str | None:
    """The ADK session a tool call belongs to (what scopes a paused call's key), if known."""
    session = getattr(context, "session", None)
    return str(session.id) if session is not None and getattr(session, "id", None) else None


_Callback = TypeVar("_Callback", bound=Callable[..., Awaitable[Any]])


def _in_adk_session(callback: _Callback) -> _Callback:
    """Run a plugin callback in the ADK session's id as Clearance's session, unless the application chose one.

    A run paused and resumed later (another process, another `Runner`) then records its tool
    calls and model usage in one Clearance session, as ADK keeps one session. A session chosen
    with `clearance.session(...)` wins; an ADK id outside Clearance's character set is not used.
    """

    @functools.wraps(callback)
    async def run(self: Any, **kwargs: Any) -> Any:
        context = kwargs.get("tool_context") or kwargs.get("callback_context")
        adk_id = getattr(getattr(context, "session", None), "id", None)
        usable = get_session() is None and isinstance(adk_id, str) and name_problem(adk_id, "a session id") is None
        token = set_session(adk_id) if usable else None
        try:
            return await callback(self, **kwargs)
        finally:
            if token is not None:
                reset_session(token)

    return cast(_Callback, run)


class ClearancePlugin(BasePlugin):
    """Governs tool calls and records model usage for every agent a runner runs.

    Args:
        on_block: `message` (default) answers a blocked or denied call with `{"error": reason}`;
            `raise` raises `ToolCallBlocked` / the approval error instead.
    """

    def __init__(self, on_block: OnBlock = "message", *, pause: bool = False) -> None:
        super().__init__(name="clearance")
        self.on_block: OnBlock = on_block
        self.pause = pause
        self._running: dict[str, tuple[Any, Ticket, Any, float]] = {}  # function call id → the call in flight
        self._model_started: dict[str, tuple[float, AbstractContextManager[None]]] = {}

    @_in_adk_session
    async def before_tool_callback(
        self, *, tool: Any, tool_args: dict[str, Any], tool_context: Any
    ) -> dict[str, Any] | None:
        """Decide; wait for an approval if needed; apply an approver's edit to the arguments."""
        args = to_plain(dict(tool_args))
        assert isinstance(args, dict)
        try:
            if self.pause:
                governor, ticket = begin(
                    tool.name, args, call_key=tool_context.function_call_id, scope=_adk_session(tool_context)
                )
                approved = None
                if ticket.approval_id is not None:
                    try:
                        ticket, approved = claim_approved(governor, ticket)
                    except ApprovalPending:
                        return _pause(tool_context, ticket)
            else:
                governor, ticket = begin(tool.name, args)
                approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
        except (ToolCallBlocked, ApprovalError) as exc:
            ran = recorded_outcome(exc) if isinstance(exc, ApprovalAlreadyExecuted) else None
            if ran is not None:  # the session was resumed before: what the call returned then
                result = getattr(exc, "result", None)
                return result if isinstance(result, dict) and recorded_text(result) is None else {"result": ran}
            if self.on_block == "raise":
                raise
            return {"error": refusal_text(exc)}
        if approved is not None and approved.args is not None:
            tool_args.clear()
            tool_args.update(approved.args)  # the dict the tool is called with
        key = tool_context.function_call_id or str(id(tool_args))
        self._running[key] = (governor, ticket, approved, time.perf_counter())
        return None

    def _finish(self, tool_context: Any, tool_args: dict[str, Any], error: BaseException | None, result: Any) -> None:
        key = tool_context.function_call_id or str(id(tool_args))
        running = self._running.pop(key, None)
        if running is None:  # refused before it ran: already recorded
            return
        governor, ticket, _, started = running
        governor.finish(ticket, error=error, duration_s=time.perf_counter() - started, result=result)

    async def after_tool_callback(
        self, *, tool: Any, tool_args: dict[str, Any], tool_context: Any, result: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Record the tool's result."""
        self._finish(tool_context, tool_args, None, result)
        return None

    async def on_tool_error_callback(
        self, *, tool: Any, tool_args: dict[str, Any], tool_context: Any, error: Exception
    ) -> dict[str, Any] | None:
        """Record the tool's failure (ADK then handles it as it would)."""
        self._finish(tool_context, tool_args, error, None)
        return None

    @_in_adk_session
    async def before_model_callback(self, *, callback_context: Any, llm_request: Any) -> Any:
        """Stop the model call, or wait until an approver lets it go ahead, while a budget is spent.

        Then remember when it started, for its latency, and make it under `owned("adk")` until
        `after_model_callback`: the raw `openai`/`anthropic` client capture (under LiteLLM's
        OpenAI provider) records nothing for it — one `llm.call` per request. ADK wraps what a
        plugin raises in a `RuntimeError`; its cause is the `ModelCallBlocked` or the approval's error.
        """
        await before_model_call_async(getattr(llm_request, "model", None))
        owning = owned("adk")
        owning.__enter__()  # callbacks and request share the invocation's context
        self._model_started[callback_context.invocation_id] = (time.perf_counter(), owning)
        return None

    async def on_model_error_callback(self, *, callback_context: Any, llm_request: Any, error: Exception) -> Any:
        """Forget the failed call; ADK handles the error."""
        _model_done(self._model_started.pop(callback_context.invocation_id, None))
        return None

    @_in_adk_session
    async def after_model_callback(self, *, callback_context: Any, llm_response: Any) -> Any:
        """Record the response's usage (nothing when it reports none, as partial stream chunks do)."""
        if getattr(llm_response, "partial", False):
            return None
        started = _model_done(self._model_started.pop(callback_context.invocation_id, None))
        usage = llm_response.usage_metadata
        if usage is None:
            return None
        thinking = usage.thoughts_token_count or 0
        record_model_call(
            llm_response.model_version,
            usage.prompt_token_count,
            (usage.candidates_token_count or 0) + thinking,
            usage.cached_content_token_count,
            thinking,
            started=started,
            traced=True,  # ADK puts gen_ai.usage.* on its own call_llm span
        )
        return None


def _pause(tool_context: Any, ticket: Ticket) -> dict[str, Any]:
    """Pause the call the ADK way (`request_confirmation`); the result the model sees meanwhile."""
    reason = ticket.decision.reason
    payload = {CLEARANCE_APPROVAL: ticket.approval_id, "tool": ticket.tool, "reason": reason}
    tool_context.request_confirmation(hint=f"Clearance approval {ticket.approval_id}: {reason}", payload=payload)
    return {"status": "waiting for approval", "approval_id": ticket.approval_id, "reason": reason}


CLEARANCE_APPROVAL = "clearance_approval"  # the key of the approval id in a confirmation's payload
_CONFIRMATION = "adk_request_confirmation"  # the function call ADK asks the client to answer


async def pending_approvals(runner: Runner, *, user_id: str, session_id: str) -> list[PendingApproval]:
    """The Clearance approvals a session's run is paused on (`await` it: ADK's session service is async).

    Raises:
        ConfigurationError: The runner's session service has no such session.
    """
    return list((await _paused(runner, user_id=user_id, session_id=session_id)).values())


async def _paused(runner: Runner, *, user_id: str, session_id: str) -> dict[str, PendingApproval]:
    """The session's unanswered Clearance confirmation requests: confirmation call id → its approval."""
    session = await runner.session_service.get_session(app_name=runner.app_name, user_id=user_id, session_id=session_id)
    if session is None:
        raise ConfigurationError(f"no session {session_id!r} for user {user_id!r} in {runner.app_name!r}")
    answered = {r.id for e in session.events for r in e.get_function_responses()}
    out: dict[str, PendingApproval] = {}
    for event in session.events:
        for call in event.get_function_calls():
            if call.name != _CONFIRMATION or call.id in answered:
                continue
            payload = ((call.args or {}).get("toolConfirmation") or {}).get("payload") or {}
            if isinstance(payload, dict) and CLEARANCE_APPROVAL in payload:
                original = (call.args or {}).get("originalFunctionCall") or {}
                tool, reason, call_id = (
                    payload.get("tool") or original.get("name"),
                    payload.get("reason"),
                    original.get("id"),
                )
                out[str(call.id)] = PendingApproval(
                    str(payload[CLEARANCE_APPROVAL]),
                    str(tool or ""),
                    str(call_id) if call_id else None,
                    str(reason) if reason is not None else None,
                )
    return out


async def resume(runner: Runner, *, user_id: str, session_id: str) -> list[Any]:
    """Continue a run paused on Clearance approvals once all are decided; the events it produced.

    The answer sent to ADK always confirms: the paused tool call then runs the plugin again,
    which reads the decision from the store — an approved call claims its approval and runs
    once (as edited), a denied one is answered with the reason. Nobody approves a call by
    answering ADK's confirmation request themselves.

    Raises:
        ApprovalPending: An approval is still undecided; nothing was resumed.
        ConfigurationError: The session is not paused on a Clearance approval.
    """
    pending = await _paused(runner, user_id=user_id, session_id=session_id)
    if not pending:
        raise ConfigurationError("this session is not paused on a Clearance approval: nothing to resume")
    governor = _runtime.current()
    for paused in pending.values():
        try:
            governor.approved_call(paused.approval_id)
        except ApprovalPending:
            raise
        except ApprovalError:
            pass  # denied or expired: the plugin answers the model with the reason
    parts = [
        types.Part(
            function_response=types.FunctionResponse(name=_CONFIRMATION, id=call_id, response={"confirmed": True})
        )
        for call_id in pending
    ]
    message = types.Content(role="user", parts=parts)
    return [event async for event in runner.run_async(user_id=user_id, session_id=session_id, new_message=message)]


def _with_plugin(wrapped: Any, runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`Runner.__init__`, then the Clearance plugin unless one was given."""
    wrapped(*args, **kwargs)
    if runner.plugin_manager.get_plugin("clearance") is None:  # one given explicitly wins
        runner.plugin_manager.register_plugin(ClearancePlugin())


def install() -> None:
    """Give every `Runner` made from now on the Clearance plugin (idempotent).

    Raises:
        ConfigurationError: This ADK version is not one Clearance was tested with.
    """
    check_version("google-adk", google.adk.__version__, minimum=(1, 10), below=(3, 0))
    wrap_method(Runner, "__init__", _with_plugin)
