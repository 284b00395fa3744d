"""Spans for governed calls, made off the hot path from the committed records (embedded store)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import clearance
from clearance import _decisions, _trace
from clearance._guard._governor import Governor
from clearance._sinks._otel import OtelSink
from clearance._store import EventFilter
from clearance._store._events import query

from .._wait import until

POLICY = """
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - {id: huge, when: 'args.amount > 1000', effect: block, reason: Refunds over $1000 are not allowed}
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: 10m}
redact:
  issue_refund: [/card]
"""

ALICE = _decisions.Decider("alice", trusted=True)


class Traced:
    """A tracer provider whose spans a test can read, and a tracer for the test's own spans."""

    def __init__(self, exporter: SpanExporter | None = None) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(exporter or self.memory))
        self.tracer = self.provider.get_tracer("the-agent")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.memory.get_finished_spans() if name is None or s.name == name]

    def wait_for(self, name: str, n: int = 1) -> list[ReadableSpan]:
        until(lambda: len(self.spans(name)) >= n, f"{n} span(s) named {name!r}")
        return self.spans(name)


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.provider.shutdown()


@pytest.fixture
def governed(configure: Callable[..., Governor], traced: Traced) -> Callable[..., Any]:
    """A refund tool governed with OpenTelemetry on; its sink sends to `traced`."""

    def setup(on_pending: Callable[[clearance.PendingApproval], None] | None = None, **kw: Any) -> Any:
        configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider, **kw)])
        ran: list[float] = []

        def issue_refund(order_id: str, amount: float, card: str = "4242") -> str:
            ran.append(amount)
            return f"refunded {amount}"

        tool = clearance.guard(issue_refund, on_pending=on_pending)
        tool.ran = ran
        return tool

    return setup


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_an_allowed_call_nests_under_the_span_it_was_made_in(governed: Callable[..., Any], traced: Traced) -> None:
    refund = governed()
    with traced.tracer.start_as_current_span("the framework's tool span") as outer:
        assert refund("A1", 50) == "refunded 50"
    clearance.flush()
    (span,) = traced.wait_for("execute_tool issue_refund")
    assert span.parent is not None
    assert span.parent.span_id == outer.get_span_context().span_id
    assert span.context.trace_id == outer.get_span_context().trace_id
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "issue_refund"
    assert a["clearance.decision"] == "allow"
    assert a["clearance.outcome"] == "ok"
    assert a["gen_ai.agent.name"] == "test-agent"
    assert a["clearance.args_hash"] and a["clearance.policy_revision"]
    assert "gen_ai.tool.call.arguments" not in a  # arguments only when asked for
    assert span.status.status_code is trace.StatusCode.UNSET
    decided = query(Governor_db(), EventFilter(kind="tool_call.decided"))[0].body
    assert _trace.checked(decided["trace"]) is not None
    assert int(decided["trace"][36:52], 16) == outer.get_span_context().span_id
    (outcome,) = query(Governor_db(), EventFilter(kind="tool_call.finished"))
    assert outcome.body["trace"] == decided["trace"]  # a span made from the outcome alone nests there too
    assert "asked_in" not in outcome.body


def Governor_db() -> Any:  # noqa: N802 (reads like the object it returns)
    from clearance._guard import _runtime

    governor = _runtime.current()
    assert isinstance(governor, Governor)
    return governor.db


def test_a_blocked_call_is_an_error_span_and_never_runs(governed: Callable[..., Any], traced: Traced) -> None:
    refund = governed()
    with traced.tracer.start_as_current_span("agent step"), pytest.raises(clearance.ToolCallBlocked):
        refund("A1", 5000)
    (span,) = traced.wait_for("execute_tool issue_refund")
    assert refund.ran == []
    assert span.status.status_code is trace.StatusCode.ERROR
    assert "Refunds over $1000" in (span.status.description or "")
    a = attrs(span)
    assert a["error.type"] == "clearance.blocked"
    assert a["clearance.rule_ids"] == ("huge",)


def test_an_approval_wait_is_a_span_of_its_own_with_who_decided(governed: Callable[..., Any], traced: Traced) -> None:
    def approve(p: clearance.PendingApproval) -> None:
        threading.Thread(
            target=lambda: _decisions.decide(Governor_db(), p.approval_id, approve=True, by=ALICE, note="ok")
        ).start()

    refund = governed(on_pending=approve)
    with traced.tracer.start_as_current_span("tool span") as outer:
        assert refund("A1", 300) == "refunded 300"
    clearance.flush()
    (span,) = traced.wait_for("execute_tool issue_refund")
    (wait,) = traced.wait_for("clearance.approval")
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert wait.parent is not None and wait.parent.span_id == span.context.span_id
    assert attrs(wait)["clearance.approval.by"] == "alice"
    assert attrs(wait)["clearance.approval.decision"] == "approved"
    assert attrs(wait)["clearance.wait_ms"] >= 0
    names = [e.name for e in span.events]
    assert names[:2] == ["clearance.approval.requested", "clearance.approval.decided"]
    assert "clearance.approval.resumed" in names
    assert attrs(span)["clearance.approval_id"].startswith("apr_")
    assert span.status.status_code is trace.StatusCode.UNSET
    assert span.start_time is not None and wait.start_time is not None and span.end_time is not None
    assert span.start_time <= wait.start_time and wait.end_time is not None and wait.end_time <= span.end_time


def test_a_denied_call_ends_at_the_denial(governed: Callable[..., Any], traced: Traced) -> None:
    def deny(p: clearance.PendingApproval) -> None:
        threading.Thread(
            target=lambda: _decisions.decide(Governor_db(), p.approval_id, approve=False, by=ALICE, note="no")
        ).start()

    refund = governed(on_pending=deny)
    with pytest.raises(clearance.ApprovalDenied):
        refund("A1", 300)
    (span,) = traced.wait_for("execute_tool issue_refund")
    assert refund.ran == []
    assert span.status.status_code is trace.StatusCode.ERROR
    assert attrs(span)["error.type"] == "clearance.denied"
    assert traced.spans("clearance.approval")


def test_a_call_resumed_in_another_trace_is_linked_to_where_it_was_asked(
    configure: Callable[..., Governor], traced: Traced
) -> None:
    configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider)])
    ran: list[float] = []

    @clearance.guard(approval_mode="webhook", webhook_url="http://127.0.0.1:9/hook")  # nothing runs it here
    def issue_refund(order_id: str, amount: float, card: str = "4242") -> str:
        ran.append(amount)
        return f"refunded {amount}"

    with traced.tracer.start_as_current_span("the first run") as asked:
        pending = issue_refund("A1", 300)
    assert isinstance(pending, clearance.PendingApproval)
    _decisions.decide(Governor_db(), pending.approval_id, approve=True, by=ALICE)
    with traced.tracer.start_as_current_span("the resuming worker") as resumed:
        assert clearance.resume(pending.approval_id) == "refunded 300.0"
    clearance.flush()
    spans = traced.wait_for("execute_tool issue_refund", 2)
    first = next(s for s in spans if s.context.trace_id == asked.get_span_context().trace_id)
    then = next(s for s in spans if s.context.trace_id == resumed.get_span_context().trace_id)
    assert first.parent is not None and first.parent.span_id == asked.get_span_context().span_id
    assert then.parent is not None and then.parent.span_id == resumed.get_span_context().span_id
    assert [link.context.span_id for link in then.links] == [first.context.span_id]
    assert attrs(then)["clearance.resumed"] is True
    assert attrs(then)["clearance.asked_in.span_id"] == f"{first.context.span_id:016x}"
    assert attrs(then)["clearance.asked_in.trace_id"] == f"{first.context.trace_id:032x}"
    assert ran == [300]


def test_arguments_only_when_asked_and_never_a_redacted_value(governed: Callable[..., Any], traced: Traced) -> None:
    refund = governed(args=True)
    with traced.tracer.start_as_current_span("step"):
        refund("A1", 50, card="4111-1111-1111-1111")
    clearance.flush()
    (span,) = traced.wait_for("execute_tool issue_refund")
    a = attrs(span)
    assert '"order_id":"A1"' in a["gen_ai.tool.call.arguments"].replace(" ", "")
    assert "4111" not in repr(span.to_json())
    assert a["clearance.args_redacted"] == ("/card",)


def test_hostile_text_is_shown_visibly_and_cut(configure: Callable[..., Governor], traced: Traced) -> None:
    configure(
        """
        version: 1
        default: allow
        tools:
          send:
            rules:
              - {id: r, when: 'args.address.endsWith("exe")', effect: block, reason: no executables}
        """,
        otel=True,
        exporters=[OtelSink(tracer_provider=traced.provider, args=True)],
    )

    @clearance.guard
    def send(address: str, zbody: str) -> None:
        return None

    with pytest.raises(clearance.ToolCallBlocked):
        send("report\u202etxt.exe", "x" * 100_000)
    (span,) = traced.wait_for("execute_tool send")
    shown = attrs(span)["gen_ai.tool.call.arguments"]
    assert "\u202e" not in shown and "U+202E" in shown
    assert len(shown) <= 4096


def test_usage_spans_unless_a_framework_traced_them(configure: Callable[..., Governor], traced: Traced) -> None:
    configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider)])
    with traced.tracer.start_as_current_span("agent turn") as turn:
        clearance.record_usage("gpt-4o-mini", 1200, 80, latency_ms=350.0)
    (chat,) = traced.wait_for("chat gpt-4o-mini")
    a = attrs(chat)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1200, 80)
    assert chat.parent is not None and chat.parent.span_id == turn.get_span_context().span_id
    assert chat.end_time is not None and chat.start_time is not None
    assert chat.end_time - chat.start_time == 350_000_000


def test_usage_traced_by_an_instrumentor_is_not_doubled(configure: Callable[..., Governor], traced: Traced) -> None:
    from openinference.instrumentation.langchain import LangChainInstrumentor

    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=traced.provider)
    try:
        configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider)])
        assert _trace.usage_traced() is True
        clearance.record_usage("gpt-4o-mini", 10, 5)
        configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider, usage="always")])
        clearance.record_usage("gpt-4o", 10, 5)
    finally:
        instrumentor.uninstrument()
    traced.wait_for("chat gpt-4o")
    assert traced.spans("chat gpt-4o-mini") == []
    events = query(Governor_db(), EventFilter(kind="llm.call"))
    assert [e.body.get("usage_traced") for e in events] == [True, True]


def test_without_otel_nothing_is_recorded_of_spans(configure: Callable[..., Governor], traced: Traced) -> None:
    configure(POLICY)

    @clearance.guard
    def issue_refund(order_id: str, amount: float, card: str = "4242") -> str:
        return "ok"

    with traced.tracer.start_as_current_span("step"):
        issue_refund("A1", 5)
    clearance.flush()
    assert all("trace" not in e.body for e in query(Governor_db(), EventFilter()))


class Hanging(SpanExporter):
    """An exporter whose receiver never answers: `export` blocks until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.got: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait()
        self.got.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class Raising(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise ConnectionError("the collector is down")

    def shutdown(self) -> None:
        return None


def test_an_exporter_that_hangs_never_holds_up_a_call(configure: Callable[..., Governor]) -> None:
    hanging = Hanging()
    t = Traced(hanging)  # even a synchronous processor: the spans are made on the sink's thread
    configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=t.provider)])
    refund_ran: list[int] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float, card: str = "4242") -> str:
        refund_ran.append(1)
        return "ok"

    issue_refund("A1", 1)
    clearance.flush()
    assert hanging.entered.wait(30)  # the sink is stuck inside the exporter now
    for i in range(20):
        assert issue_refund(f"A{i}", 2) == "ok"
    clearance.flush()
    assert len(refund_ran) == 21 and not hanging.got
    hanging.release.set()
    until(lambda: len(hanging.got) >= 21, "every span, once the receiver answers")


def test_an_exporter_that_raises_never_fails_a_call(configure: Callable[..., Governor]) -> None:
    raising = Raising()
    t = Traced(raising)
    configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=t.provider)])

    @clearance.guard
    def issue_refund(order_id: str, amount: float, card: str = "4242") -> str:
        return "ok"

    for i in range(5):
        assert issue_refund(f"A{i}", 2) == "ok"
    clearance.flush()
    until(lambda: raising.calls >= 5, "the exporter was tried")


def test_otel_without_opentelemetry_says_what_to_install(
    configure: Callable[..., Governor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_trace, "_get_current_span", None)
    monkeypatch.setitem(__import__("sys").modules, "opentelemetry.trace", None)
    with pytest.raises(clearance.ConfigurationError, match=r"clearance\[otel\]"):
        _trace.enable(True)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
        "00-" + "1" * 32 + "-" + "0" * 16 + "-01",
        "01-" + "1" * 32 + "-" + "1" * 16 + "-01",
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",
        "00-" + "1" * 32 + "-" + "1" * 16 + "-01\n",
        "00-" + "1" * 32 + "-" + "1" * 16 + "-01" + "x" * 10_000,
        "00-" + "\u0661" * 32 + "-" + "1" * 16 + "-01",
        12,
    ],
)
def test_a_hostile_traceparent_is_not_taken(value: object) -> None:
    assert _trace.checked(value) is None


def test_a_good_traceparent_is_taken() -> None:
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    assert _trace.checked(tp) == tp
    assert _trace.parts(tp) == (int("ab" * 16, 16), int("cd" * 8, 16), 1)
