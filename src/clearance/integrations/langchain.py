"""LangChain and LangGraph: governed tool calls and recorded LLM usage.

- `ClearanceMiddleware()`: pass it to `create_agent(..., middleware=[...])`. Every tool call the
  agent makes is decided by policy on the arguments the tool will receive (validated and coerced
  by the tool's own schema first), recorded, and run only if allowed or approved — with the
  approver's edited arguments, if any. A blocked or denied call becomes the tool's error
  `ToolMessage` carrying the reason, so the agent continues and can tell the user
  (`on_block="raise"` raises instead).
- `wrap_tool_call` / `awrap_tool_call`: the same for a hand-built graph's
  `ToolNode(wrap_tool_call=..., awrap_tool_call=...)`.
- `ClearanceMiddleware(pause=True)`: a call that needs approval pauses the graph with
  `interrupt()` instead; `resume` continues it once a human has decided.
- Model calls: while a session's or the agent's budget is spent, the model call itself is
  stopped (`ModelCallBlocked`, the budget's `on_exceed: block`) or waits until an approver lets
  it go ahead (`require_approval`), with the reason the next tool call would get: `ModelGate`
  checks every model call (the middleware has no model hook: LangGraph runs an async one
  through two worker-thread hops per model call, budgets or none).
- `install()` (done by `clearance.configure()` when LangChain is imported): `ToolGate`, a
  process-wide callback that governs every tool call no middleware governs (agents built
  without it, tools invoked directly), `ModelGate`, its twin for model calls, and a callback
  that records every chat model call's tokens, model and cost in the current session,
  streaming included (`stream_usage=True`).

Needs `pip install "clearance[langchain]"`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, Literal
from uuid import UUID

try:
    from langchain.agents.middleware import AgentMiddleware
    from langchain.agents.middleware.types import ToolCallRequest
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.callbacks import manager as _callback_manager
    from langchain_core.messages import ToolMessage
    from langchain_core.outputs import LLMResult
    from langchain_core.tracers.context import register_configure_hook
    from langgraph.config import get_config
    from langgraph.prebuilt.tool_node import ToolInvocationError
    from langgraph.types import Command, interrupt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the LangChain integration needs its extra: pip install "clearance[langchain]"') from exc

from .. import _trace
from .._canonical import to_plain
from .._context import get_session
from .._guard import _runtime
from .._guard._backend import Backend
from .._guard._recording import RUNNING, Recording
from .._guard._tickets import Approved, Ticket
from ..errors import ApprovalError, ApprovalPending, ConfigurationError, ToolCallBlocked
from ..policy import Effect
from . import _common, _spans
from ._pending import PendingApproval
from ._usage_owner import owned, owner

OnBlock = Literal["message", "raise"]

Handler = Callable[[ToolCallRequest], Any]
Decided = tuple[Backend, Ticket, "Approved | None"]  # a call that may run: how, and with which approval


def _thread() -> str | None:
    """The LangGraph thread the running tool node belongs to (what scopes a paused call's key), if any."""
    try:
        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:  # not inside a graph run
        return None
    return str(thread) if thread is not None else None


def _arguments(request: ToolCallRequest) -> dict[str, Any]:
    """The arguments as the tool will receive them: validated by its schema (850 → 850.0)."""
    args = dict(request.tool_call.get("args") or {})
    schema = getattr(request.tool, "args_schema", None) if request.tool is not None else None
    if schema is not None and hasattr(schema, "model_validate"):
        try:
            args = schema.model_validate(args).model_dump()
        except Exception:  # the tool will refuse them itself; decide on what the model sent
            pass
    plain = to_plain(args)
    assert isinstance(plain, dict)
    return plain


def _refusal(request: ToolCallRequest, text: str) -> ToolMessage:
    call = request.tool_call
    return ToolMessage(content=text, tool_call_id=call.get("id") or "", name=call.get("name"), status="error")


def _begin(request: ToolCallRequest, on_block: OnBlock) -> tuple[Backend, Ticket, ToolMessage | None]:
    governor = _runtime.current()
    ticket = governor.begin(request.tool_call["name"], _arguments(request), get_session())
    if ticket.decision.effect is Effect.BLOCK:
        error = _common.blocked(ticket)
        if on_block == "raise":
            raise error
        return governor, ticket, _refusal(request, _common.refusal_text(error))
    return governor, ticket, None


def _approved_request(request: ToolCallRequest, approved: Approved | None) -> ToolCallRequest:
    if approved is None or approved.args is None:
        return request
    return request.override(tool_call={**request.tool_call, "args": approved.args})


def _denied(request: ToolCallRequest, error: ApprovalError, on_block: OnBlock) -> ToolMessage:
    if on_block == "raise":
        raise error
    return _refusal(request, _common.refusal_text(error))


class ClearanceMiddleware(AgentMiddleware):
    """Governs every tool call of a `create_agent` agent (sync and async).

    Args:
        on_block: `message` (default) answers a blocked or denied call with the tool's error
            message, so the agent continues; `raise` raises `ToolCallBlocked` / the approval
            error instead.
        pause: A call that needs approval pauses the graph with LangGraph's `interrupt()`
            (the graph needs a checkpointer) instead of waiting in the run; `resume` continues
            it once a human has decided.
    """

    def __init__(self, on_block: OnBlock = "message", *, pause: bool = False) -> None:
        super().__init__()
        self.on_block: OnBlock = on_block
        self.pause = pause

    def _paused(self, request: ToolCallRequest) -> Decided | ToolMessage:
        """Decide by tool-call id; interrupt the graph until the approval is decided; claim it."""
        call = request.tool_call
        try:
            governor, ticket = _common.begin(
                call["name"], _arguments(request), call_key=call.get("id") or None, scope=_thread()
            )
            if ticket.approval_id is None:
                return governor, ticket, None
            while True:
                try:
                    decided, approved = _common.claim_approved(governor, ticket)
                    return governor, decided, approved
                except ApprovalPending:
                    # The first time this pauses the graph; on resume it returns, and the
                    # decision is read from the store (never from the resume value).
                    interrupt(
                        {
                            CLEARANCE_APPROVAL: ticket.approval_id,
                            "tool": ticket.tool,
                            "reason": ticket.decision.reason,
                            "call_id": request.tool_call.get("id"),
                        }
                    )
        except ToolCallBlocked as exc:
            if self.on_block == "raise":
                raise
            return _refusal(request, _common.refusal_text(exc))
        except ApprovalError as exc:
            ran = _common.recorded_outcome(exc)
            if ran is not None:  # the checkpoint was resumed before: what the call returned then
                call = request.tool_call
                return ToolMessage(content=ran, tool_call_id=call.get("id") or "", name=call.get("name"))
            return _denied(request, exc, self.on_block)

    def _waited(self, request: ToolCallRequest) -> Decided | ToolMessage:
        governor, ticket, refused = _begin(request, self.on_block)
        if refused is not None:
            return refused
        try:
            return governor, ticket, governor.wait(ticket) if ticket.approval_id is not None else None
        except ApprovalError as exc:
            return _denied(request, exc, self.on_block)

    async def _awaited(self, request: ToolCallRequest) -> Decided | ToolMessage:
        governor, ticket, refused = _begin(request, self.on_block)
        if refused is not None:
            return refused
        try:
            return governor, ticket, await governor.wait_async(ticket) if ticket.approval_id is not None else None
        except ApprovalError as exc:
            return _denied(request, exc, self.on_block)

    def wrap_tool_call(self, request: ToolCallRequest, handler: Handler) -> Any:
        """Decide, wait for an approval if one is needed, then run (maybe as edited) and record."""
        decided = self._paused(request) if self.pause else self._waited(request)
        if isinstance(decided, ToolMessage):
            return decided
        governor, ticket, approved = decided
        with _Recording(governor, ticket, approved) as recording:
            return recording.done(handler(_approved_request(request, approved)))

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]
    ) -> Any:
        """`wrap_tool_call` for async agents: the wait does not block the event loop."""
        decided = self._paused(request) if self.pause else await self._awaited(request)
        if isinstance(decided, ToolMessage):
            return decided
        governor, ticket, approved = decided
        with _Recording(governor, ticket, approved) as recording:
            return recording.done(await handler(_approved_request(request, approved)))


class _Recording(Recording):
    """A tool's error `ToolMessage` counts as a failed call; its content is the recorded result."""

    def outcome(self, result: Any) -> tuple[BaseException | None, Any]:
        """The failure a `ToolMessage` reports, and its content."""
        return _error_of(result), _content(result)


class _ToolError(Exception):
    """A tool's own error message, as the ToolNode reported it."""


def _error_of(result: Any) -> BaseException | None:
    if isinstance(result, ToolMessage) and result.status == "error":
        return _ToolError(str(result.content)[:2000])
    return None


def _content(result: Any) -> Any:
    return result.content if isinstance(result, ToolMessage) else None


def wrap_tool_call(request: ToolCallRequest, handler: Handler) -> Any:
    """For `ToolNode(wrap_tool_call=clearance.integrations.langchain.wrap_tool_call, ...)`."""
    return _DEFAULT.wrap_tool_call(request, handler)


async def awrap_tool_call(request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[Any]]) -> Any:
    """For `ToolNode(awrap_tool_call=clearance.integrations.langchain.awrap_tool_call, ...)`."""
    return await _DEFAULT.awrap_tool_call(request, handler)


_DEFAULT = ClearanceMiddleware()


# -- resuming a paused graph ---------------------------------------------------------------------

CLEARANCE_APPROVAL = "clearance_approval"  # the key of the approval id in an interrupt's value


def pending_approvals(graph: Any, config: Any) -> list[PendingApproval]:
    """The Clearance approvals a paused thread (`config`'s thread_id) waits for."""
    return [
        PendingApproval(str(v[CLEARANCE_APPROVAL]), str(v.get("tool") or ""), v.get("call_id"), v.get("reason"))
        for v in (i.value for i in _interrupts(graph.get_state(config)))
    ]


def _interrupts(state: Any) -> list[Any]:
    return [i for i in state.interrupts if isinstance(i.value, dict) and CLEARANCE_APPROVAL in i.value]


def _resume_command(graph: Any, state: Any) -> Command[Any]:
    ours = _interrupts(state)
    if not ours:
        raise ConfigurationError("this thread is not paused on a Clearance approval: nothing to resume")
    governor = _runtime.current()
    for paused in ours:
        _decided(governor, paused)
    return Command(resume={i.id: {"decided": True} for i in ours})


def _decided(governor: Backend, paused: Any) -> None:
    """Raise ApprovalPending while nobody has decided (a denial is fine: the run answers it)."""
    try:
        governor.approved_call(paused.value[CLEARANCE_APPROVAL])
    except ApprovalPending:
        raise
    except ApprovalError:
        pass


def resume(graph: Any, config: Any, **invoke_kwargs: Any) -> Any:
    """Continue a thread paused on Clearance approvals once all are decided; the run's result.

    Any process with the same checkpointer can call it. Each approved call then claims its
    approval and runs exactly once (a second resume of the same checkpoint answers the model
    that it ran already); a denied one answers the model with the reason.

    Raises:
        ApprovalPending: An approval is still undecided; nothing was resumed.
        ConfigurationError: The thread is not paused on a Clearance approval.
    """
    return graph.invoke(_resume_command(graph, graph.get_state(config)), config, **invoke_kwargs)


async def aresume(graph: Any, config: Any, **invoke_kwargs: Any) -> Any:
    """`resume` for async graphs."""
    state = await graph.aget_state(config)
    return await graph.ainvoke(_resume_command(graph, state), config, **invoke_kwargs)


# -- usage ---------------------------------------------------------------------------------------


class UsageCallback(BaseCallbackHandler):
    """Records each chat model call's tokens, model and cost in the current Clearance session.

    One `llm.call` per model request: the request runs under `owned("langchain")`, so the raw
    `openai`/`anthropic` client capture under `ChatOpenAI`, `ChatAnthropic` and the like records
    nothing for it, and this callback records it from the message's `usage_metadata`. The
    owner is set in `on_chat_model_start` and cleared in `on_llm_end` / `on_llm_error`, which is
    why the handler runs inline: LangChain calls an inline handler in the model call's own
    context (its event loop task, for async models), not on a worker thread in a copy of it, and
    the request — in that context or a task started from it — sees the owner.
    """

    raise_error = False
    run_inline = True
    # Model events are its only business: LangChain skips it for the rest (a graph emits several per step).
    ignore_chain = ignore_agent = ignore_retriever = ignore_retry = ignore_custom_event = True

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[UUID, tuple[float, AbstractContextManager[None] | None]] = {}

    def _start(self, run_id: UUID) -> None:
        owning = None
        if owner() is None:  # the first of a batch's calls owns them all, until it ends
            owning = owned("langchain")
            owning.__enter__()
        self._started[run_id] = (time.perf_counter(), owning)

    def _end(self, run_id: UUID) -> float | None:
        started, owning = self._started.pop(run_id, (None, None))
        if owning is not None:
            try:
                owning.__exit__(None, None, None)
            except ValueError:  # ended in another context than it began in: nothing of it is left here
                pass
        return started

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Remember when the call started, for its latency; own its request's usage."""
        self._start(run_id)

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """The same for a completion model."""
        self._start(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget the failed call."""
        self._end(run_id)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Record the usage the model reported (nothing when it reported none)."""
        started = self._end(run_id)
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None)
                if not usage:
                    continue
                meta = getattr(message, "response_metadata", None) or {}
                model = meta.get("model_name") or meta.get("model") or "unknown"
                details_in = usage.get("input_token_details") or {}
                details_out = usage.get("output_token_details") or {}
                _common.record_model_call(
                    model,
                    usage.get("input_tokens"),
                    usage.get("output_tokens"),
                    details_in.get("cache_read"),
                    details_out.get("reasoning"),
                    provider=meta.get("model_provider"),
                    started=started,
                )


# The coroutine in which LangChain's async callback manager looks up and calls a handler's method.
_ASYNC_DISPATCH = getattr(getattr(_callback_manager, "_ahandle_event_for_handler", None), "__code__", None)


class _Gating:
    """A gate's event method in two forms: a coroutine for LangChain's async dispatch, plain for the rest.

    LangChain awaits a handler's coroutine method in the event loop itself; a plain method it
    calls inline only for a `run_inline` handler, and otherwise wraps each event (ignored or
    not) in a task and runs the method on a worker thread: two thread hops and a dozen tasks
    per tool call in a LangGraph agent. An inline plain method would block the loop while an
    approval waits. So the gates are inline and their gating methods come in two forms: the
    coroutine when LangChain's async dispatcher (`_ahandle_event_for_handler`, known by its
    frame: it looks the method up and calls it) asks, the plain method for every other caller —
    LangChain's sync `handle_event` would run a coroutine on a loop of its own and only log
    what it raises, so a refused call would run.
    """

    def __init__(self, plain: Callable[..., None], coroutine: Callable[..., Awaitable[None]]) -> None:
        self.plain, self.coroutine = plain, coroutine

    def __get__(self, handler: object, owner: type | None = None) -> Any:
        if handler is None:
            return self
        if sys._getframe(1).f_code is _ASYNC_DISPATCH:
            return self.coroutine.__get__(handler, owner)
        return self.plain.__get__(handler, owner)


class ToolCallRefused(ToolInvocationError):
    """A tool call Clearance refused. Inside a `ToolNode` the model gets it as an error `ToolMessage`."""

    def __init__(self, tool_name: str, text: str, tool_kwargs: dict[str, Any]) -> None:
        super().__init__(tool_name, ValueError(text), tool_kwargs)  # type: ignore[arg-type]
        self.message = text  # what ToolNode answers the model: the reason, not "fix your arguments"
        self.args = (text,)


class ToolGate(BaseCallbackHandler):
    """Governs every LangChain tool call in the process that no middleware governs.

    A callback (`configure()` registers it process-wide) that decides each call in
    `on_tool_start` and raises `ToolCallRefused` to stop one: inside a `ToolNode` (an agent
    without `ClearanceMiddleware`) the model gets the reason as an error `ToolMessage`; a tool
    invoked directly raises it. An approval is waited for (an async tool's gate awaits it in the
    event loop, which keeps running). An approver's edit cannot be applied from a callback: such a call is
    refused, and recorded as failed, with a pointer to the middleware. Calls the middleware
    governs and `@clearance.guard` functions are left to them.
    """

    raise_error = True
    # Inline: no task and no worker thread per event; see `_Gating` (without LangChain's async
    # dispatcher to recognise, a worker thread as before, so an approval never blocks the loop).
    run_inline = _ASYNC_DISPATCH is not None
    # Tool events are its only business: LangChain skips a handler for the events it ignores.
    ignore_chain = ignore_llm = ignore_chat_model = ignore_retriever = ignore_retry = ignore_custom_event = True

    def __init__(self) -> None:
        super().__init__()
        self._running: dict[UUID, tuple[Backend, Ticket, Approved | None, float]] = {}
        self._lock = threading.Lock()

    def _gated(self, serialized: Any, input_str: str, inputs: dict[str, Any] | None, kwargs: Any) -> Any:
        """The tool's name and the arguments to decide, or None when the middleware or @guard governs it."""
        name = (serialized or {}).get("name") or kwargs.get("name") or "unknown"
        if RUNNING.get() == name or name in _runtime._tools:  # the middleware or @guard governs it
            return None
        args = to_plain(dict(inputs) if isinstance(inputs, dict) else {"input": input_str})
        assert isinstance(args, dict)
        return name, args

    def _refused(self, run_id: UUID, name: str, args: dict[str, Any], text: str) -> ToolCallRefused:
        refused = ToolCallRefused(name, text, args)
        _spans.langchain_refused(run_id, refused)
        return refused

    def _started(
        self,
        run_id: UUID,
        name: str,
        args: dict[str, Any],
        governor: Backend,
        ticket: Ticket,
        approved: Approved | None,
    ) -> None:
        """Let a decided call run (keep it for its end), or raise when an approver edited it."""
        if approved is not None and approved.args is not None:
            text = (
                f"Not run: {name} was approved with edited arguments, which only ClearanceMiddleware"
                " (or a ToolNode's wrap_tool_call) can apply"
            )
            governor.finish(ticket, error=RuntimeError(text), duration_s=0.0)
            raise self._refused(run_id, name, args, text)
        with self._lock:
            self._running[run_id] = (governor, ticket, approved, time.perf_counter())

    def _on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, inputs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Decide the call; raise `ToolCallRefused` to stop it."""
        gated = self._gated(serialized, input_str, inputs, kwargs)
        if gated is None:
            return
        name, args = gated
        try:
            with _spans.langchain_run(run_id):  # the call nests under the tool's own span, when traced
                governor, ticket = _common.begin(name, args)
                approved = governor.wait(ticket) if ticket.approval_id is not None else None
        except (ToolCallBlocked, ApprovalError) as exc:
            raise self._refused(run_id, name, args, _common.refusal_text(exc)) from exc
        self._started(run_id, name, args, governor, ticket, approved)

    async def _aon_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, inputs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """`on_tool_start` in the event loop: an approval is awaited without blocking it."""
        gated = self._gated(serialized, input_str, inputs, kwargs)
        if gated is None:
            return
        name, args = gated
        try:
            with _spans.langchain_run(run_id):
                governor, ticket = _common.begin(name, args)
                approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
        except (ToolCallBlocked, ApprovalError) as exc:
            raise self._refused(run_id, name, args, _common.refusal_text(exc)) from exc
        self._started(run_id, name, args, governor, ticket, approved)

    on_tool_start = _Gating(_on_tool_start, _aon_tool_start)

    def _finish(self, run_id: UUID, error: BaseException | None, result: Any) -> None:
        with self._lock:
            running = self._running.pop(run_id, None)
        if running is not None:
            governor, ticket, _, started = running
            governor.finish(ticket, error=error, duration_s=time.perf_counter() - started, result=result)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record the result."""
        self._finish(run_id, None, _content(output) if isinstance(output, ToolMessage) else output)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record the failure."""
        self._finish(run_id, error, None)


class ModelGate(BaseCallbackHandler):
    """Stops or pauses every LangChain model call in the process while a budget is spent.

    A callback (`configure()` registers it process-wide) that checks each call in
    `on_chat_model_start` / `on_llm_start` and raises to stop it — `ModelCallBlocked`, or the
    approval's error — so the model is not called; an approval is waited for (an async model
    call's gate awaits it in the event loop). It checks the calls of agents with `ClearanceMiddleware` too.
    """

    raise_error = True
    run_inline = _ASYNC_DISPATCH is not None  # see ToolGate
    ignore_chain = ignore_agent = ignore_retriever = ignore_retry = ignore_custom_event = True  # see ToolGate

    @property
    def ignore_llm(self) -> bool:
        """Skip model events while there is nothing to check (no budgets): `before_model_call` would return at once."""
        governor = _runtime._current
        return governor is None or not governor.checks_model_calls()

    @property
    def ignore_chat_model(self) -> bool:
        """As `ignore_llm`."""
        return self.ignore_llm

    def _check(self, serialized: Any, prompts: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any) -> None:
        """Check the model call; raise to stop it."""
        with self._letting_go_when_stopped(run_id):
            _common.before_model_call(self._model(serialized, metadata, kwargs))

    async def _acheck(
        self, serialized: Any, prompts: Any, *, run_id: UUID, metadata: Any = None, **kwargs: Any
    ) -> None:
        """`_check` in the event loop: an approval is awaited without blocking it."""
        with self._letting_go_when_stopped(run_id):
            await _common.before_model_call_async(self._model(serialized, metadata, kwargs))

    on_chat_model_start = on_llm_start = _Gating(_check, _acheck)

    @staticmethod
    def _model(serialized: Any, metadata: dict[str, Any] | None, kwargs: dict[str, Any]) -> str:
        params = kwargs.get("invocation_params") or {}
        return str(
            (metadata or {}).get("ls_model_name")
            or params.get("model_name")
            or params.get("model")
            or ((serialized or {}).get("id") or ["unknown"])[-1]
        )

    @staticmethod
    @contextmanager
    def _letting_go_when_stopped(run_id: UUID) -> Iterator[None]:
        """Let go of the usage callback's request when the check stops the call.

        A stopped call never starts, so LangChain sends no on_llm_error: the usage callback
        (called before this one) lets go of the request it owned, or the raw client capture
        would stand aside in this context from now on.
        """
        try:
            yield
        except BaseException:
            usage = _USAGE.get() if _USAGE is not None else None
            if usage is not None:
                usage._end(run_id)
            raise


_USAGE: ContextVar[UsageCallback | None] | None = None
_GATE: ContextVar[ToolGate | None] | None = None
_MODEL_GATE: ContextVar[ModelGate | None] | None = None


def install() -> None:
    """Govern every LangChain tool call, gate every model call and record its usage, process-wide (idempotent)."""
    _trace.add_finder(_spans.langchain_span)  # OpenInference's LangChain spans are not in OpenTelemetry's context
    global _USAGE
    if _USAGE is not None:
        return
    # A default (not a value set in one context) so every thread and task sees the handler; it
    # keeps no per-context state that could leak between them.
    _USAGE = ContextVar("clearance_langchain_usage", default=UsageCallback())  # noqa: B039
    register_configure_hook(_USAGE, inheritable=True)
    global _GATE
    _GATE = ContextVar("clearance_langchain_gate", default=ToolGate())  # noqa: B039
    register_configure_hook(_GATE, inheritable=True)
    global _MODEL_GATE
    _MODEL_GATE = ContextVar("clearance_langchain_model_gate", default=ModelGate())  # noqa: B039
    register_configure_hook(_MODEL_GATE, inheritable=True)
