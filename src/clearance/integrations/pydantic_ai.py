"""Pydantic AI: a capability that governs every tool call and records every model request's usage.

- `Clearance()`: a Pydantic AI capability (`Agent(..., capabilities=[Clearance()])`). It wraps the
  toolset each run assembles — function tools, MCP toolsets and any other toolset alike — in a
  `GovernedToolset` (a `WrapperToolset`), so every call is decided on the arguments the tool
  receives (validated: 850 → 850.0 for a `float` parameter) before it runs. A blocked or denied
  call fails the Pydantic AI way (`ToolFailed`): the model gets the reason and the run goes on
  (`on_block="raise"` raises instead). An approval is awaited without blocking the event loop,
  and an approver's edited arguments are what runs. Output functions (`output_type=fn`) act
  too: they are decided the same way before they run (`wrap_output_process`). Each model request is checked against the
  budgets first (a spent one stops it, `ModelCallBlocked`, or waits for an approver) and its
  tokens, model and cost are recorded once, as an `llm.call` in the current session.
- `Clearance(pause=True)`: an approval ends the run instead, with Pydantic AI's own
  `DeferredToolRequests` (give the agent `output_type=[str, DeferredToolRequests]`), so nothing
  waits in memory. Save `result.all_messages_json()`; once a human decides (dashboard, CLI, API,
  Slack), `await resume(agent, saved)` continues the run in any process. The approval decides:
  approved → the call runs once, as edited; denied → the model is told why.
- `install()` (done by `clearance.configure()` when Pydantic AI is imported): every run of every
  `Agent`, made before or after `configure()`, gets `Clearance()` unless the agent or the run has
  one. Pydantic AI has no process-wide capability registry, so `Agent.iter` — where `run`,
  `run_sync` and `run_stream` all start a run, and which takes a run's extra `capabilities` — is
  wrapped (the one patch) to add it to the run's capabilities; nothing else is patched. A
  durable agent (Temporal, DBOS, Prefect) refuses per-run capabilities: give it `Clearance()`.

Needs `pip install "clearance[pydantic-ai]"`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

try:
    import pydantic_ai
    from pydantic_ai import (
        Agent,
        AgentRunResult,
        ApprovalRequired,
        CallDeferred,
        DeferredToolRequests,
        DeferredToolResults,
        ModelMessagesTypeAdapter,
        RunContext,
        ToolApproved,
        ToolDenied,
    )
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.capabilities.abstract import WrapOutputProcessHandler
    from pydantic_ai.exceptions import ModelRetry, ToolFailed
    from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolCallPart
    from pydantic_ai.models import Model, ModelRequestContext, ModelRequestParameters, StreamedResponse
    from pydantic_ai.models.batch import BatchRequest, BatchResult
    from pydantic_ai.models.wrapper import WrapperModel
    from pydantic_ai.output import OutputContext
    from pydantic_ai.settings import ModelSettings
    from pydantic_ai.toolsets import AbstractToolset, WrapperToolset
    from pydantic_ai.toolsets.abstract import ToolsetTool
    from pydantic_ai.usage import RequestUsage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(  # installed but older than 2.68 fails here too: say what was missing
        f'the Pydantic AI integration needs its extra: pip install "clearance[pydantic-ai]" ({exc})'
    ) from exc

from .._canonical import to_plain
from .._guard import _runtime
from .._guard._backend import Backend
from .._guard._recording import Recording
from ..errors import ApprovalAlreadyExecuted, ApprovalError, ApprovalPending, ConfigurationError, ToolCallBlocked
from ._common import (
    OnBlock,
    before_model_call_async,
    begin,
    claim_approved,
    normalise,
    paused_call_key,
    record_model_call,
    recorded_outcome,
    refusal_text,
)
from ._patching import check_version, wrap_method
from ._pending import PendingApproval
from ._usage_owner import owned

CLEARANCE_APPROVAL = "clearance_approval"  # the key of the approval id in a deferred call's metadata


@dataclass
class GovernedToolset(WrapperToolset[Any]):
    """A toolset whose every call is decided by Clearance before the wrapped toolset runs it.

    Attributes:
        on_block: `message` answers a blocked or denied call with the reason; `raise` raises.
        pause: An approval defers the call (`ApprovalRequired`) instead of waiting for it.
    """

    on_block: OnBlock = "message"
    pause: bool = False

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        """Decide the call; wait for (or defer to) an approval; run it as approved, recording its outcome."""
        args = normalise(tool_args, tool.tool_def.parameters_json_schema)
        approved = None
        try:
            if self.pause:
                # Keyed by the model's tool-call id: a resumed run finds the call's approval again.
                governor, ticket = begin(name, args, call_key=_call_key(ctx.conversation_id, ctx.tool_call_id))
                if ticket.approval_id is not None:
                    try:
                        ticket, approved = claim_approved(governor, ticket)
                    except ApprovalPending:
                        meta = {CLEARANCE_APPROVAL: ticket.approval_id, "reason": ticket.decision.reason}
                        raise ApprovalRequired(metadata=meta) from None
            else:
                governor, ticket = begin(name, args)
                if ticket.approval_id is not None:
                    approved = await governor.wait_async(ticket)
        except (ToolCallBlocked, ApprovalError) as exc:
            ran = recorded_outcome(exc) if isinstance(exc, ApprovalError) else None
            if ran is not None:  # it ran already (a second resume): the model gets what it returned
                return ran
            if self.on_block == "raise":
                raise
            raise ToolFailed(_refusal(exc)) from None
        with Recording(governor, ticket, approved) as recording:
            if approved is not None and approved.args is not None:  # an approver's edit, validated like the model's
                tool_args = _validated(name, tool, approved.args, ctx)
            try:
                result = await self.wrapped.call_tool(name, tool_args, ctx, tool)
            except (ApprovalRequired, CallDeferred):
                recording.recorded = True  # deferred by the toolset itself: it has not run
                raise
            return recording.done(result)


def _refusal(exc: ToolCallBlocked | ApprovalError) -> str:
    """What the model is told of a call that does not run here; one approved and running elsewhere is not refused."""
    if isinstance(exc, ApprovalAlreadyExecuted) and exc.status == "approved":  # claimed by a concurrent resume
        return (
            f"{exc.tool} was approved and is running in another process ({exc.claimed_by}) now;"
            " its result is not known here: do not call it again"
        )
    return refusal_text(exc)


def _validated(name: str, tool: ToolsetTool[Any], args: dict[str, Any], ctx: RunContext[Any]) -> dict[str, Any]:
    """Edited arguments as the tool takes them (850 → 850.0), or a failure the model reads (and is recorded).

    Raises:
        ToolFailed: They do not fit the tool's parameters.
    """
    try:
        validated: dict[str, Any] = tool.args_validator.validate_python(args, context=ctx.validation_context)
    except ValidationError as exc:
        raise ToolFailed(f"Error: the approved arguments do not fit {name}: {exc.error_count()} problem(s)") from exc
    return validated


@dataclass
class Clearance(AbstractCapability[Any]):
    """Governs an agent's tool calls and records its model requests' usage.

    Attributes:
        on_block: `message` (default) answers a blocked or denied call with the reason, as a
            failed tool result the model reads; `raise` raises `ToolCallBlocked` / the approval's
            error out of the run instead.
        pause: Approvals end the run with `DeferredToolRequests` (continue it with `resume`)
            instead of being awaited inside it.
    """

    on_block: OnBlock = "message"
    pause: bool = False

    @classmethod
    def get_serialization_name(cls) -> str | None:
        """Not in agent specs: Clearance is configured in code (`clearance.configure()`)."""
        return None

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        """The run's toolset, governed."""
        return GovernedToolset(toolset, on_block=self.on_block, pause=self.pause)

    def get_wrapper_model(self, model: Model) -> Model | None:
        """The model serving a request, its usage recorded here (once per request, not by the raw client)."""
        return None if isinstance(model, UsageRecordingModel) else UsageRecordingModel(model)

    async def before_model_request(
        self, ctx: RunContext[Any], request_context: ModelRequestContext
    ) -> ModelRequestContext:
        """Stop the request, or wait until an approver lets it go ahead, while a budget is spent."""
        await before_model_call_async(getattr(request_context.model, "model_name", None))
        return request_context

    async def wrap_output_process(
        self, ctx: RunContext[Any], *, output_context: OutputContext, output: Any, handler: WrapOutputProcessHandler
    ) -> Any:
        """An output function acts on the model's arguments like a tool: decided and recorded before it runs.

        It is decided under its function's name, on its arguments (a multi-argument function's
        dict, else `{"output": value}`); a refusal is a `ModelRetry` the model reads (or, with
        `on_block="raise"`, raised). An approval is awaited, in pause mode too (Pydantic AI
        cannot defer an output). A streamed partial output is not run (only the whole one).
        """
        if not output_context.has_function:
            return await handler(output)
        if ctx.partial_output:  # the function would run on every partial output, each time with other arguments
            raise ModelRetry("Clearance runs an output function on the complete output only")
        name = output_context.function_name or "output_function"
        schema = output_context.object_def.json_schema if output_context.object_def is not None else None
        args = normalise(output, schema) if isinstance(output, dict) else {"output": to_plain(output)}
        try:
            governor, ticket = begin(name, args)
            approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
        except (ToolCallBlocked, ApprovalError) as exc:
            if self.on_block == "raise":
                raise
            raise ModelRetry(refusal_text(exc)) from None
        with Recording(governor, ticket, approved) as recording:
            if approved is not None and approved.args is not None:
                # Nothing validates an output function's arguments past this point: an edit cannot run.
                raise ModelRetry(
                    f"Not approved: {name}'s approver edited its arguments, which an output function cannot take"
                )
            return recording.done(await handler(output))


class UsageRecordingModel(WrapperModel):
    """Records each request's usage (model, tokens) as one `llm.call` in the current session.

    Requests are made inside `owned("pydantic_ai")`, so the raw `openai` client capture below
    them records nothing: a stream is opened, and read, in the task that iterates it, which this
    model's `request_stream` runs in.
    """

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """The wrapped model's response, its usage recorded."""
        started = time.perf_counter()
        with owned("pydantic_ai"):
            response = await self.wrapped.request(messages, model_settings, model_request_parameters)
        if response.state != "suspended" or response.usage.input_tokens or response.usage.output_tokens:
            # (a batched or background request answers "suspended", without tokens, until its result is in)
            _record(response.model_name or self.model_name, response.usage, response.provider_name, started)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        """The wrapped model's stream; its usage is recorded when it closes, as far as it was read."""
        started = time.perf_counter()
        with owned("pydantic_ai"):
            async with self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            ) as stream:
                try:
                    yield stream
                finally:
                    _record(stream.model_name or self.model_name, stream.usage, stream.provider_name, started)

    def batch_decode(self, result: BatchResult, request: BatchRequest) -> ModelResponse:
        """A batched request's response (`BatchModelRequests`), its usage recorded: it never went through `request`."""
        response = self.wrapped.batch_decode(result, request)
        _record(response.model_name or self.model_name, response.usage, response.provider_name, None)
        return response


def _record(model: str, usage: RequestUsage, provider: str | None, started: float | None) -> None:
    record_model_call(
        model,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.output_reasoning_tokens,
        provider=provider,
        started=started,
    )


# -- durable pause -------------------------------------------------------------------------------


def load_messages(messages: bytes | str | Sequence[ModelMessage]) -> list[ModelMessage]:
    """A run's message history: as saved (`result.all_messages_json()`), or the messages themselves."""
    if isinstance(messages, (bytes, str)):
        return ModelMessagesTypeAdapter.validate_json(messages)
    return list(messages)


def pending_calls(messages: Sequence[ModelMessage]) -> list[ToolCallPart]:
    """The tool calls of the run's last model response that have no result yet (the deferred ones)."""
    answered: set[str] = set()
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            answered.update(getattr(p, "tool_call_id", "") for p in message.parts)
        elif isinstance(message, ModelResponse):
            return [p for p in message.tool_calls if p.tool_call_id not in answered]
    return []


def deferred_results(
    messages: bytes | str | Sequence[ModelMessage], answered: DeferredToolResults | None = None
) -> DeferredToolResults:
    """The `DeferredToolResults` that continue a run paused on Clearance approvals, from their decisions.

    Each pending call is found by its tool-call id (no new record is made for it): an approved
    call is approved (it then runs once, as edited, claimed when it runs); a denied, expired or
    blocked one is denied with the reason; one that already ran (a second resume) is approved,
    and the model gets its recorded result without it running again.

    Args:
        messages: The paused run's messages (`result.all_messages_json()`, or the list).
        answered: Results for calls your application deferred itself; they are left as given.

    Raises:
        ApprovalPending: An approval is still undecided (nothing should be resumed yet).
    """
    results = DeferredToolResults()
    if answered is not None:
        results.update(answered)
    history = load_messages(messages)
    for call in pending_calls(history):
        key = call.tool_call_id
        if key in results.approvals or key in results.calls:
            continue
        try:
            governor, approval_id = _approval_of(call, _conversation(history))
            if approval_id is None:
                raise ConfigurationError(
                    f"tool call {key!r} ({call.tool_name}) is not waiting on a Clearance approval:"
                    " answer it in `answered`"
                )
            governor.approved_call(approval_id)
            results.approvals[key] = ToolApproved()
        except ApprovalPending:
            raise
        except (ToolCallBlocked, ApprovalError) as exc:
            ran = recorded_outcome(exc) if isinstance(exc, ApprovalError) else None
            # a call that ran is approved again: the governed toolset answers its recorded result
            results.approvals[key] = ToolApproved() if ran is not None else ToolDenied(_refusal(exc))
    return results


async def resume(
    agent: Agent[Any, Any],
    messages: bytes | str | Sequence[ModelMessage],
    *,
    answered: DeferredToolResults | None = None,
    **run_kwargs: Any,
) -> Any:
    """Continue a run paused on Clearance approvals, once they are all decided; the run's result.

    Any process can do this: the approvals live in the store, the run in `messages`. The agent
    must be governed with `Clearance(pause=True)` (its tools run through it again: an approved
    call claims its approval and runs exactly once; resuming the same messages again gives the
    model the recorded result instead of running it twice).

    Args:
        agent: The agent the run started with.
        messages: The paused run's `result.all_messages_json()` (or its messages).
        answered: Results for deferred calls of your own (not Clearance's), passed on as given.
        **run_kwargs: Passed to `agent.run` (deps, usage_limits…).

    Raises:
        ApprovalPending: An approval is still undecided; nothing was resumed.
    """
    history = load_messages(messages)
    results = deferred_results(history, answered)
    return await agent.run(message_history=history, deferred_tool_results=results, **run_kwargs)


def _call_key(conversation: str | None, tool_call_id: str | None) -> str | None:
    """A paused call's key in the store: its tool-call id within its conversation (`paused_call_key`)."""
    return paused_call_key(tool_call_id, conversation)


def _conversation(messages: Sequence[ModelMessage]) -> str | None:
    """The conversation a run on these messages continues (as Pydantic AI resolves it: the latest one named)."""
    return next((m.conversation_id for m in reversed(messages) if m.conversation_id is not None), None)


def _approval_of(call: ToolCallPart, conversation: str | None) -> tuple[Backend, str | None]:
    """The backend, and the Clearance approval a deferred call waits on (None: the call is not Clearance's).

    Found by its tool-call id, deciding nothing. A Clearance server cannot look it up yet: it is
    asked with `begin`, which finds the approval by the same key (and decides a call it never saw).

    Raises:
        ToolCallBlocked: (asked with `begin`) Policy blocks the call.
        ApprovalError: (asked with `begin`) The key's approval holds other arguments.
    """
    governor = _runtime.current()
    key = _call_key(conversation, call.tool_call_id)
    if key is None:
        return governor, None
    try:
        return governor, governor.approval_of(key)
    except NotImplementedError:
        governor, ticket = begin(call.tool_name, to_plain(call.args_as_dict()), call_key=key)
        return governor, ticket.approval_id


def pending_approvals(
    messages: bytes | str | Sequence[ModelMessage] | AgentRunResult[Any],
    *,
    requests: DeferredToolRequests | None = None,
) -> list[PendingApproval]:
    """The Clearance approvals a paused run waits for (to show them, or decide them by API).

    Args:
        messages: The paused run's result, or its messages (`result.all_messages_json()`, or the list).
        requests: The run's `DeferredToolRequests` (`result.output`), for each approval's `reason`
            (taken from its metadata; given the result, its output is used). Without it, `reason`
            is None: the messages do not hold it.
    """
    if isinstance(messages, AgentRunResult):
        if requests is None and isinstance(messages.output, DeferredToolRequests):
            requests = messages.output
        messages = messages.all_messages()
    out = []
    history = load_messages(messages)
    for call in pending_calls(history):
        try:
            approval_id = _approval_of(call, _conversation(history))[1]
        except (ToolCallBlocked, ApprovalError):
            continue
        if approval_id is not None:
            reason = _reason_of(requests, call.tool_call_id, approval_id)
            out.append(PendingApproval(approval_id, call.tool_name, call.tool_call_id, reason))
    return out


def _reason_of(requests: DeferredToolRequests | None, call_id: str, approval_id: str) -> str | None:
    """The reason Clearance filed in the deferred call's metadata, if it is filed under this approval."""
    meta = requests.metadata.get(call_id) if requests is not None else None
    if not isinstance(meta, Mapping) or meta.get(CLEARANCE_APPROVAL) != approval_id:
        return None  # from another run, or not Clearance's
    reason = meta.get("reason")
    return reason if isinstance(reason, str) else None


def approval_ids(messages: bytes | str | Sequence[ModelMessage]) -> list[str]:
    """Deprecated: `[p.approval_id for p in pending_approvals(messages)]`."""
    return [p.approval_id for p in pending_approvals(messages)]


# -- process-wide --------------------------------------------------------------------------------


def _left_alone(agent: Agent[Any, Any], extra: Sequence[Any] | None) -> bool:
    """Whether a run is not given `Clearance()`: it has one already, or it is durable.

    A durable agent (Temporal, DBOS, Prefect) refuses capabilities added per run: give it
    `Clearance()` at construction instead. Until then its tool calls are not governed, which is
    said loudly, once per agent.
    """
    found: list[AbstractCapability[Any]] = []
    agent.root_capability.apply(found.append)
    for capability in extra or ():
        if isinstance(capability, AbstractCapability):
            capability.apply(found.append)
    if any(isinstance(c, Clearance) for c in found):
        return True
    if any(type(c).__module__.startswith(_DURABLE) for c in found):
        if id(agent) not in _warned:
            _warned.add(id(agent))
            weakref.finalize(agent, _warned.discard, id(agent))  # an agent made later at its address is new
            log.warning(
                "Clearance does not govern the durable Pydantic AI agent %r: a durable agent refuses "
                "capabilities added per run; give it Clearance() when you build it",
                agent.name,
            )
        return True
    return False


_DURABLE = "pydantic_ai.durable_exec"
_warned: set[int] = set()  # the durable agents warned of (Agent is not hashable)
log = logging.getLogger("clearance")


def _with_clearance(wrapped: Any, agent: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`Agent.iter`, with `Clearance()` among the run's capabilities unless it has one."""
    if isinstance(agent, Agent) and not _left_alone(agent, kwargs.get("capabilities")):
        kwargs["capabilities"] = [*(kwargs.get("capabilities") or ()), Clearance()]
    return wrapped(*args, **kwargs)


def install() -> None:
    """Govern every run of every Pydantic AI agent, process-wide (idempotent).

    Raises:
        ConfigurationError: This Pydantic AI version is not one Clearance was tested with.
    """
    check_version("pydantic-ai-slim", pydantic_ai.__version__, minimum=(2, 68), below=(3, 0))
    wrap_method(Agent, "iter", _with_clearance)
