"""A remote agent's calls in its own trace: the server's spans continue it, the approver's decision links to it.

A real `clearance serve` with `CLEARANCE_OTEL=true` and only the standard OTLP environment,
exporting to a receiver in the test; the agent is this process, tracing with a provider of its
own. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import clearance
from clearance._guard import _runtime
from clearance._remote._governor import RemoteGovernor
from clearance._store import Database
from clearance._store import _approvals as approvals

from .._otlp import Receiver
from ..server.conftest import Server, _free_port
from ._agent import POLICY

AGENT_SPAN = "the agent's step"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """A server tracing to `receiver`, configured as a user would: the OTLP endpoint and CLEARANCE_OTEL."""
    url = str(tmp_path / "server.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    srv = Server(url, _free_port(), tmp_path / "server.log")
    with monkeypatch.context() as env:  # the server's environment only
        env.setenv("CLEARANCE_OTEL", "true")
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        srv.start()
    srv.publish(POLICY)
    yield srv
    clearance.shutdown()
    srv.stop()


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """The agent's own tracer provider: its spans stay in this process (`provider.memory`)."""
    p = TracerProvider()
    p.memory = InMemorySpanExporter()  # type: ignore[attr-defined]
    p.add_span_processor(SimpleSpanProcessor(p.memory))  # type: ignore[attr-defined]
    yield p
    p.shutdown()


@pytest.fixture
def tracer(provider: TracerProvider) -> Any:
    return provider.get_tracer("the-agent")


def agent(server: Server, tmp_path: Path, **kw: Any) -> RemoteGovernor:
    clearance.configure(
        server_url=server.base, api_key=server.agent, spool_path=str(tmp_path / "spool" / "s.db"), otel=True, **kw
    )
    gov = _runtime.current()
    assert isinstance(gov, RemoteGovernor)
    return gov


def refunder() -> Any:
    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    return issue_refund


def hex_ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def test_a_call_decided_on_the_server_is_traced_under_the_agents_span(
    server: Server, tmp_path: Path, receiver: Receiver, tracer: Any
) -> None:
    agent(server, tmp_path, evaluation="server")
    issue_refund = refunder()
    with tracer.start_as_current_span(AGENT_SPAN) as step:
        assert issue_refund("A-1", 5) == "refunded 5"
    trace_id, span_id = hex_ids(step)
    clearance.flush()  # the outcome ships: the call's span is made when it ends

    (call,) = receiver.wait_for("execute_tool issue_refund")
    assert (call.trace_id, call.parent_id) == (trace_id, span_id)
    assert call.attributes["clearance.decision"] == "allow"
    assert call.attributes["clearance.outcome"] == "ok"
    assert call.resource["service.name"] == "clearance-server"
    (check,) = receiver.wait_for("POST /v1/check")
    assert (check.trace_id, check.parent_id) == (trace_id, span_id)  # the request continues the agent's trace


def test_an_instrumented_http_client_does_not_take_the_calls_place(
    server: Server, tmp_path: Path, receiver: Receiver, provider: Any, tracer: Any
) -> None:
    gov = agent(server, tmp_path, evaluation="server")
    HTTPXClientInstrumentor.instrument_client(gov.client._http, tracer_provider=provider)
    issue_refund = refunder()
    with tracer.start_as_current_span(AGENT_SPAN) as step:
        issue_refund("A-1", 5)
    trace_id, span_id = hex_ids(step)
    step_id = step.get_span_context().span_id
    clearance.flush()

    (call,) = receiver.wait_for("execute_tool issue_refund")
    assert (call.trace_id, call.parent_id) == (trace_id, span_id)  # from Clearance-Trace
    (client,) = [s for s in provider.memory.get_finished_spans() if s.parent and s.parent.span_id == step_id]
    (check,) = receiver.wait_for("POST /v1/check")
    assert (check.trace_id, check.parent_id) == (trace_id, hex_ids(client)[1])  # from its traceparent


def test_a_call_decided_by_the_agent_is_traced_by_the_server_from_its_shipped_records(
    server: Server, tmp_path: Path, receiver: Receiver, tracer: Any
) -> None:
    agent(server, tmp_path)
    issue_refund = refunder()
    with tracer.start_as_current_span(AGENT_SPAN) as step:
        assert issue_refund("A-1", 5) == "refunded 5"  # allowed from the synced policy: no request
    trace_id, span_id = hex_ids(step)
    clearance.flush()

    (call,) = receiver.wait_for("execute_tool issue_refund")
    assert (call.trace_id, call.parent_id) == (trace_id, span_id)
    assert receiver.named("POST /v1/check") == []


def test_the_approvers_decision_is_linked_to_the_span_the_call_was_asked_in(
    server: Server, tmp_path: Path, receiver: Receiver, tracer: Any
) -> None:
    gov = agent(server, tmp_path)
    with tracer.start_as_current_span(AGENT_SPAN) as step:
        ticket = gov.begin("issue_refund", {"order_id": "A-1", "amount": 500}, "s1")
    assert ticket.approval_id is not None
    trace_id, span_id = hex_ids(step)
    store = Database(str(server.db))
    try:
        flags = step.get_span_context().trace_flags
        assert approvals.get(store, ticket.approval_id).trace == f"00-{trace_id}-{span_id}-{flags:02x}"
    finally:
        store.close()

    answer = httpx.post(
        f"{server.base}/v1/approvals/{ticket.approval_id}/approve", headers={"X-API-Key": server.approver}, json={}
    )
    assert answer.status_code == 200, answer.text

    (decide,) = receiver.wait_for("clearance.approval.decide")
    assert decide.links == [(trace_id, span_id, {"clearance.link": "asked"})]
    assert decide.attributes["clearance.approval_id"] == ticket.approval_id
    assert decide.attributes["clearance.approval.decision"] == "approve"
    assert decide.attributes["clearance.approval.status"] == "approved"
    assert decide.attributes["clearance.approval.by"].startswith("key:p:")
    (request,) = receiver.wait_for("POST /v1/approvals/{approval_id}/approve")
    assert (decide.trace_id, decide.parent_id) == (request.trace_id, request.span_id)  # a step of its request
    assert decide.trace_id != trace_id  # the approver's own trace, linked to the agent's


def test_an_ardenpy_denial_is_linked_too(server: Server, tmp_path: Path, receiver: Receiver, tracer: Any) -> None:
    gov = agent(server, tmp_path)
    with tracer.start_as_current_span(AGENT_SPAN) as step:
        ticket = gov.begin("issue_refund", {"order_id": "A-1", "amount": 500}, "s1")
    trace_id, span_id = hex_ids(step)

    answer = httpx.post(f"{server.base}/deny/{ticket.approval_id}", headers={"X-API-Key": server.approver}, json={})
    assert answer.status_code == 200, answer.text

    (decide,) = receiver.wait_for("clearance.approval.decide")
    assert decide.links == [(trace_id, span_id, {"clearance.link": "asked"})]
    assert decide.attributes["clearance.approval.status"] == "denied"


def test_a_paused_call_run_in_another_trace_is_linked_to_where_it_was_asked(
    server: Server, tmp_path: Path, receiver: Receiver, tracer: Any
) -> None:
    gov = agent(server, tmp_path, evaluation="server")
    args = {"order_id": "A-1", "amount": 500}
    with tracer.start_as_current_span("the paused run") as asked:
        first = gov.begin("issue_refund", args, "s1", mode="pause", call_key="tool-call-7")
    assert first.approval_id is not None, first.decision
    answer = httpx.post(
        f"{server.base}/v1/approvals/{first.approval_id}/approve", headers={"X-API-Key": server.approver}, json={}
    )
    assert answer.status_code == 200, answer.text
    with tracer.start_as_current_span("the resumed run") as resumed:  # the graph asks about its call again
        again = gov.begin("issue_refund", args, "s1", mode="pause", call_key="tool-call-7")
        assert again.approval_id == first.approval_id
        gov.claim(again)
        gov.finish(again, error=None, duration_s=0.01, result="refunded")
    clearance.flush()

    spans = receiver.wait_for("execute_tool issue_refund", 2)
    (ran,) = [s for s in spans if s.trace_id == hex_ids(resumed)[0]]
    (first_span,) = [s for s in spans if s.trace_id == hex_ids(asked)[0]]
    assert ran.parent_id == hex_ids(resumed)[1]
    assert ran.attributes["clearance.asked_in.span_id"] == first_span.span_id
    assert ran.links == [(first_span.trace_id, first_span.span_id, {"clearance.link": "asked"})]
