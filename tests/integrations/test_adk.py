"""Google ADK: real `Runner` runs, offline, with a scripted model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

pytest.importorskip("google.adk")

from google.adk.agents import LlmAgent  # noqa: E402
from google.adk.apps import App  # noqa: E402
from google.adk.models.base_llm import BaseLlm  # noqa: E402
from google.adk.models.llm_response import LlmResponse  # noqa: E402
from google.adk.runners import Runner  # noqa: E402
from google.adk.sessions import InMemorySessionService  # noqa: E402
from google.genai import types  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations.adk import ClearancePlugin  # noqa: E402

from ._shared import (  # noqa: E402
    LEAD,
    POLICY,
    TWO_FAKE_CALLS,
    last_json,
    llm_usage,
    records,
    run_python,
    while_deciding,
)

USAGE = types.GenerateContentResponseUsageMetadata(
    prompt_token_count=120, candidates_token_count=30, total_token_count=150
)


class Scripted(BaseLlm):
    """Asks for `issue_refund(order_id, amount)`, then answers with what the tool said."""

    model: str = "gemini-2.0-flash"
    amount: float = 850

    async def generate_content_async(self, llm_request: Any, stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1].parts[-1] if llm_request.contents else None
        if last is not None and last.function_response is not None:
            part = types.Part(text=f"Done: {last.function_response.response}")
        else:
            call = types.FunctionCall(name="issue_refund", args={"order_id": "A-1", "amount": self.amount}, id="call_1")
            part = types.Part(function_call=call)
        yield LlmResponse(
            content=types.Content(role="model", parts=[part]), usage_metadata=USAGE, model_version=self.model
        )


def run(ran: list[Any], amount: float = 850, plugins: list[Any] | None = None) -> str:
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    agent = LlmAgent(name="support", model=Scripted(amount=amount), tools=[issue_refund])

    async def main() -> str:
        sessions = InMemorySessionService()
        if plugins is None:
            app = Runner(app_name="refunds", agent=agent, session_service=sessions)
        else:
            app = Runner(app=App(name="refunds", root_agent=agent, plugins=plugins), session_service=sessions)
        await sessions.create_session(app_name="refunds", user_id="u1", session_id="s1")
        message = types.Content(role="user", parts=[types.Part(text="refund A-1")])
        texts = []
        with clearance.session("ses-adk"):
            async for event in app.run_async(user_id="u1", session_id="s1", new_message=message):
                for part in (event.content.parts if event.content else None) or []:
                    if part.text:
                        texts.append(part.text)
        await app.close()
        return " ".join(texts)

    return asyncio.run(main())


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(
        gov, lambda: run(ran), approve=False, note="customer already refunded"
    )  # no plugin given: configure() gave every Runner one
    assert ran == [] and "customer already refunded" in answer and "denied by user:lena" in answer


def test_approved_from_another_thread_runs_once_as_edited(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(gov, lambda: run(ran), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300)] and "refunded 300" in answer
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "executed"


def test_blocked_and_usage_recorded_once_even_with_an_explicit_plugin(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = run(ran, amount=9000, plugins=[ClearancePlugin()])  # explicit: the automatic one stands aside
    assert ran == [] and "Blocked by policy: Refunds over $5000 are never issued" in answer
    clearance.flush()
    calls = records(gov, "llm.call", "ses-adk")
    assert [(c["model"], c["input_tokens"], c["output_tokens"]) for c in calls] == [("gemini-2.0-flash", 120, 30)] * 2
    assert len(records(gov, "tool_call.decided")) == 1


def test_on_block_raise(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    with pytest.raises(RuntimeError, match="never issued") as raised:  # ADK wraps plugin errors
        run([], amount=9000, plugins=[ClearancePlugin(on_block="raise")])
    assert isinstance(raised.value.__cause__, clearance.ToolCallBlocked)


@pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")  # from litellm
def test_against_a_fake_openai_server_through_litellm(
    configure: Callable[..., Governor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real HTTP client path: ADK's LiteLlm model talking to an OpenAI-compatible server on 127.0.0.1."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of litellm's price list
    pytest.importorskip("litellm")
    from google.adk.models.lite_llm import LiteLlm

    from ..fake_openai import FakeOpenAI

    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    model = LiteLlm(model="openai/gpt-4o-mini", api_base=fake.url, api_key="sk-test")
    agent = LlmAgent(name="support", model=model, tools=[issue_refund])

    async def main() -> str:
        sessions = InMemorySessionService()
        app = Runner(app_name="refunds", agent=agent, session_service=sessions)
        await sessions.create_session(app_name="refunds", user_id="u1", session_id="s1")
        message = types.Content(role="user", parts=[types.Part(text="refund A-1")])
        texts = []
        with clearance.session("ses-adk-http"):
            async for event in app.run_async(user_id="u1", session_id="s1", new_message=message):
                texts += [p.text for p in (event.content.parts if event.content else None) or [] if p.text]
        await app.close()
        return " ".join(texts)

    try:
        answer = while_deciding(gov, lambda: asyncio.run(main()), approve=False, note="over the limit")
    finally:
        fake.close()
    assert ran == [] and "over the limit" in answer
    assert llm_usage(gov, "ses-adk-http") == TWO_FAKE_CALLS


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_request_confirmation_pauses_and_resume_continues_once(
    configure: Callable[..., Governor], approve: bool
) -> None:
    """`pause=True`: ADK's own request_confirmation; a later runner on the same sessions resumes it."""
    from clearance import _decisions
    from clearance.integrations.adk import pending_approvals, resume

    gov = configure(POLICY)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    sessions = InMemorySessionService()

    def runner() -> Runner:  # a fresh runner each time, as a fresh process would make
        agent = LlmAgent(name="support", model=Scripted(amount=850), tools=[issue_refund])
        app = App(name="refunds", root_agent=agent, plugins=[ClearancePlugin(pause=True)])
        return Runner(app=app, session_service=sessions)

    async def main() -> tuple[str, str]:
        await sessions.create_session(app_name="refunds", user_id="u1", session_id="s1")
        first = runner()
        message = types.Content(role="user", parts=[types.Part(text="refund A-1")])
        async for _ in first.run_async(user_id="u1", session_id="s1", new_message=message):
            pass
        await first.close()
        assert ran == []
        second = runner()
        [pending] = await pending_approvals(second, user_id="u1", session_id="s1")
        assert (pending.tool, pending.call_id, pending.reason) == (
            "issue_refund",
            "call_1",
            "Refunds over $200 need a lead",
        )
        approval_id = pending.approval_id
        with pytest.raises(clearance.ApprovalPending):
            await resume(second, user_id="u1", session_id="s1")
        _decisions.decide(gov.db, approval_id, by=LEAD, approve=approve, note="over budget")
        events = await resume(second, user_id="u1", session_id="s1")
        await second.close()
        texts = [p.text for e in events for p in (e.content.parts if e.content else None) or [] if p.text]
        return approval_id, " ".join(texts)

    approval_id, answer = asyncio.run(main())
    if approve:
        assert ran == [(("A-1", 850))] and "refunded 850" in answer
        assert approvals.get(gov.db, approval_id).status == "executed"
    else:
        assert ran == [] and "over budget" in answer
    assert len(records(gov, "tool_call.decided")) == 1 and len(approvals.listing(gov.db, status=None)) == 1


DURABLE = """
import asyncio, dataclasses, json, sys
import clearance
clearance.configure()
from google.adk.apps import App
from google.adk.agents import LlmAgent
from google.adk.runners import Runner
from google.adk.sessions import DatabaseSessionService
from google.genai import types
from clearance.integrations.adk import ClearancePlugin, pending_approvals, resume
from tests.integrations.test_adk import Scripted

def issue_refund(order_id: str, amount: float) -> str:
    \"\"\"Refund an order.\"\"\"
    return f"refunded {amount} on {order_id}"

async def main(step: str, url: str) -> None:
    sessions = DatabaseSessionService(db_url=url)
    agent = LlmAgent(name="support", model=Scripted(amount=850), tools=[issue_refund])
    app = App(name="refunds", root_agent=agent, plugins=[ClearancePlugin(pause=True)])
    runner = Runner(app=app, session_service=sessions)
    where = dict(user_id="u1", session_id="adk-ses-7")
    if step == "start":
        await sessions.create_session(app_name="refunds", **where)
        message = types.Content(role="user", parts=[types.Part(text="refund A-1")])
        async for _ in runner.run_async(new_message=message, **where):
            pass
        out = [dataclasses.asdict(p) for p in await pending_approvals(runner, **where)]
    else:
        events = await resume(runner, **where)
        out = [p.text for e in events for p in (e.content.parts if e.content else None) or [] if p.text]
    await runner.close()
    await sessions.close()
    print(json.dumps({"out": out}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_a_run_paused_and_resumed_in_another_process_is_one_clearance_session(
    configure: Callable[..., Governor], tmp_path: Any
) -> None:
    """The ADK session id is Clearance's session: tool calls and usage of both processes land in it."""
    pytest.importorskip("aiosqlite")
    from clearance import _decisions

    gov = configure(POLICY)
    url = f"sqlite+aiosqlite:///{tmp_path / 'adk-sessions.db'}"
    [pending] = last_json(run_python(tmp_path, DURABLE, "start", url))["out"]
    assert pending["tool"] == "issue_refund" and pending["call_id"] == "call_1"
    _decisions.decide(gov.db, pending["approval_id"], by=LEAD, approve=True)
    answer = " ".join(last_json(run_python(tmp_path, DURABLE, "resume", url))["out"])
    assert "refunded 850" in answer
    assert approvals.get(gov.db, pending["approval_id"]).status == "executed"
    kinds = ("tool_call.decided", "approval.requested", "tool_call.finished", "approval.executed", "llm.call")
    found = {kind: [r["session"] for r in records(gov, kind)] for kind in kinds}
    assert len(found["llm.call"]) == 3  # asking for the refund, answering while paused, answering once resumed
    assert {s for sessions in found.values() for s in sessions} == {"adk-ses-7"}, found


@pytest.mark.parametrize("padding", [0, 100_000], ids=["result", "result-recorded-cut"])
def test_a_paused_session_resumed_twice_runs_once_and_the_model_gets_the_recorded_result(
    configure: Callable[..., Governor], padding: int
) -> None:
    """The same saved state resumed again (a copy, a retried job): the call ran already, so the
    model is given what it returned then — not a refusal it would retry or report as a failure."""
    import copy

    from clearance import _decisions
    from clearance.integrations.adk import pending_approvals, resume

    gov = configure(POLICY)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}" + "." * padding

    def runner(sessions: InMemorySessionService) -> Runner:
        agent = LlmAgent(name="support", model=Scripted(amount=850), tools=[issue_refund])
        return Runner(
            app=App(name="refunds", root_agent=agent, plugins=[ClearancePlugin(pause=True)]), session_service=sessions
        )

    async def resumed(sessions: InMemorySessionService) -> str:
        again = runner(sessions)
        events = await resume(again, user_id="u1", session_id="s1")
        await again.close()
        return " ".join(p.text for e in events for p in (e.content.parts if e.content else None) or [] if p.text)

    async def main() -> tuple[str, str]:
        sessions = InMemorySessionService()
        await sessions.create_session(app_name="refunds", user_id="u1", session_id="s1")
        first = runner(sessions)
        message = types.Content(role="user", parts=[types.Part(text="refund A-1")])
        async for _ in first.run_async(user_id="u1", session_id="s1", new_message=message):
            pass
        await first.close()
        [pending] = await pending_approvals(first, user_id="u1", session_id="s1")
        saved = copy.deepcopy(sessions)  # the paused state, as a second resumer would read it
        _decisions.decide(gov.db, pending.approval_id, by=LEAD, approve=True)
        return await resumed(sessions), await resumed(saved)

    once, twice = asyncio.run(main())
    assert ran == [("A-1", 850)] and "refunded 850" in once
    assert "refunded 850" in twice and "Not approved" not in twice
    assert len(records(gov, "tool_call.finished")) == 1
    if padding:  # recorded cut to 64 KiB: the model is told it has the beginning, not handed a marker
        assert "'repr'" not in twice and "cut: Clearance recorded only the first" in twice
