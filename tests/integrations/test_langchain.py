"""LangChain / LangGraph: a real `create_agent` run, offline, with a scripted model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("langchain")

from langchain.agents import create_agent  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import EventFilter  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance._store._events import query  # noqa: E402
from clearance.integrations.langchain import ClearanceMiddleware  # noqa: E402

from ._shared import POLICY, TWO_FAKE_CALLS, llm_usage, while_deciding  # noqa: E402

USAGE = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}


class Scripted(BaseChatModel):
    """Asks for `issue_refund(order_id, amount)`, then answers with what the tool said."""

    amount: float = 850
    call_id: str = "call_1"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Scripted:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        last = messages[-1]
        meta = {"model_name": "gpt-4o-mini", "model_provider": "openai"}
        if isinstance(last, ToolMessage):
            message = AIMessage(
                content=f"Done. The tool said: {last.content}", usage_metadata=USAGE, response_metadata=meta
            )
        else:
            call = {"name": "issue_refund", "args": {"order_id": "A-1", "amount": self.amount}, "id": self.call_id}
            message = AIMessage(content="", tool_calls=[call], usage_metadata=USAGE, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=message)])


def agent(ran: list[Any], amount: float = 850) -> Any:
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    return create_agent(Scripted(amount=amount), tools=[issue_refund], middleware=[ClearanceMiddleware()])


def final(result: dict[str, Any]) -> str:
    return str(result["messages"][-1].content)


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(
        gov,
        lambda: agent(ran).invoke({"messages": [("user", "refund A-1")]}),
        approve=False,
        note="customer already refunded",
    )
    assert ran == []
    assert "customer already refunded" in final(result) and "denied by user:lena" in final(result)
    tool_message = [m for m in result["messages"] if isinstance(m, ToolMessage)][0]
    assert tool_message.status == "error" and tool_message.tool_call_id == "call_1"


def test_approved_from_another_thread_runs_once_with_the_coerced_arguments(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(gov, lambda: agent(ran).invoke({"messages": [("user", "refund A-1")]}), approve=True)
    assert ran == [("A-1", 850.0)] and "refunded 850.0 on A-1" in final(result)
    [a] = approvals.listing(gov.db, status=None)
    assert a.args == {"order_id": "A-1", "amount": 850.0} and a.status == "executed"  # what ran is what was decided


def test_an_approvers_edit_is_what_runs(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(
        gov, lambda: agent(ran).invoke({"messages": [("user", "refund A-1")]}), approve=True, args={"amount": 300}
    )
    assert ran == [("A-1", 300.0)] and "refunded 300.0" in final(result)


def test_blocked_calls_answer_the_model_and_on_block_raise_raises(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    ran: list[Any] = []
    result = agent(ran, amount=9000).invoke({"messages": [("user", "refund")]})
    assert ran == [] and "Blocked by policy: Refunds over $5000 are never issued" in final(result)

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        return "never"

    strict = create_agent(
        Scripted(amount=9000), tools=[issue_refund], middleware=[ClearanceMiddleware(on_block="raise")]
    )
    with pytest.raises(clearance.ToolCallBlocked, match="never issued"):
        strict.invoke({"messages": [("user", "refund")]})


def test_usage_and_cost_are_recorded_in_the_session(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    with clearance.session("ses-langchain"):
        agent(ran, amount=50).invoke({"messages": [("user", "refund A-1")]})
    clearance.flush()
    calls = [e.body for e in query(gov.db, EventFilter(kind="llm.call", session="ses-langchain"))]
    assert len(calls) == 2  # the tool call turn and the answer: each counted once
    assert {c["model"] for c in calls} == {"gpt-4o-mini"}
    assert all(c["input_tokens"] == 120 and c["output_tokens"] == 30 and c["priced"] for c in calls)
    decided = [e.body for e in query(gov.db, EventFilter(kind="tool_call.decided", session="ses-langchain"))]
    assert [d["decision"] for d in decided] == ["allow"] and ran == [("A-1", 50.0)]


def test_async_agents_wait_without_blocking_the_loop(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []

    async def main() -> dict[str, Any]:
        return await agent(ran).ainvoke({"messages": [("user", "refund A-1")]})

    result = while_deciding(gov, lambda: asyncio.run(main()), approve=True)
    assert ran == [("A-1", 850.0)] and "refunded" in final(result)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_chat_openai_against_a_fake_openai_server(configure: Callable[..., Governor], streaming: bool) -> None:
    """The real HTTP client path: ChatOpenAI talking to an OpenAI-compatible server on 127.0.0.1."""
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    from ..fake_openai import FakeOpenAI

    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    try:
        model = ChatOpenAI(
            model="gpt-4o-mini", base_url=fake.url, api_key="sk-test", streaming=streaming, stream_usage=True
        )
        ran: list[Any] = []

        def issue_refund(order_id: str, amount: float) -> str:
            """Refund an order."""
            ran.append((order_id, amount))
            return f"refunded {amount} on {order_id}"

        graph = create_agent(model, tools=[issue_refund], middleware=[ClearanceMiddleware()])
        with clearance.session(f"ses-http-{streaming}"):
            result = while_deciding(
                gov, lambda: graph.invoke({"messages": [("user", "refund A-1")]}), approve=False, note="over the limit"
            )
    finally:
        fake.close()
    assert ran == [] and "over the limit" in final(result)
    assert fake.requests[0]["model"] == "gpt-4o-mini" and bool(fake.requests[0].get("stream")) is streaming
    assert llm_usage(gov, f"ses-http-{streaming}") == TWO_FAKE_CALLS


def test_a_hand_built_graph_with_tool_node(configure: Callable[..., Governor]) -> None:
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from clearance.integrations import langchain as governed

    gov = configure(POLICY)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    model = Scripted(amount=850)
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node(
        "tools",
        ToolNode([issue_refund], wrap_tool_call=governed.wrap_tool_call, awrap_tool_call=governed.awrap_tool_call),
    )
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    app = graph.compile()
    result = while_deciding(gov, lambda: app.invoke({"messages": [("user", "refund")]}), approve=False, note="no")
    assert ran == [] and "denied by user:lena: no" in final(result)


def paused_agent(ran: list[Any], checkpointer: Any, call_id: str = "call_1") -> Any:
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    return create_agent(
        Scripted(amount=850, call_id=call_id),
        tools=[issue_refund],
        middleware=[ClearanceMiddleware(pause=True)],
        checkpointer=checkpointer,
    )


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_interrupt_pauses_the_graph_and_resume_continues_it_once(
    configure: Callable[..., Governor], approve: bool
) -> None:
    """`pause=True`: LangGraph's interrupt() with a checkpointer; nothing waits in memory."""
    from langgraph.checkpoint.memory import InMemorySaver

    from clearance import _decisions
    from clearance.integrations.langchain import pending_approvals, resume

    from ._shared import LEAD, records

    gov = configure(POLICY)
    ran: list[Any] = []
    graph = paused_agent(ran, InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    first = graph.invoke({"messages": [("user", "refund A-1")]}, config)
    assert "__interrupt__" in first and ran == []
    [pending] = pending_approvals(graph, config)
    assert (pending.tool, pending.reason) == ("issue_refund", "Refunds over $200 need a lead") and pending.call_id
    approval_id = pending.approval_id
    with pytest.raises(clearance.ApprovalPending):
        resume(graph, config)
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=approve, note="over budget")
    result = resume(graph, config)
    if approve:
        assert ran == [("A-1", 850.0)] and "refunded 850.0" in final(result)
        assert approvals.get(gov.db, approval_id).status == "executed"
    else:
        assert ran == [] and "over budget" in final(result)
    # The hook ran again on resume: still one decision and one approval.
    assert len(records(gov, "tool_call.decided")) == 1 and len(approvals.listing(gov.db, status=None)) == 1
    with pytest.raises(clearance.ConfigurationError, match="not paused"):
        resume(graph, config)


def test_an_approved_pause_runs_once_even_when_the_checkpoint_is_resumed_twice(
    configure: Callable[..., Governor],
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from clearance import _decisions
    from clearance.integrations.langchain import pending_approvals, resume

    from ._shared import LEAD

    gov = configure(POLICY)
    ran: list[Any] = []
    saver = InMemorySaver()
    graph = paused_agent(ran, saver)
    config = {"configurable": {"thread_id": "t2"}}
    graph.invoke({"messages": [("user", "refund A-1")]}, config)
    [approval_id] = [p.approval_id for p in pending_approvals(graph, config)]
    paused_at = graph.get_state(config).config  # the checkpoint, to resume a second time
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=True)
    resume(graph, config)
    [interrupt] = graph.get_state(paused_at).interrupts
    again = graph.invoke(Command(resume={interrupt.id: {}}), paused_at)
    # The model gets what the refund returned then, not a refusal it would retry or report.
    assert ran == [("A-1", 850.0)] and "refunded 850.0 on A-1" in final(again) and "Not approved" not in final(again)


def test_async_graphs_pause_and_resume(configure: Callable[..., Governor]) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from clearance import _decisions
    from clearance.integrations.langchain import aresume, pending_approvals

    from ._shared import LEAD

    gov = configure(POLICY)
    ran: list[Any] = []
    graph = paused_agent(ran, InMemorySaver())
    config = {"configurable": {"thread_id": "t3"}}

    async def main() -> Any:
        await graph.ainvoke({"messages": [("user", "refund A-1")]}, config)
        [approval_id] = [p.approval_id for p in pending_approvals(graph, config)]
        _decisions.decide(gov.db, approval_id, by=LEAD, approve=True, args={"amount": 300})
        return await aresume(graph, config)

    result = asyncio.run(main())
    assert ran == [("A-1", 300.0)] and "refunded 300.0" in final(result)


PAUSED_GRAPH = """
import json, sys
from langgraph.checkpoint.sqlite import SqliteSaver
from clearance.integrations.langchain import pending_approvals, resume
from tests.integrations.test_langchain import final, paused_agent

ran = []
config = {"configurable": {"thread_id": "durable"}}
with SqliteSaver.from_conn_string(sys.argv[2]) as saver:
    graph = paused_agent(ran, saver)
    if sys.argv[1] == "start":
        graph.invoke({"messages": [("user", "refund A-1")]}, config)
        print(json.dumps({"ids": [p.approval_id for p in pending_approvals(graph, config)]}))
    else:
        try:
            result = resume(graph, config)
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__}))
        else:
            print(json.dumps({"ran": ran, "answer": final(result)}))
"""


def test_a_paused_graph_resumes_in_another_process(configure: Callable[..., Governor], tmp_path: Any) -> None:
    """The durable case: a SQLite checkpointer, the agent process gone, another one resumes."""
    pytest.importorskip("langgraph.checkpoint.sqlite")
    from clearance import _decisions

    from ._shared import LEAD, last_json, run_python

    gov = configure(POLICY)

    def process(*args: str) -> dict[str, Any]:
        return last_json(run_python(tmp_path, PAUSED_GRAPH, *args, str(tmp_path / "checkpoints.db")))

    [approval_id] = process("start")["ids"]
    assert process("resume") == {"error": "ApprovalPending"}
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=True)
    resumed = process("resume")
    assert resumed["ran"] == [["A-1", 850.0]] and "refunded 850.0" in resumed["answer"]
    assert approvals.get(gov.db, approval_id).status == "executed"


def plain_agent(ran: list[Any], amount: float = 850, *, coroutine: bool = False) -> Any:
    """An agent with no Clearance middleware: the process-wide gate governs its tools.

    A sync tool runs, callbacks and all, on a worker thread of an async agent; a `coroutine`
    tool runs in the event loop, and so do its callbacks.
    """

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    async def issue_refund_async(order_id: str, amount: float) -> str:
        """Refund an order."""
        return issue_refund(order_id, amount)

    if coroutine:
        issue_refund_async.__name__ = "issue_refund"
        return create_agent(Scripted(amount=amount), tools=[issue_refund_async])
    return create_agent(Scripted(amount=amount), tools=[issue_refund])


def test_without_middleware_the_gate_denies_with_the_reason(configure: Callable[..., Governor]) -> None:
    from ._shared import records

    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(
        gov,
        lambda: plain_agent(ran).invoke({"messages": [("user", "refund A-1")]}),
        approve=False,
        note="customer already refunded",
    )
    assert ran == [] and "customer already refunded" in final(result)
    tool_message = [m for m in result["messages"] if isinstance(m, ToolMessage)][0]
    assert tool_message.status == "error" and "Not approved" in str(tool_message.content)
    assert len(records(gov, "tool_call.decided")) == 1


def test_without_middleware_the_gate_runs_approved_calls_once_and_records_them(
    configure: Callable[..., Governor],
) -> None:
    from ._shared import records

    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(gov, lambda: plain_agent(ran).invoke({"messages": [("user", "refund A-1")]}), approve=True)
    assert ran == [("A-1", 850.0)] and "refunded 850.0" in final(result)
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "executed"
    assert [f["decision"] for f in records(gov, "tool_call.finished")] == ["ok"]


def test_without_middleware_an_edit_cannot_apply_so_the_call_is_refused(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(
        gov, lambda: plain_agent(ran).invoke({"messages": [("user", "refund A-1")]}), approve=True, args={"amount": 300}
    )
    assert ran == [] and "edited arguments" in final(result)
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "failed"


def test_without_middleware_async_and_blocked_and_direct_invocation(configure: Callable[..., Governor]) -> None:
    from langchain_core.tools import tool

    from clearance.integrations.langchain import ToolCallRefused

    gov = configure(POLICY)
    ran: list[Any] = []

    async def main() -> dict[str, Any]:
        return await plain_agent(ran).ainvoke({"messages": [("user", "refund A-1")]})

    result = while_deciding(gov, lambda: asyncio.run(main()), approve=True)  # the wait happens off the event loop
    assert ran == [("A-1", 850.0)] and "refunded" in final(result)
    blocked = plain_agent(ran, amount=9000).invoke({"messages": [("user", "refund")]})
    assert "Blocked by policy: Refunds over $5000 are never issued" in final(blocked) and len(ran) == 1

    @tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        return "never"

    with pytest.raises(ToolCallRefused, match="never issued"):  # outside a ToolNode it reaches the caller
        issue_refund.invoke({"order_id": "A-1", "amount": 9000})
    del gov


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
@pytest.mark.parametrize("coroutine", [True, False], ids=["async-tool", "sync-tool"])
def test_without_middleware_an_async_agent_waits_in_the_loop_without_blocking_it(
    configure: Callable[..., Governor], approve: bool, coroutine: bool
) -> None:
    """An async tool's gate is awaited in the event loop (no worker thread); its approval wait lets the loop run."""
    from clearance import _decisions

    from ._shared import LEAD, records

    gov = configure(POLICY)
    ran: list[Any] = []

    async def main() -> tuple[list[str], dict[str, Any]]:
        ticks: list[str] = []

        async def decide_when_asked() -> None:
            while not approvals.listing(gov.db):
                await asyncio.sleep(0.01)
            for _ in range(3):  # the loop runs while the tool call waits for its approval
                ticks.append("tick")
                await asyncio.sleep(0.01)
            [asked] = approvals.listing(gov.db)
            _decisions.decide(gov.db, asked.id, approve=approve, by=LEAD, note="checked with the customer")

        deciding = asyncio.create_task(decide_when_asked())
        result = await plain_agent(ran, coroutine=coroutine).ainvoke({"messages": [("user", "refund A-1")]})
        await deciding
        return ticks, result

    ticks, result = asyncio.run(asyncio.wait_for(main(), 20))
    assert ticks == ["tick"] * 3
    if approve:
        assert ran == [("A-1", 850.0)] and "refunded 850.0" in final(result)
        assert [f["decision"] for f in records(gov, "tool_call.finished")] == ["ok"]
    else:
        assert ran == [] and "checked with the customer" in final(result)


def test_a_tool_call_id_reused_in_another_thread_is_another_call(configure: Callable[..., Governor]) -> None:
    """Providers reuse ids (`call_1` in every conversation): thread B must not get thread A's approval or result."""
    from langgraph.checkpoint.memory import InMemorySaver

    from clearance import _decisions
    from clearance.integrations.langchain import pending_approvals, resume

    from ._shared import LEAD

    gov = configure(POLICY)
    ran: list[Any] = []
    graph = paused_agent(ran, InMemorySaver())
    first, second = ({"configurable": {"thread_id": t}} for t in ("thread-a", "thread-b"))
    graph.invoke({"messages": [("user", "refund A-1")]}, first)
    [a] = pending_approvals(graph, first)
    _decisions.decide(gov.db, a.approval_id, by=LEAD, approve=True)
    resume(graph, first)
    assert ran == [("A-1", 850.0)]
    result = graph.invoke({"messages": [("user", "refund A-1")]}, second)  # the same id, the same arguments
    [b] = pending_approvals(graph, second)
    assert b.approval_id != a.approval_id and "refunded" not in str(result["messages"][-1].content)
    assert ran == [("A-1", 850.0)] and approvals.get(gov.db, b.approval_id).status == "pending"


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize(
    "call_id", ["call_\ud800", "c" * 5000, "call\x00\u202e1"], ids=["surrogate", "long", "nul-rlo"]
)
def test_a_hostile_tool_call_id_pauses_and_resumes_like_any_other(
    configure: Callable[..., Governor], request: pytest.FixtureRequest, store: str, call_id: str
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from clearance import _decisions
    from clearance.integrations.langchain import pending_approvals, resume

    from ._shared import LEAD

    kwargs = {"database_url": request.getfixturevalue("pg_url")} if store == "postgres" else {}
    gov = configure(POLICY, **kwargs)
    ran: list[Any] = []
    graph = paused_agent(ran, InMemorySaver(), call_id=call_id)
    config = {"configurable": {"thread_id": "t-hostile"}}
    graph.invoke({"messages": [("user", "refund A-1")]}, config)
    [pending] = pending_approvals(graph, config)
    assert ran == [] and approvals.get(gov.db, pending.approval_id).status == "pending"
    _decisions.decide(gov.db, pending.approval_id, by=LEAD, approve=True)
    result = resume(graph, config)
    if "\ud800" in call_id:
        # LangGraph's checkpoint keeps the id as "call_?": the resumed call is another call, put to
        # a new approval — it never runs on the first one's.
        assert ran == [] and len(pending_approvals(graph, config)) == 1
        return
    assert ran == [("A-1", 850.0)] and "refunded 850.0 on A-1" in str(result["messages"][-1].content)
