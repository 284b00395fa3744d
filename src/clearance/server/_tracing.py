"""The server's own OpenTelemetry (`CLEARANCE_OTEL`): its requests, where spans go, approvers' decisions.

- Each request is a server span (FastAPI's instrumentation) that continues the caller's
  `traceparent`: a remote agent sends its own, so the check of a call is in the agent's trace.
  Not traced: the probes, `/metrics`, the dashboard's files, and the long-lived requests (the
  agents' policy long poll, the approvals stream), which would be noise held open for minutes.
- The spans go to the process's tracer provider when it has one (`opentelemetry-instrument`,
  or an application that embeds the API); else to one made from the standard environment
  (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_EXPORTER`, `OTEL_SERVICE_NAME`, …), so setting
  the endpoint is all `clearance serve` needs.
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
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request

from .. import _otel_env, _trace
from .._store import Database
from .._store._approvals import Approval
from .._version import __version__
from .._visible import visible
from ..errors import ConfigurationError
from ._settings import ServerSettings

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
    _otel_env.provide(_SERVICE, default_otlp=True)
    own = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
    FastAPIInstrumentor.instrument_app(app, excluded_urls=",".join(filter(None, (*_UNTRACED, own))))


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

    tracer = trace.get_tracer(_SCOPE, __version__)
    attributes = {
        "clearance.approval_id": visible(approval_id)[:200],  # as sent: an exporter takes only UTF-8
        "clearance.approval.decision": "approve" if approve else "deny",
        "clearance.approval.by": visible(by)[:200],
    }
    with tracer.start_as_current_span("clearance.approval.decide", attributes=attributes) as span:

        def decided(approval: Approval) -> None:
            span.set_attribute("clearance.approval.status", str(approval.status))
            asked = _trace.checked(approval.trace)
            if asked is not None:
                trace_id, span_id, flags = _trace.parts(asked)
                context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
                span.add_link(context, {"clearance.link": "asked"})

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
    tracer = trace.get_tracer(_SCOPE, __version__)
    attributes = {"db.system.name": db.dialect, "db.operation.name": kind}
    with tracer.start_as_current_span(f"{kind} clearance-store", kind=trace.SpanKind.CLIENT, attributes=attributes):
        yield


def _untraced(approval: Approval) -> None:
    """Tracing is off: nothing to note."""
