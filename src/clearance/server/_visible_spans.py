"""Spans a person can read: every text on the server's spans made `visible`, bounded, credentials kept off.

The server's request spans are made by FastAPI's instrumentation from what a client sends: the
path, the query, the user agent, the Host, the headers it is told to capture
(`OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`), an exception's message. Whatever
was sent, a span the server makes shows no hidden or direction-changing character (`_visible`),
holds no lone surrogate or NUL that would make an exporter fail on the whole batch, no text
longer than `MAX_TEXT`, and no API key, session cookie or CSRF token.

How: the instrumentation (and the server's own spans) get a tracer provider of ours that wraps the
process's; each span started through it is a `VisibleSpan` around the real one, and its name,
every attribute key and value, event, link, status description and recorded exception passes
through here on its way in. A span processor could not do it: `on_start` sees only the attributes a
span starts with, `on_end` a span that can no longer change, and the route, the status, the
response's headers and an exception's event come in between; it would also see every span of the
process, not only the server's.

Imported only when the server's `otel` is on.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util import types

try:  # what the API's and SDK's tracers use (private): a plain context manager does as well
    from opentelemetry.util._decorator import _agnosticcontextmanager
except ImportError:  # pragma: no cover (a newer OpenTelemetry)
    from contextlib import contextmanager as _agnosticcontextmanager  # type: ignore[assignment, unused-ignore]

from .._visible import visible

log = logging.getLogger("clearance.server")

MAX_TEXT = 4096
REDACTED = "[REDACTED]"
UNSHOWN = "[not shown]"  # what a text becomes when showing it failed: never the raw text
# The headers that carry a credential: given to the instrumentation to redact when it captures them.
SECRET_HEADERS = ("x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie", "x-csrf-token")
# And as the attributes it makes of them (`http.request.header.x_api_key`): redacted here too.
_SECRET_KEYS = frozenset(
    f"http.{side}.header.{name.replace('-', '_')}" for side in ("request", "response") for name in SECRET_HEADERS
)


def text(value: str, *, tail: bool = False) -> str:
    """`value` made visible and at most `MAX_TEXT` long: its start, or with `tail` its end.

    Never raises (a request must not fail for its span): `UNSHOWN` when it cannot be shown.
    """
    try:
        if tail:
            return visible(value[-MAX_TEXT:])[-MAX_TEXT:]
        return visible(value[:MAX_TEXT])[:MAX_TEXT]
    except Exception:
        return UNSHOWN


def error_type(exc: BaseException) -> str:
    """The exception's class as OpenTelemetry names it: `clearance.errors.ApprovalNotFound`, `ValueError`."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _value(key: str, value: types.AttributeValue) -> types.AttributeValue:
    if key.lower() in _SECRET_KEYS:
        return REDACTED if isinstance(value, str) else [REDACTED]
    if isinstance(value, str):
        return text(value, tail=key == "exception.stacktrace")  # a stack trace's end says where it was raised
    if isinstance(value, Sequence) and any(isinstance(v, str) for v in value):
        return [text(v) if isinstance(v, str) else v for v in value]  # type: ignore[return-value]
    return value


def shown(given: types.Attributes) -> types.Attributes:
    """Every key and string value made `visible` and bounded; a credential header's value redacted.

    Never raises: what cannot be shown is left out.
    """
    if not given:
        return given
    try:
        return {text(k): _value(k, v) for k, v in given.items()}
    except Exception:
        return {"clearance.attributes": UNSHOWN}


class VisibleSpan(trace.Span):
    """A span whose every text passes through `text` and `shown` before the real one has it."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __getattr__(self, name: str) -> Any:
        # The SDK span's own properties (`kind`, `attributes`, …), which the instrumentation reads.
        if name == "_span":
            raise AttributeError(name)
        return getattr(self._span, name)

    def end(self, end_time: int | None = None) -> None:  # noqa: D102
        self._span.end(end_time)

    def get_span_context(self) -> trace.SpanContext:  # noqa: D102
        return self._span.get_span_context()

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:  # noqa: D102
        self._span.set_attributes(shown(attributes) or {})

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:  # noqa: D102
        self._span.set_attribute(text(key), _value(key, value))

    def add_event(  # noqa: D102
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        self._span.add_event(text(name), shown(attributes), timestamp)

    def add_link(self, context: trace.SpanContext, attributes: types.Attributes = None) -> None:  # noqa: D102
        self._span.add_link(context, shown(attributes))

    def update_name(self, name: str) -> None:  # noqa: D102
        self._span.update_name(text(name))

    def is_recording(self) -> bool:  # noqa: D102
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:  # noqa: D102
        if isinstance(status, Status):
            if status.description:
                status = Status(status.status_code, text(status.description))
            self._span.set_status(status)
        else:
            self._span.set_status(status, None if description is None else text(description))

    def record_exception(  # noqa: D102
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # As the SDK records one (its message and stack trace are the exception's own text, which
        # may hold what a client sent), with every text through `attributes`.
        recorded: dict[str, types.AttributeValue] = {
            "exception.type": error_type(exception),
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        self.add_event("exception", {**recorded, **(attributes or {})}, timestamp)


class VisibleTracer(trace.Tracer):
    """A tracer whose spans are `VisibleSpan`s."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(  # noqa: D102
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        try:
            links = [Link(link.context, shown(link.attributes)) for link in links] if links else links
            span = self._tracer.start_span(
                text(name),
                context,
                kind,
                shown(attributes),
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            )
            return VisibleSpan(span)
        except Exception as exc:  # a request must not fail for its span: it goes untraced
            log.warning("a span could not be made visibly, the request goes untraced: %r", exc)
            return trace.INVALID_SPAN

    @_agnosticcontextmanager
    def start_as_current_span(  # noqa: D102
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def check() -> None:
    """Make a visible span once, at start: raises when this OpenTelemetry no longer lets us wrap one."""
    span = VisibleSpan(trace.INVALID_SPAN)
    span.set_attribute("clearance.check", "\u202e")
    span.end()


class VisibleTracerProvider(trace.TracerProvider):
    """Tracers of `provider` (by default the process's, looked up when asked) whose spans are `VisibleSpan`s."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._provider = provider

    def get_tracer(  # noqa: D102
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> trace.Tracer:
        provider = self._provider or trace.get_tracer_provider()
        return VisibleTracer(
            provider.get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )
