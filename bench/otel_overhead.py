"""What tracing costs a governed call (issue 15's targets). Prints figures; asserts nothing.

The same allowed call (10 rules, its record committed to SQLite before the tool runs), under a
span as a framework's tool span would be, in alternating slices:

- OpenTelemetry off: `configure()` without `otel`;
- on: `otel=True`, the spans made by the sink from the records, through a `TracerProvider` with
  a `BatchSpanProcessor` and the OTLP/HTTP exporter sending to a receiver on 127.0.0.1;
- the alternative it replaces, for comparison: the same span made on the call's own thread
  (start, twelve attributes, end, through the same batching processor), as a tracer in the
  guard itself would.

Target: with OTel on, the median overhead grows by at most 15 us; off, by nothing measurable
(`_trace.current()` with tracing off is timed on its own too).

    .venv/bin/python bench/otel_overhead.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import clearance
from clearance import _trace
from clearance._sinks._otel import OtelSink

sys.path.insert(0, str(Path(__file__).parent))
from guard_overhead import ARGS, POLICY, issue_refund, pct, timings  # noqa: E402


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that takes every export and counts the bytes."""

    received = 0

    def do_POST(self) -> None:  # noqa: N802 (the handler's API)
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        Receiver.received += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    n = parser.parse_args().calls
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("the-framework")

    with tempfile.TemporaryDirectory() as tmp:
        policy_path = Path(tmp) / "p.yaml"
        policy_path.write_text(POLICY)
        db = str(Path(tmp) / "bench.db")

        def configured(otel: bool) -> None:
            exporters = [OtelSink(tracer_provider=provider)] if otel else []
            clearance.configure(policy=str(policy_path), database_url=db, agent="bench", otel=otel, exporters=exporters)

        configured(False)
        guarded = clearance.guard(issue_refund)

        def under_a_span(k: int) -> list[int]:
            with tracer.start_as_current_span("the framework's tool span"):
                return timings(lambda: guarded(**ARGS), k)

        live = provider.get_tracer("clearance-inline")

        def inline_span() -> None:
            """The alternative: the span made on the call's thread, around the call."""
            span = live.start_span("execute_tool issue_refund")
            for key, value in ATTRIBUTES.items():
                span.set_attribute(key, value)
            guarded(**ARGS)
            span.end()

        def inline(k: int) -> list[int]:
            with tracer.start_as_current_span("the framework's tool span"):
                return timings(inline_span, k)

        bare = timings(lambda: issue_refund(**ARGS), n)
        under_a_span(2000)  # warm up
        off: list[int] = []
        on: list[int] = []
        alternative: list[int] = []
        slices = 4
        for _ in range(slices):
            configured(False)
            off += under_a_span(n // slices)
            alternative += inline(n // slices)
            configured(True)
            on += under_a_span(n // slices)
        clearance.flush()
        clearance.shutdown()  # the sink delivers the rest
        provider.force_flush()
        _trace.enable(False)
        disabled = timings(_trace.current, n)
        _trace.enable(True)
        with tracer.start_as_current_span("a span"):
            enabled = timings(_trace.current, n)
        _trace.enable(False)
        provider.shutdown()
        server.shutdown()

    base = statistics.median(bare) / 1000
    print(f"guarded allowed call under a span, 10 rules, record committed (SQLite WAL), {n} calls per row")
    print(f"  OTel off           overhead median {pct(off, 0.5) - base:8.2f} us   p99 {pct(off, 0.99) - base:8.2f} us")
    print(f"  OTel on (sink)     overhead median {pct(on, 0.5) - base:8.2f} us   p99 {pct(on, 0.99) - base:8.2f} us")
    print(f"    difference       median {pct(on, 0.5) - pct(off, 0.5):+8.2f} us   (target: at most +15 us)")
    print(
        f"  span made inline   overhead median {pct(alternative, 0.5) - base:8.2f} us"
        f"   p99 {pct(alternative, 0.99) - base:8.2f} us   (the alternative, for comparison)"
    )
    print(f"    difference       median {pct(alternative, 0.5) - pct(off, 0.5):+8.2f} us")
    print(
        f"  _trace.current()   off median {pct(disabled, 0.5) * 1000:6.0f} ns"
        f"   on (under a span) {pct(enabled, 0.5) * 1000:6.0f} ns"
    )
    print(f"  the receiver took {Receiver.received / 1e6:.1f} MB of spans")


ATTRIBUTES = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "issue_refund",
    "gen_ai.tool.type": "function",
    "gen_ai.tool.call.id": "call_0123456789abcdef",
    "gen_ai.agent.name": "bench",
    "gen_ai.conversation.id": "ses_0123456789abcdef",
    "clearance.call_id": "call_0123456789abcdef",
    "clearance.environment": "test",
    "clearance.decision": "allow",
    "clearance.reason": "no rule matched",
    "clearance.policy_revision": "rev_0123456789abcdef",
    "clearance.args_hash": "0" * 64,
}


if __name__ == "__main__":
    main()
