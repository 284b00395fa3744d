"""OpenAI Agents SDK: governed function tools, a durable pause, and recorded LLM usage.

- `install()` (done by `clearance.configure()` when the SDK is installed): every `FunctionTool`
  an `Agent` offers the model is governed — tools made before or after `configure()` alike —
  and every model call's tokens, model and cost are recorded in the current session (through
  the SDK's tracing processors; streamed usage needs `ModelSettings(include_usage=True)`).
  A call that needs approval waits for it without blocking the event loop.
- `govern(agent, pause=True)`: approvals pause the run instead, the SDK's own way
  (`needs_approval` → `result.interruptions` → `RunState`), so nothing waits in memory. Save
  `result.to_state().to_string()`; once a human decides (dashboard, CLI, API, Slack), call
  `await resume(agent, saved)` in any process to continue the run.

- `ClearanceHooks()`: pass it as a run's hooks (`Runner.run(agent, input, hooks=ClearanceHooks())`,
  wrapping your own: `ClearanceHooks(my_hooks)`). While a session's or the agent's budget is
  spent, each model call of the run is stopped before the model is called (`ModelCallBlocked`)
  or waits until an approver lets it go ahead, with the reason the next tool call would get.
  The SDK has no process-wide hook before model calls, so this one is given per run.

A blocked or denied call is answered to the model as the tool's output, carrying the reason,
so the agent goes on and can tell the user (`on_block="raise"` raises instead). Decisions are
made on the arguments as the tool will receive them (850 → 850.0 for a `float` parameter), and
an approver's edited arguments are what runs.

Needs `pip install "clearance[openai-agents]"`.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import agents
    from agents import Agent, FunctionTool, RunContextWrapper, RunHooks, Runner, RunResult, RunState
    from agents.lifecycle import RunHooksBase
    from agents.tool_context import ToolContext
    from agents.tracing import Span, Trace, TracingProcessor, add_trace_processor
    from agents.tracing.span_data import GenerationSpanData, ResponseSpanData
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'the OpenAI Agents SDK integration needs its extra: pip install "clearance[openai-agents]"'
    ) from exc

from datetime import UTC

from .._guard import _runtime
from .._guard._recording import Recording
from ..errors import ApprovalError, ApprovalPending, ConfigurationError, ToolCallBlocked
from ._common import (
    OnBlock,
    before_model_call_async,
    begin,
    claim_approved,
    normalise,
    parse_json_args,
    record_model_call,
    recorded_outcome,
    refusal_text,
    status,
)
from ._patching import MARK, check_version, wrap_method
from ._pending import PendingApproval

Invoker = Callable[[ToolContext[Any], str], Awaitable[Any]]
# call id → what needs_approval decided (a ticket, or the refusal), for the invoker of the same run
_decided: OrderedDict[str, Any] = OrderedDict()
_DECIDED_KEEP = 10_000


def _remember(call_id: str, ticket: Any) -> None:
    _decided[call_id] = ticket
    while len(_decided) > _DECIDED_KEEP:
        _decided.popitem(last=False)


def _invoker(tool: FunctionTool, original: Invoker, on_block: OnBlock, pause: bool) -> Invoker:
    async def invoke(ctx: ToolContext[Any], raw: str) -> Any:
        try:
            args = normalise(parse_json_args(raw), tool.params_json_schema)
        except ValueError as exc:
            return f"Error: {tool.name} could not be called with {raw!r}: {exc}"
        approved = None
        try:
            if pause:
                ticket = _decided.pop(ctx.tool_call_id, None)
                if isinstance(ticket, (ToolCallBlocked, ApprovalError)):  # refused in needs_approval
                    raise ticket
                if ticket is None:  # resumed in another process: the approval is found by call id
                    governor, ticket = begin(tool.name, args, call_key=ctx.tool_call_id)
                else:
                    governor = _runtime.current()
                if ticket.approval_id is not None:
                    ticket, approved = claim_approved(governor, ticket)
            else:
                governor, ticket = begin(tool.name, args)
                if ticket.approval_id is not None:
                    approved = await governor.wait_async(ticket)
        except (ToolCallBlocked, ApprovalError) as exc:
            ran = recorded_outcome(exc) if isinstance(exc, ApprovalError) else None
            if ran is not None:  # a second resume of the same state: what the call returned then
                return ran
            if on_block == "raise":
                raise
            return refusal_text(exc)
        run_raw = raw if approved is None or approved.args is None else json.dumps(approved.args)
        with Recording(governor, ticket, approved) as recording:
            return recording.done(await original(ctx, run_raw))

    setattr(invoke, MARK, True)
    return invoke


def _needs_approval(tool: FunctionTool) -> Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]:
    async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        try:
            _, ticket = begin(tool.name, normalise(params, tool.params_json_schema), call_key=call_id)
        except (ToolCallBlocked, ApprovalError) as exc:
            _remember(call_id, exc)  # the invoker answers the refusal, without deciding again
            return False
        _remember(call_id, ticket)
        return ticket.approval_id is not None

    setattr(needs_approval, MARK, True)
    return needs_approval


def govern_tool(tool: FunctionTool, *, on_block: OnBlock = "message", pause: bool = False) -> FunctionTool:
    """Govern one function tool, in place (idempotent); returns it.

    Args:
        tool: The tool.
        on_block: `message` answers a blocked or denied call with the reason; `raise` raises.
        pause: Approvals pause the run (`needs_approval`) instead of waiting inside it.
    """
    if getattr(tool.on_invoke_tool, MARK, False):
        return tool
    if pause and tool.needs_approval is not False:
        raise ConfigurationError(f"{tool.name} already has needs_approval; pause=True sets its own")
    tool.on_invoke_tool = _invoker(tool, tool.on_invoke_tool, on_block, pause)
    if pause:
        tool.needs_approval = _needs_approval(tool)
    return tool


def govern(agent: Agent[Any], *, on_block: OnBlock = "message", pause: bool = False) -> Agent[Any]:
    """Govern every function tool of `agent` and of the agents it hands off to (in place); returns it.

    Call it before the first run: a tool already governed keeps how it was governed.
    """
    seen: set[int] = set()
    stack = [agent]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for tool in current.tools:
            if isinstance(tool, FunctionTool):
                govern_tool(tool, on_block=on_block, pause=pause)
        stack.extend(h for h in current.handoffs if isinstance(h, Agent))
    return agent


async def resume(agent: Agent[Any], state: str | RunState[Any, Any], **run_kwargs: Any) -> RunResult:
    """Continue a run paused on approvals, once they are all decided.

    Each interruption of a governed tool is approved or rejected in the run state as its
    Clearance approval was decided (a rejection tells the model why); then the run goes on.
    Any process can do this: the approvals live in the store, the run in `state`.

    Args:
        agent: The agent the run started with (its tools governed with `pause=True`).
        state: `result.to_state().to_string()` of the paused run, or the `RunState`.
        **run_kwargs: Passed to `Runner.run` (context, run_config, max_turns…).

    Raises:
        ApprovalPending: An approval is still undecided; nothing was resumed.
    """
    if isinstance(state, str):
        state = await RunState.from_string(agent, state)
    decisions: list[tuple[Any, str | None]] = []
    for item in state.get_interruptions():
        tool = _tool_named(agent, item.name)
        if tool is None or not getattr(tool.needs_approval, MARK, False):
            continue  # not ours: the application approves it
        try:
            args = normalise(parse_json_args(item.arguments), tool.params_json_schema)
            governor, ticket = begin(tool.name, args, call_key=str(item.call_id))
            status(governor, ticket)
            decisions.append((item, None))
        except ApprovalPending:
            raise
        except (ToolCallBlocked, ApprovalError, ValueError) as exc:
            if isinstance(exc, ApprovalError) and recorded_outcome(exc) is not None:
                # It ran already (this state was resumed before): approved, and the invoker
                # answers what it returned then.
                decisions.append((item, None))
                continue
            text = refusal_text(exc) if not isinstance(exc, ValueError) else f"Error: {exc}"
            decisions.append((item, text))
    for item, rejection in decisions:
        if rejection is None:
            state.approve(item)
        else:
            state.reject(item, rejection_message=rejection)
    return await Runner.run(agent, state, **run_kwargs)


def pending_approvals(agent: Agent[Any], state: RunResult | RunState[Any, Any]) -> list[PendingApproval]:
    """The Clearance approvals a paused run waits for (to show them, or decide them by API)."""
    items = state.interruptions if isinstance(state, RunResult) else state.get_interruptions()
    out = []
    for item in items:
        tool = _tool_named(agent, item.name)
        if tool is None or not getattr(tool.needs_approval, MARK, False):
            continue
        args = normalise(parse_json_args(item.arguments), tool.params_json_schema)
        _, ticket = begin(tool.name, args, call_key=str(item.call_id))  # found by call id: nothing new is recorded
        if ticket.approval_id is not None:
            out.append(PendingApproval(ticket.approval_id, tool.name, str(item.call_id), ticket.decision.reason))
    return out


def approval_ids(agent: Agent[Any], state: RunResult | RunState[Any, Any]) -> list[str]:
    """Deprecated: `[p.approval_id for p in pending_approvals(agent, state)]`."""
    return [p.approval_id for p in pending_approvals(agent, state)]


def _tool_named(agent: Agent[Any], name: str | None) -> FunctionTool | None:
    for tool in agent.tools:
        if isinstance(tool, FunctionTool) and tool.name == name:
            return tool
    return None


# -- model calls ---------------------------------------------------------------------------------


class ClearanceHooks(RunHooks[Any]):
    """A run's hooks that check each model call before it is made, while a budget is spent.

    `on_llm_start` stops the model call (`ModelCallBlocked`, the budget's `on_exceed: block`),
    or waits on the event loop until an approver lets it go ahead (`require_approval`; a denial
    raises `ApprovalDenied`), with the reason, rule and approvers the next tool call would get.
    Costs next to nothing when the policy has no budgets. Every hook of `hooks`, if given, is
    called as usual.

    Args:
        hooks: Your own run hooks.
    """

    def __init__(self, hooks: RunHooksBase[Any, Any] | None = None) -> None:
        self.hooks = hooks

    async def on_llm_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], system_prompt: str | None, input_items: list[Any]
    ) -> None:
        """Check the model call; raise to stop it. Then your hooks' `on_llm_start`."""
        await before_model_call_async(_model_of(agent.model))
        if self.hooks is not None:
            await self.hooks.on_llm_start(context, agent, system_prompt, input_items)


def _passing_on(name: str) -> Callable[..., Awaitable[None]]:
    async def hook(self: ClearanceHooks, *args: Any, **kwargs: Any) -> None:
        if self.hooks is not None:
            await getattr(self.hooks, name)(*args, **kwargs)

    hook.__name__ = hook.__qualname__ = name
    hook.__doc__ = f"Your hooks' `{name}`."
    return hook


# Every other hook, this SDK version's and any later one's, goes to the hooks it wraps.
for _name in [n for n in vars(RunHooksBase) if n.startswith("on_") and n != "on_llm_start"]:
    setattr(ClearanceHooks, _name, _passing_on(_name))


def _model_of(model: Any) -> str | None:
    """The model's name: as the agent names it, or as its `Model` object knows it (None: the run's default)."""
    if model is None or isinstance(model, str):
        return model
    return str(getattr(model, "model", None) or type(model).__name__)


# -- usage ---------------------------------------------------------------------------------------


class UsageProcessor(TracingProcessor):
    """Records each model call's usage from the SDK's generation and response spans."""

    def on_trace_start(self, trace: Trace) -> None:
        """Nothing to do."""

    def on_trace_end(self, trace: Trace) -> None:
        """Nothing to do."""

    def on_span_start(self, span: Span[Any]) -> None:
        """Nothing to do."""

    def on_span_end(self, span: Span[Any]) -> None:
        """Record the usage a finished model span carries."""
        data = span.span_data
        if isinstance(data, GenerationSpanData) and data.usage:
            usage: Any = data.usage
            model = data.model
        elif isinstance(data, ResponseSpanData) and data.response is not None and data.response.usage is not None:
            usage = data.response.usage.model_dump()
            model = data.response.model
        else:
            return
        details_in = usage.get("input_tokens_details") or {}
        details_out = usage.get("output_tokens_details") or {}
        record_model_call(
            model,
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            details_in.get("cached_tokens"),
            details_out.get("reasoning_tokens"),
            started=_started(span),
        )

    def shutdown(self) -> None:
        """Nothing to do."""

    def force_flush(self) -> None:
        """Nothing to do."""


def _started(span: Span[Any]) -> float | None:
    """The span's start on the `time.perf_counter()` clock, for the call's latency."""
    from datetime import datetime

    if not span.started_at:
        return None
    ago = datetime.now(UTC) - datetime.fromisoformat(span.started_at)
    return time.perf_counter() - ago.total_seconds()


async def _governing_tools(wrapped: Any, agent: Agent[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """`Agent.get_all_tools`, each function tool governed in place."""
    tools: list[Any] = await wrapped(*args, **kwargs)
    for tool in tools:
        if isinstance(tool, FunctionTool):
            govern_tool(tool)
    return tools


def install() -> None:
    """Govern every agent's function tools and record every model call's usage, process-wide (idempotent).

    The SDK has no run-level tool hook, so `Agent.get_all_tools` — where every run collects the
    tools it offers the model — is wrapped to govern each function tool in place.

    Raises:
        ConfigurationError: This SDK version is not one Clearance was tested with.
    """
    check_version("openai-agents", agents.__version__, minimum=(0, 20), below=(1, 0))
    if wrap_method(Agent, "get_all_tools", _governing_tools):
        add_trace_processor(UsageProcessor())
