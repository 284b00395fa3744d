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
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import clearance
from clearance import _trace
from clearance._sinks._otel import OtelSink
from clearance.sinks import status

sys.path.insert(0, str(Path(__file__).parent))
from guard_overhead import ARGS, POLICY, issue_refund, pct, timings  # noqa: E402


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that takes every export and counts the bytes (in a process of its own)."""

    received = 0

    def do_POST(self) -> None:  # noqa: N802 (the handler's API)
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        Receiver.received += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        body = str(Receiver.received).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def receive() -> None:
    """Run the receiver (`--receive`): print its port, serve until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.receive:
        receive()
        return
    n = options.calls
    # The receiver runs in a process of its own, so its CPU is not counted as the agent's.
    receiver = subprocess.Popen([sys.executable, __file__, "--receive"], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    port = int(receiver.stdout.readline())
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("the-framework")

    with tempfile.TemporaryDirectory() as tmp:
        policy_path = Path(tmp) / "p.yaml"
        policy_path.write_text(POLICY)
        db = str(Path(tmp) / "bench.db")

        opened = itertools.count()

        def configured(otel: bool) -> None:
            # Each sink new (it starts at the newest event): it traces only the calls of its own slice.
            exporters = [OtelSink(tracer_provider=provider, name=f"otel-{next(opened)}")] if otel else []
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

        def drained() -> None:
            """Wait (asleep: no CPU) until the sink has made every span, then until they are exported."""
            clearance.flush()
            while any(s.backlog for s in status()):
                time.sleep(0.01)
            provider.force_flush()

        cpu = {"off": 0.0, "on": 0.0, "inline": 0.0}  # the process's CPU seconds: every thread's

        def timed(which: str, run: Callable[[int], list[int]], k: int) -> list[int]:
            started = time.process_time()
            out = run(k)
            drained()
            cpu[which] += time.process_time() - started
            return out

        bare = timings(lambda: issue_refund(**ARGS), n)
        under_a_span(2000)  # warm up
        off: list[int] = []
        on: list[int] = []
        alternative: list[int] = []
        slices = 8
        for _ in range(slices):
            configured(False)
            off += timed("off", under_a_span, n // slices)
            alternative += timed("inline", inline, n // slices)
            configured(True)
            on += timed("on", under_a_span, n // slices)
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
        received = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/").read())
        receiver.kill()

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
        f"  CPU per call (all threads, export included)   off {cpu['off'] / len(off) * 1e6:6.1f} us"
        f"   on {cpu['on'] / len(on) * 1e6:6.1f} us   inline {cpu['inline'] / len(alternative) * 1e6:6.1f} us"
    )
    print(
        f"  _trace.current()   off median {pct(disabled, 0.5) * 1000:6.0f} ns"
        f"   on (under a span) {pct(enabled, 0.5) * 1000:6.0f} ns"
    )
    print(f"  the receiver took {received / 1e6:.1f} MB of spans")


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
