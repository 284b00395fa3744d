"""OpenAI Agents SDK: governed function tools, a durable pause, and recorded LLM usage.

- `install()` (done by `clearance.configure()` when the SDK is installed): every `FunctionTool`
  an `Agent` offers the model is governed — tools made before or after `configure()` alike —
  and every model call's tokens, model and cost are recorded in the current session, tracing
  on or off (streamed usage needs `ModelSettings(include_usage=True)`; see `_recorded_response`).
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

import importlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

try:
    import agents
    from agents import Agent, FunctionTool, RunContextWrapper, RunHooks, Runner, RunResult, RunState
    from agents.lifecycle import RunHooksBase
    from agents.tool_context import ToolContext
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'the OpenAI Agents SDK integration needs its extra: pip install "clearance[openai-agents]"'
    ) from exc

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
from ._imports import when_imported
from ._patching import MARK, check_version, wrap_method
from ._pending import PendingApproval
from ._usage_owner import owned

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


# The SDK's built-in models: the OpenAI ones now, the extensions' when the application imports them.
_MODELS = {
    "agents.models.openai_chatcompletions": "OpenAIChatCompletionsModel",
    "agents.models.openai_responses": "OpenAIResponsesModel",
    "agents.extensions.models.litellm_model": "LitellmModel",
    "agents.extensions.models.any_llm_model": "AnyLLMModel",
}
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


async def _recorded_response(wrapped: Any, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`Model.get_response`, recorded: one `llm.call` per model request, from the SDK's `ModelResponse`.

    The model's own usage is recorded, not its tracing spans' (so usage is recorded with tracing
    disabled, as it usually is against other providers), and the request runs under
    `owned("agents")`: the raw `openai` client capture underneath (the OpenAI models, LiteLLM's
    OpenAI provider) records nothing for it. Context variables follow the request into the
    SDK's awaits, and stay unset outside it.
    """
    started = time.perf_counter()
    with owned("agents"):
        response = await wrapped(*args, **kwargs)
    _record_usage(model, None, response.usage, started)
    return response


async def _recorded_stream(
    wrapped: Any, model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    """`Model.stream_response`, recorded from its final `response.completed` event; every event passed on.

    Each step runs under `owned("agents")` and leaves it before the event is yielded, so the
    owner never leaks into the code consuming the stream.
    """
    started = time.perf_counter()
    events = wrapped(*args, **kwargs)
    try:
        while True:
            with owned("agents"):
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    return
            if getattr(event, "type", None) in _FINAL and (response := getattr(event, "response", None)) is not None:
                _record_usage(model, getattr(response, "model", None), getattr(response, "usage", None), started)
            yield event
    finally:
        await events.aclose()


def _record_usage(model: Any, reported: str | None, usage: Any, started: float) -> None:
    """Record a model call's usage; nothing when it reported none (a stream without `include_usage`)."""
    tokens = getattr(usage, "input_tokens", 0) or 0, getattr(usage, "output_tokens", 0) or 0
    if not any(tokens):
        return
    name = str(reported or getattr(model, "model", None) or "unknown")
    provider, _, bare = name.rpartition("/")  # LiteLLM's "anthropic/claude-…": the provider, then the model
    record_model_call(
        bare,
        *tokens,
        getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", 0),
        getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0),
        provider=provider or None,
        started=started,
    )


def _recording_usage(module: str) -> Callable[[], None]:
    def install() -> None:
        model = getattr(importlib.import_module(module), _MODELS[module])
        wrap_method(model, "get_response", _recorded_response)
        wrap_method(model, "stream_response", _recorded_stream)

    return install


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
    wrap_method(Agent, "get_all_tools", _governing_tools)
    for module in _MODELS:
        when_imported(module, _recording_usage(module))
