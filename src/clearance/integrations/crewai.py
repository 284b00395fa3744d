"""CrewAI: global tool-call hooks that fail closed, and recorded LLM usage.

`install()` (done by `clearance.configure()` when CrewAI is imported) registers a global
before-tool-call hook and after-tool-call hook. Each tool call is decided on its arguments; a
call that needs approval waits for it (CrewAI's hooks are synchronous), and an approver's edit
replaces the arguments the tool gets. A blocked or denied call does not run, and the model is
told the reason (the after hook replaces CrewAI's fixed "blocked" text with it).

CrewAI's hooks fail open — an exception in a hook is swallowed and the tool runs — so every
error inside the hook is caught here and the call is blocked instead: nothing runs ungoverned.
LLM usage is recorded from CrewAI's `LLMCallCompletedEvent` on its event bus (the raw `openai` /
`anthropic` client capture stands aside inside CrewAI's LLM calls: one `llm.call` per request).

Needs `pip install "clearance[crewai]"`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

try:
    import crewai
    from crewai.events import crewai_event_bus
    from crewai.events.types.llm_events import LLMCallCompletedEvent
    from crewai.hooks import register_after_tool_call_hook, register_before_tool_call_hook
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the CrewAI integration needs its extra: pip install "clearance[crewai]"') from exc

from .._canonical import to_plain
from ..errors import ApprovalError, ToolCallBlocked
from ._common import begin, record_model_call, refusal_text
from ._patching import check_version
from ._usage_owner import add_probe

log = logging.getLogger("clearance")
_lock = threading.Lock()
# The dict CrewAI passes to both hooks of one call → what the before hook decided.
_calls: dict[int, tuple[Any, Any, float] | str] = {}


def before_tool_call(ctx: Any) -> bool | None:
    """Decide the call; False blocks it. Never raises: an error blocks the call (fail closed)."""
    try:
        args = to_plain(dict(ctx.tool_input or {}))
        assert isinstance(args, dict)
        governor, ticket = begin(ctx.tool_name, args)
        approved = governor.wait(ticket) if ticket.approval_id is not None else None
        if approved is not None and approved.args is not None:
            ctx.tool_input.clear()
            ctx.tool_input.update(approved.args)  # the dict the tool is called with
        with _lock:
            _calls[id(ctx.tool_input)] = (governor, ticket, time.perf_counter())
        return None
    except (ToolCallBlocked, ApprovalError) as exc:
        text = refusal_text(exc)
    except Exception as exc:  # CrewAI would swallow it and run the tool: block instead
        log.exception("Clearance could not decide a %s call; it is blocked", getattr(ctx, "tool_name", "?"))
        text = f"Blocked: Clearance could not decide this call ({type(exc).__name__}: {exc})"
    with _lock:
        _calls[id(ctx.tool_input)] = text
    return False


def after_tool_call(ctx: Any) -> str | None:
    """Record the result; for a refused call, tell the model why instead of CrewAI's fixed text."""
    try:
        with _lock:
            decided = _calls.pop(id(ctx.tool_input), None)
        if isinstance(decided, str):
            return decided
        if decided is not None:
            governor, ticket, started = decided
            raw = ctx.raw_tool_result if ctx.raw_tool_result is not None else ctx.tool_result
            governor.finish(ticket, error=None, duration_s=time.perf_counter() - started, result=raw)
    except Exception:  # recording must never break the crew
        log.exception("Clearance could not record a %s call's result", getattr(ctx, "tool_name", "?"))
    return None


def _in_crewai_llm_call() -> str | None:
    """The owner inside one of CrewAI's LLM calls ("crewai"): its `LLMCallCompletedEvent` records the usage.

    CrewAI runs every LLM call in `llm_call_context()` (a call id in a context variable), around
    its native OpenAI and Anthropic providers and LiteLLM alike; the raw client capture under
    them then stands aside — one `llm.call` per request.
    """
    return "crewai" if _current_call_id is not None and _current_call_id.get() is not None else None


try:  # private: a CrewAI without it loses only this de-duplication, never its tool hooks
    from crewai.llms.base_llm import _current_call_id
except ImportError:  # pragma: no cover - CrewAI versions before 1.15
    _current_call_id = None


def _record_usage(source: Any, event: LLMCallCompletedEvent) -> None:
    usage = event.usage or {}
    if usage:
        record_model_call(
            event.model,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or usage.get("cached_prompt_tokens"),
            (usage.get("completion_tokens_details") or {}).get("reasoning_tokens"),
        )


_installed = False


def install() -> None:
    """Register the hooks and the usage listener, process-wide (idempotent).

    Raises:
        ConfigurationError: This CrewAI version is not one Clearance was tested with.
    """
    global _installed
    if _installed:
        return
    check_version("crewai", crewai.__version__, minimum=(1, 0), below=(2, 0))
    register_before_tool_call_hook(before_tool_call)
    register_after_tool_call_hook(after_tool_call)
    crewai_event_bus.on(LLMCallCompletedEvent)(_record_usage)
    add_probe(_in_crewai_llm_call)
    _installed = True
