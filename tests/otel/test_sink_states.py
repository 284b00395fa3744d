"""The OpenTelemetry sink's calls, record by record: how each ends, what is held and for how long.

The records are built as the guard and the decisions build them (`make_event`) and handed to
the sink as the event sink engine does; the spans come out of the real OpenTelemetry SDK and
are encoded with the real OTLP encoder, so what a receiver would refuse fails here.
"""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import clearance
from clearance._clock import ManualClock
from clearance._guard._governor import Governor
from clearance._sinks import Record
from clearance._sinks._otel import OtelSink
from clearance._store._events import make_event

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ELSEWHERE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_seq = itertools.count(1)


def record(kind: str, at_us: int, **fields: Any) -> Record:
    event = make_event(kind, at_us, {"agent": "bot", "environment": "test", "session": "s", **fields})
    return Record(next(_seq), event.id, kind, at_us, event.body)


def decided(call: str, at: int, decision: str = "require_approval", **more: Any) -> Record:
    return record(
        "tool_call.decided",
        at,
        tool="refund",
        call_id=call,
        decision=decision,
        reason="big refund",
        rule_ids=["big"],
        policy_revision="rev_1",
        args_hash="0" * 64,
        trace=PARENT,
        **({"approval_id": f"apr_{call}"} if decision == "require_approval" else {}),
        **more,
    )


def requested(call: str, at: int, on_timeout: str = "deny") -> Record:
    return record(
        "approval.requested",
        at,
        tool="refund",
        call_id=call,
        approval_id=f"apr_{call}",
        approvers=["role:lead"],
        on_timeout=on_timeout,
    )


def answered(kind: str, call: str, at: int, decision: str, by: str = "alice") -> Record:
    return record(kind, at, tool="refund", call_id=call, approval_id=f"apr_{call}", decision=decision, by=by)


def finished(call: str, at: int, **more: Any) -> Record:
    return record(
        "tool_call.finished", at, **{"tool": "refund", "call_id": call, "decision": "ok", "duration_ms": 2.0, **more}
    )


class Spans:
    """A sink on a tracer provider whose spans a test reads (and encodes, as an exporter would)."""

    def __init__(self, **kw: Any) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.sink = OtelSink(tracer_provider=self.provider, **kw)

    def deliver(self, *records: Record) -> list[ReadableSpan]:
        self.sink.deliver(list(records))
        return self.spans()

    def spans(self, name: str = "execute_tool refund") -> list[ReadableSpan]:
        found = [s for s in self.memory.get_finished_spans() if s.name == name]
        encode_spans(found)  # what the OTLP exporter sends: raises on what a receiver cannot take
        return found


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.sink.close()
    s.provider.shutdown()


def events(span: ReadableSpan) -> list[tuple[str, Any]]:
    return [(e.name, (e.attributes or {}).get("clearance.approval.decision")) for e in span.events]


def test_a_call_allowed_on_its_approvals_timeout_runs_and_is_one_span(spans: Spans) -> None:
    assert spans.deliver(decided("c1", 1_000), requested("c1", 1_000, on_timeout="allow")) == []
    assert spans.deliver(answered("approval.expired", "c1", 5_000, "allowed_on_timeout", by="system")) == []
    (span,) = spans.deliver(finished("c1", 9_000))
    assert span.status.status_code is trace.StatusCode.UNSET
    assert events(span) == [
        ("clearance.approval.requested", None),
        ("clearance.approval.expired", "allowed_on_timeout"),
    ]
    assert (span.start_time, span.end_time) == (1_000_000, 9_000_000)


@pytest.mark.parametrize(
    ("kind", "decision", "error"),
    [
        ("approval.expired", "expired", "clearance.expired"),
        ("approval.decided", "denied", "clearance.denied"),
        ("approval.decided", "cancelled", "clearance.cancelled"),
    ],
)
def test_a_call_that_will_not_run_ends_at_its_decision(spans: Spans, kind: str, decision: str, error: str) -> None:
    spans.deliver(decided("c1", 1_000), requested("c1", 1_000))
    (span,) = spans.deliver(answered(kind, "c1", 4_000, decision))
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == error
    assert span.end_time == 4_000_000
    assert "clearance.unfinished" not in span.attributes
    (wait,) = spans.spans("clearance.approval")
    assert wait.parent is not None and wait.parent.span_id == span.context.span_id
    spans.sink.close()
    assert len(spans.spans()) == 1  # nothing held for it any more


def test_an_escalated_call_and_a_quorum_wait_for_the_last_decision(spans: Spans) -> None:
    spans.deliver(decided("c1", 1_000), requested("c1", 1_000, on_timeout="escalate"))
    spans.deliver(answered("approval.escalated", "c1", 2_000, "escalated", by="system"))
    spans.deliver(answered("approval.voted", "c1", 3_000, "approved", by="alice"))
    assert spans.spans() == []
    spans.deliver(answered("approval.decided", "c1", 4_000, "approved", by="bob"))
    (span,) = spans.deliver(finished("c1", 6_000), answered("approval.executed", "c1", 6_000, "executed", by="w1"))
    assert [name for name, _ in events(span)] == [
        "clearance.approval.requested",
        "clearance.approval.escalated",
        "clearance.approval.voted",
        "clearance.approval.decided",
        "clearance.approval.resumed",
    ]
    (wait,) = spans.spans("clearance.approval")
    assert wait.attributes is not None and wait.attributes["clearance.approval.by"] == "bob"
    assert (wait.start_time, wait.end_time) == (1_000_000, 4_000_000)


def test_the_oldest_held_call_is_let_go_past_keep() -> None:
    s = Spans(keep=2)
    s.deliver(decided("c1", 1_000, "allow"), decided("c2", 2_000, "allow"))
    assert s.spans() == []
    (first,) = s.deliver(decided("c3", 3_000, "allow"))
    assert first.attributes is not None and first.attributes["clearance.call_id"] == "c1"
    assert first.attributes["clearance.unfinished"] is True


def test_a_call_with_no_record_for_max_age_is_let_go(clock: ManualClock) -> None:
    s = Spans(max_age=60)
    s.deliver(decided("stuck", 1_000, "allow"), decided("busy", 1_000), requested("busy", 1_000))
    clock.advance(30)
    s.deliver(answered("approval.voted", "busy", 2_000, "approved"))  # the busy one had news: held on
    assert s.spans() == []
    clock.advance(31)
    (stuck,) = s.deliver(decided("c3", 3_000, "allow"))  # a minute after the stuck one's last record
    assert stuck.attributes is not None and stuck.attributes["clearance.call_id"] == "stuck"


def test_a_record_dated_in_the_future_does_not_age_the_others(clock: ManualClock) -> None:
    s = Spans(max_age=60)
    s.deliver(decided("c1", 1_000, "allow"))
    assert s.deliver(record("llm.call", 2**62, model="m")) == []  # a hostile or skewed clock
    assert s.deliver(decided("c2", 2_000, "allow")) == []
    assert len(s.deliver(finished("c1", 3_000))) == 1


def test_a_call_known_only_by_its_outcome_is_linked_to_where_it_was_asked(spans: Spans) -> None:
    (span,) = spans.deliver(finished("c9", 8_000, trace=ELSEWHERE, asked_in=PARENT, approval_id="apr_c9"))
    assert format(span.context.trace_id, "032x") == ELSEWHERE[3:35]
    assert span.attributes is not None
    assert span.attributes["clearance.asked_in.span_id"] == PARENT[36:52]
    assert span.attributes["clearance.outcome"] == "ok"
    assert [format(link.context.span_id, "016x") for link in span.links] == [PARENT[36:52]]


def test_two_agents_calls_of_the_same_id_are_two_calls(spans: Spans) -> None:
    mine = decided("same", 1_000, "allow")
    theirs_event = make_event(
        "tool_call.decided",
        1_500,
        {"agent": "other", "environment": "test", "tool": "refund", "call_id": "same", "decision": "allow"},
    )
    theirs = Record(next(_seq), theirs_event.id, "tool_call.decided", 1_500, theirs_event.body)
    spans.deliver(mine, theirs)
    (span,) = spans.deliver(finished("same", 2_000))
    assert span.attributes is not None and span.attributes["gen_ai.agent.name"] == "bot"
    assert span.attributes["clearance.decision"] == "allow"


def test_a_repeated_record_is_one_span(spans: Spans) -> None:
    again = decided("c1", 1_000, "allow")
    spans.deliver(again)
    spans.deliver(again)  # delivered again after a crash
    assert len(spans.deliver(finished("c1", 2_000))) == 1


def test_a_new_configurations_sink_takes_over_the_calls_held() -> None:
    old = Spans()
    old.sink.bind("store-a")
    old.deliver(decided("c1", 1_000), requested("c1", 1_000))
    elsewhere = OtelSink(tracer_provider=old.provider)
    elsewhere.bind("store-b")  # the same name on another store: not its successor
    new = OtelSink(tracer_provider=old.provider)
    new.bind("store-a")
    old.sink.close()  # retired: its calls go to the new one, nothing is emitted half-way
    assert old.spans() == []
    new.deliver([answered("approval.decided", "c1", 3_000, "approved"), finished("c1", 5_000)])
    (span,) = old.spans()
    assert span.attributes is not None and span.attributes["clearance.decision"] == "require_approval"
    assert len(old.spans("clearance.approval")) == 1
    new.close()
    elsewhere.close()
    assert len(old.spans()) == 1  # the other store's sink was given nothing to emit


def test_a_call_ended_before_the_hand_over_is_not_taken_over() -> None:
    old = Spans()
    old.sink.bind("store-a")
    old.deliver(decided("c1", 1_000, "allow"))
    new = OtelSink(tracer_provider=old.provider)
    new.bind("store-a")
    new.deliver([finished("c1", 2_000)])  # the new one delivered its outcome first
    old.sink.close()
    new.close()
    assert len(old.spans()) == 1  # not a second, unfinished one


def test_a_sink_with_nowhere_to_send_spans_leaves_them_to_another_process() -> None:
    assert OtelSink().ready() is False  # no global tracer provider in this process
    assert OtelSink(tracer_provider=TracerProvider()).ready() is True


def test_the_last_sink_to_close_emits_what_it_holds_as_it_stands(spans: Spans) -> None:
    spans.deliver(decided("c1", 1_000), requested("c1", 1_000))
    spans.sink.close()
    (span,) = spans.spans()
    assert span.attributes is not None and span.attributes["clearance.unfinished"] is True


@pytest.mark.parametrize(
    "hostile",
    [
        {"at_us": 2**63 - 1},
        {"at_us": 1, "duration_ms": 5e8},
        {"at_us": 1, "duration_ms": float("nan")},
        {"at_us": 0, "duration_ms": -5},
    ],
)
def test_hostile_times_still_make_spans_a_receiver_takes(spans: Spans, hostile: dict[str, Any]) -> None:
    at = hostile.pop("at_us")
    spans.deliver(decided("c1", at, "allow"))
    (span,) = spans.deliver(finished("c1", at, **hostile))
    assert span.start_time is not None and span.end_time is not None
    assert 0 <= span.start_time <= span.end_time < 2**64


def test_hostile_usage_times_and_numbers_make_a_span_a_receiver_takes(spans: Spans) -> None:
    spans.deliver(
        record(
            "llm.call",
            1,
            model="m\u202eodel",
            input_tokens=2**70,
            output_tokens=-1,
            latency_ms=1e6,
            trace="00-" + "f" * 32 + "-" + "f" * 16 + "-ff",
        )
    )
    (chat,) = spans.spans("chat m⟨U+202E RLO⟩odel")
    assert chat.start_time == 0 and chat.attributes is not None
    assert "gen_ai.usage.input_tokens" not in chat.attributes


class Hangs:
    """A TCP receiver that accepts connections and answers none of them until it recovers."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        self.endpoint = f"http://127.0.0.1:{self.socket.getsockname()[1]}/v1/traces"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    _answer(conn)
                    continue
                self.held.append(conn)
            self.accepted.set()

    def recover(self) -> None:
        """Answer every request, held or new, with 200 (so the exporter finishes and can shut down)."""
        with self.lock:
            self.closed = True
            held, self.held = self.held, []
        for conn in held:
            _answer(conn)

    def close(self) -> None:
        self.socket.close()


def _answer(conn: socket.socket) -> None:
    conn.settimeout(5)
    try:
        conn.recv(1 << 20)  # the request as far as it came: answered whatever it is
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()


def test_a_receiver_that_hangs_never_holds_up_a_call(configure: Callable[..., Governor], db_path: Path) -> None:
    hangs = Hangs()
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=hangs.endpoint, timeout=600), schedule_delay_millis=10)
    )
    try:
        configure(
            "version: 1\ndefault: allow\n",
            otel=True,
            exporters=[OtelSink(tracer_provider=provider)],
        )

        @clearance.guard
        def refund(order_id: str) -> str:
            return "ok"

        refund("A-0")
        clearance.flush()
        assert hangs.accepted.wait(30)  # the exporter is stuck in its request now
        assert [refund(f"A-{i}") for i in range(50)] == ["ok"] * 50
        clearance.shutdown()  # the sink delivers the rest to the stuck processor: its queue, not the call, waits
    finally:
        hangs.recover()
        provider.shutdown()
        hangs.close()


def test_an_abandoned_approval_ends_its_call_whether_it_was_pending_or_approved(spans: Spans) -> None:
    """`approval.abandoned` (its waiter died; nothing can run it): the call ends there, as cancelled."""
    spans.deliver(decided("c1", 1_000), requested("c1", 1_000), decided("c2", 1_000), requested("c2", 1_000))
    assert spans.deliver(answered("approval.decided", "c2", 2_000, "approved")) == []  # approved: it may still run
    ended = spans.deliver(
        answered("approval.abandoned", "c1", 40_000, "cancelled", by="system"),
        answered("approval.abandoned", "c2", 41_000, "cancelled", by="system"),
    )
    assert sorted(s.end_time for s in ended) == [40_000_000, 41_000_000]
    for span in ended:
        assert span.status.status_code is trace.StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "clearance.cancelled"
    assert spans.sink.deliver([]) is None and not spans.sink._held  # nothing left held for a day
