"""LlamaIndex agents: every tool call an agent workflow makes is governed; LLM usage is recorded.

- `install()` (done by `clearance.configure()` when LlamaIndex is imported): LlamaIndex's agent
  workflows have no hook that can stop a tool call, so `BaseWorkflowAgent._call_tool` and
  `AgentWorkflow._call_tool` — where `FunctionAgent`, `ReActAgent`, `CodeActAgent` and
  multi-agent workflows call every tool — are wrapped (after a version check). A blocked or
  denied call becomes the tool's error `ToolOutput` carrying the reason, so the agent continues
  and can tell the user; an approval is awaited without blocking the event loop, and an
  approver's edit is what runs. Every LLM chat response that reports OpenAI-style usage is
  recorded through LlamaIndex's instrumentation dispatcher.

Needs `pip install "clearance[llamaindex]"`.
"""

from __future__ import annotations

from typing import Any

try:
    import llama_index.core
    from llama_index.core.agent.workflow.base_agent import BaseWorkflowAgent
    from llama_index.core.agent.workflow.multi_agent_workflow import AgentWorkflow
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
    from llama_index.core.tools import ToolOutput
    from llama_index_instrumentation import get_dispatcher
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the LlamaIndex integration needs its extra: pip install "clearance[llamaindex]"') from exc

from .._canonical import to_plain
from .._guard._recording import Recording
from .._usage import record_response_usage
from ..errors import ApprovalError, ToolCallBlocked
from ._common import begin, refusal_text
from ._patching import check_version, wrap_method


class _Recording(Recording):
    """An error `ToolOutput` counts as a failed call."""

    def outcome(self, result: Any) -> tuple[BaseException | None, Any]:
        if getattr(result, "is_error", False):
            return getattr(result, "exception", None) or RuntimeError(str(result.content)[:2000]), None
        return None, getattr(result, "content", None)


async def _governed(wrapped: Any, agent: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolOutput:
    """An agent workflow's `_call_tool`, governed."""
    return await _call_tool(wrapped, *args, **kwargs)


async def _call_tool(original: Any, ctx: Any, tool: Any, tool_input: dict[str, Any]) -> ToolOutput:
    name = tool.metadata.get_name()
    args = to_plain(dict(tool_input))
    assert isinstance(args, dict)
    try:
        governor, ticket = begin(name, args)
        approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
    except (ToolCallBlocked, ApprovalError) as exc:
        text = refusal_text(exc)
        return ToolOutput(content=text, tool_name=name, raw_input=tool_input, raw_output=text, is_error=True)
    run_input = approved.args if approved is not None and approved.args is not None else tool_input
    with _Recording(governor, ticket, approved) as recording:
        output: ToolOutput = recording.done(await original(ctx, tool, run_input))
        return output


class UsageHandler(BaseEventHandler):
    """Records the usage of each chat response whose raw provider response reports it."""

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name for the handler."""
        return "ClearanceUsageHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Record an LLM chat response's model, tokens and cost in the current session."""
        if isinstance(event, LLMChatEndEvent) and event.response is not None and event.response.raw is not None:
            record_response_usage(event.response.raw)


def install() -> None:
    """Govern every agent workflow's tool calls and record LLM usage, process-wide (idempotent).

    Raises:
        ConfigurationError: This LlamaIndex version is not one Clearance was tested with.
    """
    check_version("llama-index-core", llama_index.core.__version__, minimum=(0, 12), below=(0, 15))
    wrapped = [wrap_method(cls, "_call_tool", _governed) for cls in (BaseWorkflowAgent, AgentWorkflow)]
    if any(wrapped):
        get_dispatcher().add_event_handler(UsageHandler())
