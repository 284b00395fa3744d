"""The framework span a governed call is made in, where the framework's tracing keeps it out of OpenTelemetry's context.

Clearance's `execute_tool` span is parented on the span current when the call is decided
(`_trace.current()`). Most instrumentations make their spans current in OpenTelemetry's
context, so nothing is needed for them: the Agents SDK through OpenInference (its processor
attaches each SDK span's OpenTelemetry span, so a call nests under the SDK's function span)
and Google ADK (its `execute_tool` span is started as current). OpenInference's LangChain
tracer does not attach its spans (a callback cannot detach safely), so `langchain_span` finds
the LangChain run's span for `_trace.add_finder`:

- `ClearanceMiddleware` decides before the tool's own run starts (a blocked call never gets
  one), inside the ToolNode's run: the call nests under the node's span (`tools`), beside the
  tool's own span.
- `ToolGate` decides in the tool run's `on_tool_start` (`langchain_run` names that run): the
  call nests under the tool's own span. LangChain never ends a run it refuses there, so
  `langchain_refused` ends that span as failed (else it would never be exported).
- A guarded function called inside a tool's body nests under that tool's span.

A span of your own opened inside the framework's (around a guarded call in a tool's body)
is the deeper one, so it wins: the framework's span is used only when it started later than
OpenTelemetry's current span.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

try:
    from opentelemetry.trace import get_current_span
except ImportError:  # pragma: no cover - tracing is off without it, so the finder is never asked
    get_current_span = None  # type: ignore[assignment]

_OPENINFERENCE_LANGCHAIN = "openinference.instrumentation.langchain"
_RUN: ContextVar[UUID | None] = ContextVar("clearance_langchain_run", default=None)


@contextmanager
def langchain_run(run_id: UUID) -> Iterator[None]:
    """Calls decided inside this block are made in the LangChain run `run_id` (a callback's own run)."""
    token = _RUN.set(run_id)
    try:
        yield
    finally:
        _RUN.reset(token)


def langchain_refused(run_id: UUID, error: BaseException) -> None:
    """End OpenInference's span of a tool run a callback refused, as failed with `error`.

    LangChain ends no run whose `on_tool_start` callback raised (no `on_tool_error` follows),
    so its span would never be exported and Clearance's span for the call would be orphaned.
    """
    instrumentor = _instrumentor()
    tracer = getattr(instrumentor, "_tracer", None)  # OpenInference's callback handler (private: guarded)
    if tracer is None:
        return
    try:
        tracer.on_tool_error(error, run_id=run_id)
    except Exception:  # its tracing must never change what the refusal does
        return


def _instrumentor() -> Any:
    """OpenInference's LangChain instrumentor while it is on, else None (cheap: it runs on the hot path)."""
    module = sys.modules.get(_OPENINFERENCE_LANGCHAIN)
    if module is None:
        return None
    instrumentor = module.LangChainInstrumentor.__dict__.get("_instance")  # a singleton, once made
    if instrumentor is None or not instrumentor.is_instrumented_by_opentelemetry:
        return None
    return instrumentor


def langchain_span() -> Any:
    """OpenInference's span of the current LangChain run, or None: not traced, no run, or a deeper span is current.

    Cheap when OpenInference's LangChain instrumentation is not imported or not on: it runs on
    every governed call while tracing is on.
    """
    instrumentor = _instrumentor()
    if instrumentor is None:
        return None
    run_id = _RUN.get()
    span = sys.modules[_OPENINFERENCE_LANGCHAIN].get_current_span() if run_id is None else instrumentor.get_span(run_id)
    if span is None or get_current_span is None:
        return None
    current_start = getattr(get_current_span(), "start_time", None)
    if isinstance(current_start, int) and current_start > span.start_time:
        return None  # the span current in OpenTelemetry's context started inside the run's: it is deeper
    return span
