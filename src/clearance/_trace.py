"""Trace context: which span a call was made in, kept on its records as a W3C `traceparent`.

The hot path only reads the current span's context (no span is made there): the records carry
it, and the spans are emitted later, off the hot path, by the OpenTelemetry sink
(`_sinks/_otel.py`) from the committed records. So tracing costs a call one context read, and an
exporter that is down or hangs holds up only the sink's thread.

A traceparent is `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`. One that comes from
outside (a request header, a shipped record) is taken only when it has exactly that form and
non-zero ids (`checked`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError

_PARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_enabled = False
_get_current_span: Any = None
_finders: list[Callable[[], Any]] = []


def enable(on: bool) -> None:
    """Record the current span's context on calls from now on (`on`), or stop.

    Raises:
        ConfigurationError: `on` and OpenTelemetry is not installed.
    """
    global _enabled, _get_current_span
    if on and _get_current_span is None:
        try:
            from opentelemetry.trace import get_current_span
        except ImportError:
            raise ConfigurationError(
                "otel=True needs OpenTelemetry: pip install 'clearance[otel]' (and an exporter of your choice)"
            ) from None
        _get_current_span = get_current_span
    _enabled = on


def enabled() -> bool:
    """Whether calls record the span they were made in."""
    return _enabled


def add_finder(find: Callable[[], Any]) -> None:
    """Ask `find()` for the current span before OpenTelemetry's context (once however often added).

    For a framework whose instrumentation keeps its spans outside the OpenTelemetry context
    (OpenInference's LangChain tracer, say): `find` returns the framework's span the call is
    made in, or None. One that raises counts as None.
    """
    if find not in _finders:
        _finders.append(find)


def current() -> str | None:
    """The current span's context as a traceparent, or None (tracing off, or no valid span)."""
    if not _enabled:
        return None
    span = None
    for find in _finders:
        try:
            span = find()
        except Exception:  # a framework's lookup must never fail the call
            span = None
        if span is not None:
            break
    ctx = (span if span is not None else _get_current_span()).get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def checked(value: object) -> str | None:
    """`value` when it is a well-formed traceparent with non-zero ids (version 00), else None."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    found = _PARENT.fullmatch(value)
    if found is None or int(found[1], 16) == 0 or int(found[2], 16) == 0:
        return None
    return value


def parts(traceparent: str) -> tuple[int, int, int]:
    """Trace id, span id and flags of a traceparent that `checked` accepted."""
    return int(traceparent[3:35], 16), int(traceparent[36:52], 16), int(traceparent[53:55], 16)


def span_context(traceparent: str) -> Any:
    """The remote `SpanContext` a traceparent that `checked` accepted names (OpenTelemetry installed)."""
    from opentelemetry.trace import SpanContext, TraceFlags

    trace, span, flags = parts(traceparent)
    return SpanContext(trace, span, is_remote=True, trace_flags=TraceFlags(flags))


def trace_id(traceparent: str) -> str:
    """The trace id (32 hex digits) of a traceparent that `checked` accepted."""
    return traceparent[3:35]


# Instrumentations that put a model call's usage on a span of their own (`gen_ai.usage.*`, or
# OpenInference's `llm.token_count.*`): every OpenInference one, and OpenTelemetry's own for these.
_GENAI_OTEL = ("openai", "anthropic", "langchain", "llamaindex", "google_genai", "vertexai", "bedrock", "mistralai")


def usage_traced() -> bool:
    """Whether a GenAI instrumentor is on here, which traces model calls' usage on spans of its own.

    Read when a model call's usage is recorded (not the tool-call hot path), so a framework
    instrumented after `configure()` counts. A framework that traces its own model calls
    (Google ADK) says so where its usage is recorded instead.
    """
    try:
        from opentelemetry.instrumentation import instrumentor
    except ImportError:
        return False
    base: Any = vars(instrumentor)["BaseInstrumentor"]  # mypy does not see the class in its stubs
    pending: list[type[Any]] = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        instance = cls.__dict__.get("_instance")  # the instrumentor is a singleton per class
        if instance is not None and instance.is_instrumented_by_opentelemetry and _genai(cls.__module__):
            return True
    return False


def _genai(module: str) -> bool:
    if module.startswith("openinference.instrumentation."):
        return True
    if module.startswith("opentelemetry.instrumentation."):
        name = module.split(".")[2]
        return any(name.startswith(n) for n in _GENAI_OTEL)
    return False
