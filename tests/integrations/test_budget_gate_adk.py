"""Google ADK: a spent budget stops or pauses the model call itself (`before_model_callback`), offline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

pytest.importorskip("google.adk")

from google.adk.agents import LlmAgent  # noqa: E402
from google.adk.models.base_llm import BaseLlm  # noqa: E402
from google.adk.models.llm_response import LlmResponse  # noqa: E402
from google.adk.runners import Runner  # noqa: E402
from google.adk.sessions import InMemorySessionService  # noqa: E402
from google.genai import types  # noqa: E402

import clearance  # noqa: E402
from clearance import ApprovalDenied, ModelCallBlocked, ToolCallBlocked, _decisions  # noqa: E402
from clearance._granting import BudgetExtension  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
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
USAGE = types.GenerateContentResponseUsageMetadata(prompt_token_count=100_000, candidates_token_count=0)


class Scripted(BaseLlm):
    """Asks for `lookup(q)`, then answers with what the tool said; counts its calls. Each costs $0.10."""

    model: str = "scripted"
    calls: list[int] = []

    async def generate_content_async(self, llm_request: Any, stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        self.calls.append(len(llm_request.contents))
        last = llm_request.contents[-1].parts[-1] if llm_request.contents else None
        if last is not None and last.function_response is not None:
            part = types.Part(text=f"The tool said: {last.function_response.response['result']}")
        else:
            part = types.Part(function_call=types.FunctionCall(name="lookup", args={"q": "x"}, id="call_1"))
        yield LlmResponse(
            content=types.Content(role="model", parts=[part]), usage_metadata=USAGE, model_version="scripted"
        )


def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


async def ask(model: Scripted) -> str:
    """One run in session `s1`, on a Runner made after configure() (it has the plugin)."""
    sessions = InMemorySessionService()
    runner = Runner(app_name="app", agent=LlmAgent(name="a", model=model, tools=[lookup]), session_service=sessions)
    await sessions.create_session(app_name="app", user_id="u1", session_id="adk-1")
    message = types.Content(role="user", parts=[types.Part(text="look up x")])
    texts = []
    try:
        with clearance.session("s1"):
            async for event in runner.run_async(user_id="u1", session_id="adk-1", new_message=message):
                texts += [p.text for p in (event.content.parts if event.content else None) or [] if p.text]
    finally:
        await runner.close()
    return " ".join(texts)


@pytest.fixture
def setup(configure: Callable[..., Governor]) -> Callable[[str], Governor]:
    return lambda policy: configure(policy, price_overrides=PRICES)


def test_a_spent_budget_that_blocks_stops_the_model_call(setup: Any) -> None:
    gov = setup(BLOCKING)
    model = Scripted(calls=[])
    spend(1.0, session="s1")
    with pytest.raises(RuntimeError) as raised:  # ADK wraps what a plugin raises
        asyncio.run(ask(model))
    blocked = raised.value.__cause__
    assert isinstance(blocked, ModelCallBlocked) and model.calls == []
    with clearance.session("s1"), pytest.raises(ToolCallBlocked) as by_tool:
        clearance.guard_tool("probe", lambda: None)()
    assert blocked.reason == by_tool.value.reason == REASON and blocked.model == "scripted"
    [decided] = [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL]
    assert decided["decision"] == "block" and decided["args"] == {"model": "scripted"}


def test_a_spent_budget_that_asks_pauses_the_run_on_the_loop_until_extended(setup: Any) -> None:
    gov = setup(ASKING)
    model = Scripted(calls=[])
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
            assert asked.tool == MODEL_CALL and asked.args == {"model": "scripted"}
            assert asked.reason == f"{REASON}; an approver may extend it" and asked.approvers == ("role:finance",)
            assert model.calls == []
            _decisions.decide(gov.db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=5))

        extending = asyncio.create_task(extend_when_asked())
        answer = await ask(model)
        await extending
        return answer, ticks

    answer, ticks = asyncio.run(asyncio.wait_for(main(), 20))
    assert answer == "The tool said: found x" and ticks == ["tick"] * 3
    assert len(model.calls) == 2 and len(approvals.listing(gov.db, status=None)) == 1
    assert approvals.listing(gov.db, status=None)[0].status == "executed"


def test_a_denial_stops_the_run(setup: Any) -> None:
    gov = setup(ASKING)
    model = Scripted(calls=[])
    spend(1.0, session="s1")

    async def main() -> None:
        async def deny_when_asked() -> None:
            while not (found := approvals.listing(gov.db)):
                await asyncio.sleep(0.01)
            _decisions.decide(gov.db, found[0].id, approve=False, by=FINANCE, note="over budget")

        denying = asyncio.create_task(deny_when_asked())
        try:
            await ask(model)
        finally:
            await denying

    with pytest.raises(RuntimeError) as raised:
        asyncio.run(asyncio.wait_for(main(), 20))
    assert isinstance(raised.value.__cause__, ApprovalDenied) and "over budget" in str(raised.value.__cause__)
    assert model.calls == []


def test_without_budgets_model_calls_run_and_nothing_is_asked(setup: Any) -> None:
    gov = setup("version: 1\n")
    model = Scripted(calls=[])
    spend(100.0, session="s1")
    assert asyncio.run(ask(model)) == "The tool said: found x"
    assert len(model.calls) == 2
    assert [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL] == []
