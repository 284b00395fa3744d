"""OpenAI Agents SDK: a spent budget stops or pauses the model call itself (`ClearanceHooks.on_llm_start`), offline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, RunContextWrapper, RunHooks, Runner, function_tool  # noqa: E402
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call  # noqa: E402

import clearance  # noqa: E402
from clearance import ApprovalDenied, ModelCallBlocked, ToolCallBlocked, _decisions  # noqa: E402
from clearance._granting import BudgetExtension  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations.agents import ClearanceHooks  # noqa: E402
from clearance.policy._compile import MODEL_CALL  # noqa: E402

from ..budgets._shared import FINANCE, PRICES, spend  # noqa: E402
from ._shared import records  # noqa: E402

ASKING = """
version: 1
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval, approval: {approvers: [role:finance]}}
"""
BLOCKING = "version: 1\nbudgets:\n  session: {max_cost_usd: 1}\n"
REASON = "session budget exhausted: $1.0000 spent, limit $1"


@function_tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


def scripted() -> ScriptedModel:
    return ScriptedModel(
        [
            ModelStep(output=[function_call("lookup", {"q": "x"}, call_id="call_1")]),
            ModelStep(output=[assistant_message("The tool said: found x")]),
        ]
    )


def agent(model: ScriptedModel) -> Agent[Any]:
    return Agent(name="a", instructions="Look things up.", tools=[lookup], model=model)


class Counting(RunHooks[Any]):
    """The application's own hooks: still called through ClearanceHooks."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_llm_start(self, context: RunContextWrapper[Any], agent: Any, *args: Any) -> None:
        self.seen.append("llm_start")

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Any, response: Any) -> None:
        self.seen.append("llm_end")

    async def on_tool_end(self, context: RunContextWrapper[Any], agent: Any, tool: Any, result: str) -> None:
        self.seen.append(f"tool_end:{result}")


async def ask(model: ScriptedModel, hooks: Any) -> str:
    with clearance.session("s1"):
        result = await Runner.run(agent(model), "look up x", hooks=hooks)
    return str(result.final_output)


@pytest.fixture
def setup(configure: Callable[..., Governor]) -> Callable[[str], Governor]:
    return lambda policy: configure(policy, price_overrides=PRICES)


def test_a_spent_budget_that_blocks_stops_the_model_call(setup: Any) -> None:
    gov = setup(BLOCKING)
    model, mine = scripted(), Counting()
    spend(1.0, session="s1")
    with pytest.raises(ModelCallBlocked) as blocked:
        asyncio.run(ask(model, ClearanceHooks(mine)))
    assert model.calls == () and mine.seen == []  # neither the model nor the app's own hook ran
    with clearance.session("s1"), pytest.raises(ToolCallBlocked) as by_tool:
        clearance.guard_tool("probe", lambda: None)()
    assert blocked.value.reason == by_tool.value.reason == REASON
    [decided] = [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL]
    assert decided["decision"] == "block" and decided["args"] == {"model": "ScriptedModel"}


def test_a_spent_budget_that_asks_pauses_the_run_on_the_loop_until_extended(setup: Any) -> None:
    gov = setup(ASKING)
    model, mine = scripted(), Counting()
    spend(1.0, session="s1")

    async def main() -> tuple[str, list[str]]:
        ticks: list[str] = []

        async def extend_when_asked() -> None:
            while not approvals.listing(gov.db):
                await asyncio.sleep(0.01)
            for _ in range(3):  # the loop runs while the model call waits
                ticks.append("tick")
                await asyncio.sleep(0.01)
            [asked] = approvals.listing(gov.db)
            assert asked.tool == MODEL_CALL and asked.approvers == ("role:finance",)
            assert asked.reason == f"{REASON}; an approver may extend it"
            assert model.calls == ()
            _decisions.decide(gov.db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=5))

        extending = asyncio.create_task(extend_when_asked())
        answer = await ask(model, ClearanceHooks(mine))
        await extending
        return answer, ticks

    answer, ticks = asyncio.run(asyncio.wait_for(main(), 20))
    assert answer == "The tool said: found x" and ticks == ["tick"] * 3
    assert len(model.calls) == 2 and len(approvals.listing(gov.db, status=None)) == 1
    assert mine.seen == ["llm_start", "llm_end", "tool_end:found x", "llm_start", "llm_end"]


def test_a_denial_stops_the_run(setup: Any) -> None:
    gov = setup(ASKING)
    model = scripted()
    spend(1.0, session="s1")

    async def main() -> None:
        async def deny_when_asked() -> None:
            while not (found := approvals.listing(gov.db)):
                await asyncio.sleep(0.01)
            _decisions.decide(gov.db, found[0].id, approve=False, by=FINANCE, note="over budget")

        denying = asyncio.create_task(deny_when_asked())
        try:
            await ask(model, ClearanceHooks())
        finally:
            await denying

    with pytest.raises(ApprovalDenied, match="over budget"):
        asyncio.run(asyncio.wait_for(main(), 20))
    assert model.calls == ()


def test_without_budgets_model_calls_run_and_nothing_is_asked(setup: Any) -> None:
    gov = setup("version: 1\n")
    model = scripted()
    spend(100.0, session="s1")
    assert asyncio.run(ask(model, ClearanceHooks())) == "The tool said: found x"
    assert len(model.calls) == 2
    assert [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL] == []
