"""Clearance's spans nest under the framework's own spans when the framework is traced the usual way.

LangGraph and the Agents SDK traced by OpenInference, Google ADK by its own OpenTelemetry
spans; all into an in-memory exporter. Where each span lands is asserted by span ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("langchain")
pytest.importorskip("agents")
pytest.importorskip("openinference.instrumentation.langchain")
pytest.importorskip("openinference.instrumentation.openai_agents")

from agents import Runner  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._sinks._otel import OtelSink  # noqa: E402
from clearance.integrations.langchain import ClearanceMiddleware  # noqa: E402

from .._wait import until  # noqa: E402
from ..integrations._shared import POLICY, while_deciding  # noqa: E402
from ..tracing._runs import (  # noqa: E402
    ALLOWED,
    APPROVED,
    agents_sdk_agent,
    agents_sdk_traced,
    langchain_traced,
    langgraph_agent,
)
from .test_spans import Traced  # noqa: E402

try:  # imported before any configure(): importing ADK after one fails (see adk.install)
    from google.adk.telemetry import tracing as adk_tracing

    from ..integrations.test_adk import run as adk_run
except ImportError:
    adk_tracing = None

CALL = "execute_tool issue_refund"
ASK = {"messages": [("user", "refund A-0, A-1 and A-2")]}


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.provider.shutdown()


@pytest.fixture
def governed(configure: Callable[..., Governor], traced: Traced) -> Governor:
    """The refund policy, with OpenTelemetry on and the sink sending to `traced`."""
    return configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider)])


def ours_in_order(traced: Traced, n: int) -> list[ReadableSpan]:
    """Clearance's call spans, once `n` are there (the frameworks' own may share their name), oldest first."""
    clearance.flush()

    def found() -> list[ReadableSpan]:
        return sorted((s for s in traced.spans(CALL) if _scope(s) == "clearance"), key=lambda s: s.start_time or 0)

    until(lambda: len(found()) >= n, f"{n} spans of Clearance's")
    assert len(found()) == n
    return found()


def ours(traced: Traced, n: int) -> dict[str, ReadableSpan]:
    """Clearance's call spans, once `n` are there, by decision: `allow`, `block`, `require_approval`."""
    return {str(_attrs(s)["clearance.decision"]): s for s in ours_in_order(traced, n)}


def parent_of(traced: Traced, span: ReadableSpan) -> ReadableSpan:
    """The span's parent, among the spans exported (the framework's, or the test's own)."""
    assert span.parent is not None, f"{span.name} has no parent"
    [parent] = [s for s in traced.spans() if s.context.span_id == span.parent.span_id]
    return parent


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_langgraph_middleware_calls_nest_under_the_tool_node_beside_the_tools_own_span(
    governed: Governor, traced: Traced
) -> None:
    """The middleware decides before the tool's own run starts, inside the ToolNode's run."""
    ran: list[float] = []
    agent = langgraph_agent(ran, middleware=ClearanceMiddleware())
    with langchain_traced(traced.provider):
        while_deciding(governed, lambda: agent.invoke(ASK), approve=True)
    calls = ours(traced, 3)
    nodes = {d: parent_of(traced, span) for d, span in calls.items()}
    assert {node.name for node in nodes.values()} == {"tools"} and _scope(nodes["allow"]).startswith("openinference")
    assert len({node.context.span_id for node in nodes.values()}) == 3  # one node run per tool call
    runs = [s for s in traced.spans("issue_refund") if _scope(s).startswith("openinference")]
    assert sorted(parent_of(traced, run).context.span_id for run in runs) == sorted(
        nodes[d].context.span_id for d in ("allow", "require_approval")
    )  # the tool ran beside Clearance's span; the blocked call never started a run of its own
    assert ran == [ALLOWED, APPROVED]


def test_langgraph_tool_gate_calls_nest_under_the_tools_own_span(governed: Governor, traced: Traced) -> None:
    """Without the middleware, ToolGate decides in the tool run's start: inside the tool's own span."""
    ran: list[float] = []
    agent = langgraph_agent(ran)
    with langchain_traced(traced.provider):
        while_deciding(governed, lambda: agent.invoke(ASK), approve=True)
    calls = ours(traced, 3)
    runs = {d: parent_of(traced, span) for d, span in calls.items()}
    assert {run.name for run in runs.values()} == {"issue_refund"}
    assert len({run.context.span_id for run in runs.values()}) == 3
    assert runs["block"].status.status_code.name == "ERROR"  # the framework's span of the refused run
    assert ran == [ALLOWED, APPROVED]


def test_in_a_langchain_run_the_deeper_span_is_the_parent(governed: Governor, traced: Traced) -> None:
    """The run's span, unless a span of the user's own was opened inside it."""
    refund = clearance.guard(lambda order_id, amount: f"refunded {amount}", name="issue_refund")

    def in_my_span(amount: float) -> str:
        with traced.tracer.start_as_current_span("my span inside"):
            return str(refund("A-1", amount))

    with langchain_traced(traced.provider), traced.tracer.start_as_current_span("my span outside"):
        RunnableLambda(lambda amount: refund("A-0", amount), name="plain step").invoke(ALLOWED)
        RunnableLambda(in_my_span, name="step with a span").invoke(ALLOWED)
    first, then = ours_in_order(traced, 2)
    assert parent_of(traced, first).name == "plain step"
    assert parent_of(traced, then).name == "my span inside"


def test_langgraph_not_instrumented_nests_under_the_users_span(governed: Governor, traced: Traced) -> None:
    agent = langgraph_agent([], middleware=ClearanceMiddleware(), amounts=(ALLOWED,))
    with langchain_traced(traced.provider):
        pass  # instrumented once and off again: the instrumentor is still there, switched off
    with traced.tracer.start_as_current_span("my agent run") as mine:
        agent.invoke(ASK)
    assert parent_of(traced, ours(traced, 1)["allow"]).context.span_id == mine.get_span_context().span_id


def test_agents_sdk_calls_nest_under_the_sdks_function_span(governed: Governor, traced: Traced) -> None:
    """OpenInference's processor makes each SDK span current in OpenTelemetry's context: no finder is needed."""
    ran: list[float] = []
    agent = agents_sdk_agent(ran)
    with agents_sdk_traced(traced.provider):
        while_deciding(governed, lambda: asyncio.run(Runner.run(agent, "refund")), approve=True)
    calls = ours(traced, 3)
    functions = {d: parent_of(traced, span) for d, span in calls.items()}
    assert {f.name for f in functions.values()} == {"issue_refund"}
    assert all(_scope(f).startswith("openinference") for f in functions.values())
    assert len({f.context.span_id for f in functions.values()}) == 3
    assert ran == [ALLOWED, APPROVED]


def test_agents_sdk_not_instrumented_nests_under_the_users_span(governed: Governor, traced: Traced) -> None:
    agent = agents_sdk_agent([], amounts=(ALLOWED,))
    with traced.tracer.start_as_current_span("my agent run") as mine:
        asyncio.run(Runner.run(agent, "refund"))
    assert parent_of(traced, ours(traced, 1)["allow"]).context.span_id == mine.get_span_context().span_id


def test_adk_calls_nest_under_adks_execute_tool_span(
    configure: Callable[..., Governor], traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADK starts its `execute_tool` span as current: Clearance's nests under it with nothing added."""
    if adk_tracing is None:
        pytest.skip("Google ADK is not installed")
    configure(POLICY, otel=True, exporters=[OtelSink(tracer_provider=traced.provider)])
    monkeypatch.setattr(
        adk_tracing, "tracer", traced.provider.get_tracer("gcp.vertex.agent")
    )  # not the global provider
    adk_run([], amount=ALLOWED)
    parent = parent_of(traced, ours(traced, 1)["allow"])
    assert (parent.name, _scope(parent)) == (CALL, "gcp.vertex.agent")
