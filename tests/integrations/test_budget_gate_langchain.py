"""LangChain / LangGraph: a spent budget stops or pauses the model call itself, offline, with a scripted model.

`ModelGate`, the process-wide callback, checks every model call: of agents with
`ClearanceMiddleware` and without, and of a model invoked directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("langchain")

from langchain.agents import create_agent  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

import clearance  # noqa: E402
from clearance import ApprovalDenied, ModelCallBlocked, ToolCallBlocked, _decisions  # noqa: E402
from clearance._granting import BudgetExtension  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations import _usage_owner  # noqa: E402
from clearance.integrations.langchain import ClearanceMiddleware  # noqa: E402
from clearance.policy._compile import MODEL_CALL  # noqa: E402

from ..budgets._shared import FINANCE, PRICES, InThread, spend  # noqa: E402
from ._shared import records  # noqa: E402

ASKING = """
version: 1
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval, approval: {approvers: [role:finance]}}
"""
BLOCKING = "version: 1\nbudgets:\n  session: {max_cost_usd: 1}\n"
REASON = "session budget exhausted: $1.0000 spent, limit $1"


class Scripted(BaseChatModel):
    """Asks for `lookup(q)`, then answers with what the tool said; counts its calls. Each costs $0.10."""

    model_name: str = "scripted"
    calls: list[int] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Scripted:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(len(messages))
        usage = {"input_tokens": 100_000, "output_tokens": 0, "total_tokens": 100_000}
        meta = {"model_name": "scripted"}
        if isinstance(messages[-1], ToolMessage):
            message = AIMessage(content=f"The tool said: {messages[-1].content}", usage_metadata=usage)
        else:
            call = {"name": "lookup", "args": {"q": "x"}, "id": f"call_{len(self.calls)}"}
            message = AIMessage(content="", tool_calls=[call], usage_metadata=usage)
        message.response_metadata = meta
        return ChatResult(generations=[ChatGeneration(message=message)])


def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


def agent(model: Scripted, *, middleware: bool = True) -> Any:
    return create_agent(model, tools=[lookup], middleware=[ClearanceMiddleware()] if middleware else [])


def ask(graph: Any) -> str:
    return str(graph.invoke({"messages": [("user", "look up x")]})["messages"][-1].content)


@pytest.fixture
def setup(configure: Callable[..., Governor]) -> Callable[[str], Governor]:
    return lambda policy: configure(policy, price_overrides=PRICES)


def tool_reason() -> str:
    """What the next tool call in this session is told."""
    guarded = clearance.guard_tool("budget_probe", lambda: None)
    with pytest.raises(ToolCallBlocked) as blocked:
        guarded()
    return blocked.value.reason


@pytest.mark.parametrize("how", ["middleware", "callback", "model"])
def test_a_spent_budget_that_blocks_stops_the_model_call(setup: Any, how: str) -> None:
    gov = setup(BLOCKING)
    model = Scripted(calls=[])
    with clearance.session("s1"):
        spend(1.0)
        with pytest.raises(ModelCallBlocked) as blocked:
            if how == "model":
                model.invoke("hello")  # a model invoked directly: the callback
            else:
                ask(agent(model, middleware=how == "middleware"))
        assert blocked.value.reason == tool_reason() == REASON
    assert model.calls == []  # never called
    # The stopped call let go of the request it owned: a raw client's usage here is recorded again.
    assert _usage_owner.owner() is None
    assert blocked.value.model == "scripted" and blocked.value.rule_ids == ("budget:session",)
    [decided] = [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL]
    assert decided["decision"] == "block" and decided["args"] == {"model": "scripted"}
    assert decided["reason"] == REASON


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "callback"])
def test_a_spent_budget_that_asks_pauses_the_run_until_extended(setup: Any, middleware: bool) -> None:
    gov = setup(ASKING)
    model = Scripted(calls=[])
    spend(1.0, session="s1")
    run = InThread(lambda: ask(agent(model, middleware=middleware)), "s1")
    [asked] = _pending(gov)
    assert asked.tool == MODEL_CALL and asked.args == {"model": "scripted"} and asked.approvers == ("role:finance",)
    assert asked.reason == f"{REASON}; an approver may extend it"  # the tool call's, word for word
    assert model.calls == []  # paused before the model was called
    _decisions.decide(gov.db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=5))
    assert run.outcome() == "The tool said: found x"
    assert len(model.calls) == 2 and len(approvals.listing(gov.db, status=None)) == 1
    assert approvals.get(gov.db, asked.id).status == "executed"


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "callback"])
def test_each_call_of_a_spent_budget_asks_once(setup: Any, middleware: bool) -> None:
    """Approved without an extension, the next model call and tool call ask again, each once."""
    gov = setup(ASKING)
    spend(1.0, session="s1")
    decided: list[str] = []
    stop = threading.Event()

    def approve_each() -> None:
        while not stop.is_set():
            for a in approvals.listing(gov.db):
                _decisions.decide(gov.db, a.id, approve=True, by=FINANCE)
                decided.append(a.tool)
            stop.wait(0.01)

    approver = threading.Thread(target=approve_each, daemon=True)
    approver.start()
    try:
        run = InThread(lambda: ask(agent(Scripted(calls=[]), middleware=middleware)), "s1")
        assert run.outcome() == "The tool said: found x"
    finally:
        stop.set()
        approver.join()
    assert decided == [MODEL_CALL, "lookup", MODEL_CALL]  # the middleware's model calls are not asked twice


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "callback"])
def test_async_agents_wait_without_blocking_the_loop_and_a_denial_raises(setup: Any, middleware: bool) -> None:
    gov = setup(ASKING)
    model = Scripted(calls=[])
    spend(1.0, session="s1")

    async def main() -> list[str]:
        ticks: list[str] = []

        async def deny_when_asked() -> None:
            while not approvals.listing(gov.db):
                await asyncio.sleep(0.01)
            for _ in range(3):  # the loop runs while the model call waits
                ticks.append("tick")
                await asyncio.sleep(0.01)
            [asked] = approvals.listing(gov.db)
            _decisions.decide(gov.db, asked.id, approve=False, by=FINANCE, note="over budget")

        with clearance.session("s1"):
            denying = asyncio.create_task(deny_when_asked())
            with pytest.raises(ApprovalDenied, match="over budget"):
                await agent(model, middleware=middleware).ainvoke({"messages": [("user", "look up x")]})
            await denying
        return ticks

    assert asyncio.run(asyncio.wait_for(main(), 20)) == ["tick"] * 3
    assert model.calls == []


def test_without_budgets_model_calls_run_and_nothing_is_asked(setup: Any) -> None:
    gov = setup("version: 1\n")
    model = Scripted(calls=[])
    with clearance.session("s1"):
        spend(100.0)
        assert ask(agent(model)) == "The tool said: found x"
        assert ask(agent(model, middleware=False)) == "The tool said: found x"
    assert len(model.calls) == 4
    assert [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL] == []


def _pending(gov: Governor) -> list[Any]:
    from tests._wait import until

    until(lambda: approvals.listing(gov.db), "a pending approval")
    return approvals.listing(gov.db)
