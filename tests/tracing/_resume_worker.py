"""A worker in a process of its own: runs one approved refund with `clearance.resume`, traced into Phoenix.

    python -m tests.tracing._resume_worker POLICY DATABASE OTLP_ENDPOINT PROJECT APPROVAL_ID

Clearance is configured on the asking process's store, with OpenTelemetry on and a provider of
the worker's own; the call runs under the worker's root span. Prints that span's trace and span
ids, and the result, as JSON.
"""

from __future__ import annotations

import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

import clearance
from clearance._sinks._otel import OtelSink

ROOT = "refund worker"


@clearance.guard
def issue_refund(order_id: str, amount: float) -> str:
    """The tool the agent asked for, guarded here under the same name, so its approved call can run here."""
    return f"refunded {amount} on {order_id}"


def main(policy: str, database: str, endpoint: str, project: str, approval_id: str) -> None:
    """Resume the approved call under a root span of the worker's own; export every span before returning."""
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    clearance.configure(
        policy=policy,
        database_url=database,
        agent="test-agent",
        otel=True,
        exporters=[OtelSink(tracer_provider=provider)],
    )
    with provider.get_tracer("refund-worker").start_as_current_span(ROOT) as root:
        result = clearance.resume(approval_id)
    clearance.shutdown()  # the sink's last pass: the span is made
    provider.shutdown()  # and exported
    context = root.get_span_context()
    print(
        json.dumps(
            {
                "result": result,
                "trace_id": format_trace_id(context.trace_id),
                "span_id": format_span_id(context.span_id),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
