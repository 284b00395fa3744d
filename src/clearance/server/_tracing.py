"""The server's own OpenTelemetry (`CLEARANCE_OTEL`): its requests, where spans go, approvers' decisions.

- Each request is a server span (FastAPI's instrumentation) that continues the caller's
  `traceparent`: a remote agent sends its own, so the check of a call is in the agent's trace.
  Not traced: the probes, `/metrics`, the dashboard's files, and the long-lived requests (the
  agents' policy long poll, the approvals stream), which would be noise held open for minutes.
- The spans go to the process's tracer provider when it has one (`opentelemetry-instrument`,
  or an application that embeds the API); else to one made from the standard environment
  (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_EXPORTER`, `OTEL_SERVICE_NAME`, …), so setting
  the endpoint is all `clearance serve` needs.
- What a client sends (path, query, user agent, a captured header, an exception's message) is on
  a span only made `visible`, bounded, and never a credential (`_visible_spans`): the
  instrumentation and the spans here go through a tracer provider wrapping the process's, also
  when `opentelemetry-instrument` instrumented the app first. With header capture on
  (`OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`/`_RESPONSE`), the API key,
  `Authorization`, the session cookie and the CSRF token are redacted, beside what
  `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS` names. A failure marks a span of
  ours with `error.type` and a visible message, without an exception event.
- An approver's decision is a span of its request (`deciding`), linked to the span the call was
  asked in. The calls' own `execute_tool` spans are made from the audit log by the OpenTelemetry
  sink (`_sinks._otel`), which the app runs beside the configured ones.
- The store's transactions are spans (`store`): the statements go through the driver's
  connections directly (`_store._db`), which SQLAlchemy's instrumentation never sees, so a read
  or write transaction inside a traced request is a `CLIENT` span of its own. One outside any
  trace (the group commit's thread, the sweeper) is not.

With `otel` off nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from .. import _otel_env, _trace
from .._store import Database
from .._store._approvals import Approval
from .._version import __version__
from .._visible import visible
from ..errors import ConfigurationError
from ._settings import ServerSettings

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanKind

log = logging.getLogger("clearance.server")

# Matched against `scheme://host/path` (no query): the path's end, so no other route is left out.
_UNTRACED = (
    r"://[^/]*/(healthz|readyz|metrics)$",
    r"://[^/]*/assets/",
    r"://[^/]*/v1/policy/snapshot$",
    r"://[^/]*/v1/approvals/stream$",
)
_SERVICE = "clearance-server"
_SCOPE = "clearance.server"


def fastapi_options(settings: ServerSettings) -> dict[str, Any]:
    """FastAPI's own telemetry off, where FastAPI has it (0.165 on), unless `otel` (which instruments).

    FastAPI traces requests, and logs and counts them, whenever the process has the providers;
    with `otel` off the server sends none of it (and nothing with a request's raw, unescaped path
    or an exception's message).
    """
    if settings.otel or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "logs": False, "metrics": False}}


def install(app: FastAPI, settings: ServerSettings) -> None:
    """Trace the app's requests when `settings.otel`, through the process's tracer provider.

    Raises:
        ConfigurationError: `otel` and OpenTelemetry is not installed, or `OTEL_TRACES_EXPORTER`
            names an exporter that is not.
    """
    if not settings.otel:
        return
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        raise ConfigurationError(
            "CLEARANCE_OTEL=true needs OpenTelemetry: pip install 'clearance[otel]' (and an exporter,"
            " e.g. opentelemetry-exporter-otlp-proto-http)"
        ) from None
    from ._visible_spans import SECRET_HEADERS, VisibleTracerProvider, check

    try:
        check()
    except Exception as exc:
        raise ConfigurationError(
            f"this OpenTelemetry's spans cannot be wrapped to show what clients send visibly ({exc!r});"
            " pin opentelemetry-api to a release Clearance supports, or run with CLEARANCE_OTEL=false"
        ) from None

    _otel_env.provide(_SERVICE, default_otlp=True)
    own = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
    # The user's list is kept: passing one makes the instrumentation ignore the variable.
    sanitized = os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "").split(",")
    options = dict(getattr(app, "_instrument_kwargs", None) or {})  # FastAPIInstrumentor().instrument(...)'s
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        # `opentelemetry-instrument` instrumented the app when it was made: again, through ours.
        FastAPIInstrumentor.uninstrument_app(app)
        app.middleware_stack = None  # built by uninstrument_app; built again on the first request
    options |= {
        "excluded_urls": ",".join(filter(None, (*_UNTRACED, own))),
        "tracer_provider": VisibleTracerProvider(options.get("tracer_provider")),
        "http_capture_headers_sanitize_fields": [*(f.strip() for f in sanitized if f.strip()), *SECRET_HEADERS],
    }
    FastAPIInstrumentor.instrument_app(app, **options)
    instrumented = app.build_middleware_stack
    app.build_middleware_stack = lambda: _Decodable(instrumented())  # type: ignore[method-assign]


class _Decodable:
    r"""Before the instrumentation: a query string and header values it can decode.

    OpenTelemetry's ASGI middleware decodes the query string as UTF-8, and a header value as
    UTF-8 or else as `unicode_escape`: bytes that are neither (`?q=%ff` sent raw, a user agent
    `\x` followed by 0xff) raise inside it, and the request would end in a 500. Such bytes are
    written as `%XX` instead, for the whole request: the app reads both as Latin-1 text, so only
    hostile values read differently, and only with tracing on.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            query = scope.get("query_string") or b""
            headers = scope.get("headers") or ()
            clean_query, clean_headers = _utf8(query), [(k, _utf8(v)) for k, v in headers]
            if clean_query is not query or any(
                a is not b for (_, a), (_, b) in zip(clean_headers, headers, strict=True)
            ):
                scope = {**scope, "query_string": clean_query, "headers": clean_headers}
        await self.app(scope, receive, send)


def _utf8(raw: bytes) -> bytes:
    """`raw` itself when it is UTF-8, else with each byte that is not written `%XX`."""
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
        return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in text).encode("utf-8")


@contextlib.contextmanager
def deciding(request: Request, approval_id: str, *, approve: bool, by: str) -> Iterator[Callable[[Approval], None]]:
    """A `clearance.approval.decide` span around an approver's decision, in the request's trace.

    Yields what to call with the decided approval: the span gets its status and a link to the span
    the call was asked in (`Approval.trace`). A decision that fails marks the span with its error.
    With the server's `otel` off, no span (and nothing imported).
    """
    if not request.app.state.settings.otel:
        yield _untraced
        return
    from opentelemetry import trace

    attributes = {
        "clearance.approval_id": visible(approval_id)[:200],  # as sent: an exporter takes only UTF-8
        "clearance.approval.decision": "approve" if approve else "deny",
        "clearance.approval.by": visible(by)[:200],
    }
    with _span("clearance.approval.decide", trace.SpanKind.INTERNAL, attributes) as span:

        def decided(approval: Approval) -> None:
            span.set_attribute("clearance.approval.status", str(approval.status))
            asked = _trace.checked(approval.trace)
            if asked is not None:
                span.add_link(_trace.span_context(asked), {"clearance.link": "asked"})

        yield decided


def store(settings: ServerSettings) -> type[Database]:
    """The store class the app opens: `Database`, or with `otel` one whose transactions are spans."""
    return _TracedDatabase if settings.otel else Database


class _TracedDatabase(Database):
    """A store whose read and write transactions inside a traced request are spans of it."""

    @contextlib.contextmanager
    def write(self, *, pipelined: bool = False) -> Iterator[Any]:  # noqa: D102
        with _transaction(self, "write"), super().write(pipelined=pipelined) as cur:
            yield cur

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:  # noqa: D102
        with _transaction(self, "read"), super().read() as cur:
            yield cur


@contextlib.contextmanager
def _transaction(db: Database, kind: str) -> Iterator[None]:
    """A span for one transaction, under the current span when it is recording (else none)."""
    from opentelemetry import trace

    if not trace.get_current_span().is_recording():
        yield
        return
    attributes = {"db.system.name": db.dialect, "db.operation.name": kind}  # no text a client sent
    with _span(f"{kind} clearance-store", trace.SpanKind.CLIENT, attributes):
        yield


@contextlib.contextmanager
def _span(name: str, kind: SpanKind, attributes: dict[str, str]) -> Iterator[Span]:
    """A span of the server's own, current while it lasts; a failure marks it with its error.

    Not as `start_as_current_span` records one: the exception's message and stack trace (an
    `ApprovalNotFound` holds the id a client sent, a database error the values) would be on the span
    as they are. The type is `error.type`; the message, visible and bounded, the status's description.
    """
    from opentelemetry import trace

    from ._visible_spans import VisibleTracer, error_type, text

    tracer = VisibleTracer(trace.get_tracer(_SCOPE, __version__))
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", error_type(exc))
            span.set_status(trace.StatusCode.ERROR, text(f"{type(exc).__name__}: {exc}"))
            raise


def _untraced(approval: Approval) -> None:
    """Tracing is off: nothing to note."""
