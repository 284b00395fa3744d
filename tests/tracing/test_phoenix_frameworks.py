"""Agents traced the usual way into a real Phoenix: Clearance's spans come back nested in the frameworks' own.

A LangGraph agent (ClearanceMiddleware) and an Agents SDK agent, each on a scripted model and
traced by its OpenInference instrumentor over OTLP, make an allowed call, a blocked one and
one that waits for a lead's approval from another thread. Read back through Phoenix's API:
each of Clearance's `execute_tool` spans is a child of the framework's span the call was made
in, the wait is a span under its call with who approved, and the blocked call is an error. A
call approved while its graph is paused runs in a worker process of its own, whose span names
where the call was asked (Phoenix keeps no links, so that is an attribute).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain")
pytest.importorskip("agents")
pytest.importorskip("openinference.instrumentation.langchain")
pytest.importorskip("openinference.instrumentation.openai_agents")

from agents import Runner  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

import clearance  # noqa: E402
from clearance import _decisions  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._sinks._otel import OtelSink  # noqa: E402
from clearance.integrations.langchain import ClearanceMiddleware, pending_approvals  # noqa: E402

from ..conftest import REPO  # noqa: E402
from ..integrations._shared import LEAD, POLICY, while_deciding  # noqa: E402
from ._phoenix import Phoenix, Span  # noqa: E402
from ._runs import (  # noqa: E402
    ALLOWED,
    APPROVED,
    agents_sdk_agent,
    agents_sdk_traced,
    langchain_traced,
    langgraph_agent,
)

CALL = "execute_tool issue_refund"
ASK = {"messages": [("user", "refund A-0, A-1 and A-2")]}


def phoenix_provider(phoenix: Phoenix, project: str) -> TracerProvider:
    """A provider of the test's own (never the global one) exporting over OTLP into Phoenix's `project`."""
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp_endpoint)))
    return provider


@pytest.fixture
def provider(phoenix: Phoenix, phoenix_project: str) -> Iterator[TracerProvider]:
    exporting = phoenix_provider(phoenix, phoenix_project)
    yield exporting
    exporting.shutdown()


@pytest.fixture
def governed(configure: Callable[..., Governor], provider: TracerProvider) -> Governor:
    """The refund policy, with OpenTelemetry on; Clearance's spans go to Phoenix through `provider`."""
    return configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=provider)])


def exported(provider: TracerProvider) -> None:
    """Every span made and sent: Clearance's sink makes its last pass on shutdown, then the provider flushes."""
    clearance.shutdown()
    assert provider.force_flush()


def ours(spans: list[Span]) -> list[Span]:
    """Clearance's call spans (a framework's tool span may share the name, never these attributes)."""
    return [s for s in spans if s.name == CALL and "clearance.call_id" in s.attributes]


def read_back(phoenix: Phoenix, project: str, calls: int) -> tuple[dict[str, Span], dict[str, Span]]:
    """Once Phoenix holds `calls` of Clearance's spans and the wait: them by decision, and every span by id."""
    spans = phoenix.wait_for_spans(
        project, lambda spans: len(ours(spans)) == calls and any(s.name == "clearance.approval" for s in spans)
    )
    return {s.attributes["clearance.decision"]: s for s in ours(spans)}, {s.span_id: s for s in spans}


def assert_nested(calls: dict[str, Span], by_id: dict[str, Span], framework_span: str) -> None:
    """Each call is a child of a framework span named `framework_span`; the wait and the block as they happened."""
    for call in calls.values():
        assert call.parent_id is not None, f"{call.attributes['clearance.decision']} call has no parent"
        parent = by_id[call.parent_id]
        assert (parent.name, parent.trace_id) == (framework_span, call.trace_id)
        assert parent.kind in ("CHAIN", "TOOL")  # OpenInference's span, not one of Clearance's
    assert len({call.parent_id for call in calls.values()}) == 3  # each call in a span of its own
    assert len({call.trace_id for call in calls.values()}) == 1  # one run, one trace

    allowed, blocked, approved = calls["allow"], calls["block"], calls["require_approval"]
    assert (allowed.status_code, allowed.attributes["clearance.outcome"]) == ("UNSET", "ok")
    assert blocked.status_code == "ERROR" and "Refunds over $5000" in blocked.status_message
    assert blocked.attributes["error.type"] == "clearance.blocked"
    [wait] = [s for s in by_id.values() if s.name == "clearance.approval"]
    assert wait.parent_id == approved.span_id
    assert wait.attributes["clearance.approval.by"] == LEAD.name
    assert wait.attributes["clearance.approval.decision"] == "approved"
    assert approved.start_time <= wait.start_time <= wait.end_time <= approved.end_time
    assert approved.attributes["clearance.outcome"] == "ok"


def test_a_langgraph_agents_calls_nest_under_its_tool_node_spans(
    phoenix: Phoenix, phoenix_project: str, governed: Governor, provider: TracerProvider
) -> None:
    ran: list[float] = []
    agent = langgraph_agent(ran, middleware=ClearanceMiddleware())
    with langchain_traced(provider):
        while_deciding(governed, lambda: agent.invoke(ASK), approve=True)
    exported(provider)

    calls, by_id = read_back(phoenix, phoenix_project, 3)
    assert_nested(calls, by_id, "tools")  # the middleware decides in the ToolNode, before the tool's own run
    tool_runs = [s for s in by_id.values() if s.name == "issue_refund"]
    assert sorted(s.parent_id or "" for s in tool_runs) == sorted(
        calls[d].parent_id or "" for d in ("allow", "require_approval")
    )  # the tool's own span beside Clearance's; the blocked call never ran
    assert ran == [ALLOWED, APPROVED]


def test_an_agents_sdk_agents_calls_nest_under_its_function_spans(
    phoenix: Phoenix, phoenix_project: str, governed: Governor, provider: TracerProvider
) -> None:
    ran: list[float] = []
    agent = agents_sdk_agent(ran)
    with agents_sdk_traced(provider):
        while_deciding(governed, lambda: asyncio.run(Runner.run(agent, "refund")), approve=True)
    exported(provider)

    calls, by_id = read_back(phoenix, phoenix_project, 3)
    assert_nested(calls, by_id, "issue_refund")  # the SDK's function span: the decision is made inside it
    assert ran == [ALLOWED, APPROVED]


def test_a_call_resumed_in_another_process_names_where_it_was_asked(
    phoenix: Phoenix,
    phoenix_project: str,
    governed: Governor,
    provider: TracerProvider,
    tmp_path: Path,
    db_path: Path,
) -> None:
    """The graph pauses on the approval; a lead approves; a worker process runs the approved call."""
    agent = langgraph_agent(
        [], middleware=ClearanceMiddleware(pause=True), checkpointer=InMemorySaver(), amounts=(APPROVED,)
    )
    config = {"configurable": {"thread_id": "refunds"}}
    with langchain_traced(provider):
        agent.invoke(ASK, config)
    [approval_id] = [p.approval_id for p in pending_approvals(agent, config)]
    _decisions.decide(governed.db, approval_id, by=LEAD, approve=True)
    exported(provider)  # the asked call's span, its wait approved; the worker's sink continues after it

    worker = _worker(tmp_path, db_path, phoenix, phoenix_project, approval_id)

    assert worker["result"] == "refunded 300.0 on A-0"
    spans = phoenix.wait_for_spans(phoenix_project, lambda spans: len(ours(spans)) == 2)
    by_id = {s.span_id: s for s in spans}
    [asked] = [s for s in ours(spans) if s.trace_id != worker["trace_id"]]
    [ran] = [s for s in ours(spans) if s.trace_id == worker["trace_id"]]
    assert by_id[asked.parent_id or ""].name == "tools"  # asked in the graph's ToolNode
    assert [s.name for s in spans if s.parent_id == asked.span_id] == ["clearance.approval"]
    assert ran.parent_id == worker["span_id"] and by_id[worker["span_id"]].name == "refund worker"
    assert ran.attributes["clearance.asked_in.trace_id"] == asked.trace_id
    assert ran.attributes["clearance.asked_in.span_id"] == asked.parent_id  # the span it was asked in
    assert ran.attributes["clearance.approval_id"] == approval_id
    assert (ran.status_code, ran.attributes["clearance.outcome"]) == ("UNSET", "ok")


def _worker(tmp_path: Path, db_path: Path, phoenix: Phoenix, project: str, approval_id: str) -> dict[str, str]:
    """Run tests/tracing/_resume_worker.py in a Python process of its own; what it printed."""
    policy = tmp_path / "worker-policy.yaml"
    policy.write_text(POLICY)
    args = [str(policy), str(db_path), phoenix.otlp_endpoint, project, approval_id]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.tracing._resume_worker", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    found: dict[str, str] = json.loads(out.stdout.splitlines()[-1])
    return found
