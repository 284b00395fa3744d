"""AG2: a middleware that governs every tool call and records every model call's usage.

- `ClearanceMiddleware`: pass it to `Agent(..., middleware=[ClearanceMiddleware])` (AG2 makes one
  per turn). Each tool call is decided in `on_tool_execution` on the call's arguments; a blocked
  or denied call is answered with a `ToolResultEvent` carrying the reason, so the agent
  continues and can tell the user; an approval is awaited without blocking the event loop, and
  an approver's edit is what runs. Each model response's usage (prompt, completion, cache
  reads and writes, thinking tokens) is recorded with its model and cost.
- `install()` (done by `clearance.configure()` when AG2 is imported): AG2 has no process-wide
  middleware, so every `Agent` made afterwards gets this one (unless it has it).

Needs `pip install "clearance[ag2]"`.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from typing import Any

try:
    from ag2 import Agent
    from ag2.events import ToolResultEvent
    from ag2.middleware import BaseMiddleware
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the AG2 integration needs its extra: pip install "clearance[ag2]"') from exc

from .._canonical import to_plain
from .._guard._recording import Recording
from ..errors import ApprovalError, ToolCallBlocked
from ._common import begin, record_model_call, refusal_text
from ._patching import check_version, wrap_method
from ._usage_owner import owned


class _Recording(Recording):
    """A `ToolErrorEvent` counts as a failed call."""

    def outcome(self, result: Any) -> tuple[BaseException | None, Any]:
        error = getattr(result, "error", None)
        if isinstance(error, BaseException):
            return error, None
        return None, getattr(getattr(result, "result", None), "content", None) or str(getattr(result, "result", ""))


class ClearanceMiddleware(BaseMiddleware):
    """Governs an AG2 agent's tool calls and records its model calls' usage."""

    async def on_tool_execution(self, call_next: Any, event: Any, context: Any) -> Any:
        """Decide; wait for an approval if needed; run (maybe as edited) and record."""
        try:
            args = json.loads(event.arguments or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            return ToolResultEvent.from_call(
                event, result=f"Error: the arguments of {event.name} are not a JSON object"
            )
        plain = to_plain(args)
        assert isinstance(plain, dict)
        try:
            governor, ticket = begin(event.name, plain)
            approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
        except (ToolCallBlocked, ApprovalError) as exc:
            return ToolResultEvent.from_call(event, result=refusal_text(exc))
        if approved is not None and approved.args is not None:
            event = copy.copy(event)  # as AG2's own `handled_by` copies a call
            event.arguments = json.dumps(approved.args)
            event.serialized_arguments = dict(approved.args)
        with _Recording(governor, ticket, approved) as recording:
            return recording.done(await call_next(event, context))

    async def on_llm_call(self, call_next: Any, events: Sequence[Any], context: Any) -> Any:
        """Record the response's usage in the current session.

        The call runs under `owned("ag2")`: the raw `openai`/`anthropic` client capture under
        AG2's model clients records nothing for it (one `llm.call` per request).
        """
        started = time.perf_counter()
        with owned("ag2"):
            response = await call_next(events, context)
        usage = getattr(response, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            record_model_call(
                response.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cache_read_input_tokens,
                usage.thinking_tokens,
                provider=response.provider,
                started=started,
            )
        return response


def _with_middleware(wrapped: Any, agent: Agent[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`Agent.__init__` with the Clearance middleware added to the chain."""
    chain = list(kwargs.pop("middleware", ()))
    if ClearanceMiddleware not in chain:  # one given explicitly stands: never two
        chain.append(ClearanceMiddleware)
    wrapped(*args, middleware=chain, **kwargs)


def install() -> None:
    """Give every AG2 `Agent` made from now on the Clearance middleware (idempotent).

    Raises:
        ConfigurationError: This AG2 version is not one Clearance was tested with.
    """
    import importlib.metadata

    check_version("ag2", importlib.metadata.version("ag2"), minimum=(1, 0), below=(2, 0))
    wrap_method(Agent, "__init__", _with_middleware)
