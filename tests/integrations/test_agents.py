"""OpenAI Agents SDK: real `Runner` runs, offline, with a scripted model and a fake OpenAI server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool  # noqa: E402
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call  # noqa: E402

import clearance  # noqa: E402
from clearance import _decisions  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations import agents as governed  # noqa: E402

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


def refund_agent(ran: list[Any], amount: float = 850, model: Any = None) -> Agent[Any]:
    @function_tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    script = ScriptedModel(
        [
            ModelStep(output=[function_call("issue_refund", {"order_id": "A-1", "amount": amount}, call_id="call_1")]),
            ModelStep.respond(lambda call: ModelStep(output=[assistant_message(f"Done: {_tool_output(call)}")])),
        ]
    )
    return Agent(name="support", instructions="Refund orders.", tools=[issue_refund], model=model or script)


def run(agent: Agent[Any], text: str) -> Any:
    return asyncio.run(Runner.run(agent, text))  # (run_sync leaves its event loop open)


def _tool_output(call: Any) -> str:
    items = call.input if isinstance(call.input, list) else []
    outputs = [i.get("output") for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]
    return str(outputs[-1]) if outputs else "nothing"


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(
        gov, lambda: run(refund_agent(ran), "refund A-1"), approve=False, note="customer already refunded"
    )
    assert ran == []
    assert "customer already refunded" in result.final_output and "denied by user:lena" in result.final_output


def test_approved_from_another_thread_runs_once_with_the_coerced_arguments(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(gov, lambda: run(refund_agent(ran), "refund A-1"), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300.0)] and "refunded 300.0 on A-1" in result.final_output  # the approver's edit ran
    [a] = approvals.listing(gov.db, status=None)
    assert a.args == {"order_id": "A-1", "amount": 850.0} and a.status == "executed"


def test_blocked_calls_answer_the_model(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    ran: list[Any] = []
    result = run(refund_agent(ran, amount=9000), "refund")
    assert ran == [] and "Blocked by policy: Refunds over $5000 are never issued" in result.final_output


def test_tools_made_before_configure_are_governed(configure: Callable[..., Governor]) -> None:
    ran: list[Any] = []
    agent = refund_agent(ran, amount=9000)  # built before configure() installs anything
    configure(POLICY)
    result = run(agent, "refund")
    assert ran == [] and "never issued" in result.final_output


def test_on_block_raise_fails_the_run(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    agent = governed.govern(refund_agent([], amount=9000), on_block="raise")
    with pytest.raises(Exception, match="never issued") as raised:  # the SDK wraps it in its UserError
        run(agent, "refund")
    assert isinstance(raised.value.__cause__, clearance.ToolCallBlocked)


PAUSED = """
import asyncio, dataclasses, json, sys
from agents import Runner
from clearance.integrations import agents as governed
from tests.integrations.test_agents import refund_agent

ran = []
agent = governed.govern(refund_agent(ran), pause=True)
if sys.argv[1] == "start":
    result = asyncio.run(Runner.run(agent, "refund A-1"))
    pending = [dataclasses.asdict(p) for p in governed.pending_approvals(agent, result)]
    print(json.dumps({"state": result.to_state().to_string(), "pending": pending}))
else:
    state = open(sys.argv[2]).read()
    try:
        result = asyncio.run(governed.resume(agent, state))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__}))
    else:
        print(json.dumps({"ran": ran, "answer": result.final_output}))
"""


def _process(tmp_path: Path, *args: str) -> dict[str, Any]:
    return last_json(run_python(tmp_path, PAUSED, *args))


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_a_paused_run_resumes_in_another_process_once(
    configure: Callable[..., Governor], tmp_path: Path, approve: bool
) -> None:
    """`needs_approval` pauses the run; the state is saved; a human decides; other processes resume it."""
    gov = configure(POLICY)
    started = _process(tmp_path, "start")
    [pending] = started["pending"]
    assert (pending["tool"], pending["reason"]) == ("issue_refund", "Refunds over $200 need a lead")
    assert pending["call_id"]
    approval_id = pending["approval_id"]
    (tmp_path / "state.json").write_text(started["state"])
    assert _process(tmp_path, "resume", str(tmp_path / "state.json")) == {"error": "ApprovalPending"}
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=approve, note="over budget")
    resumed = _process(tmp_path, "resume", str(tmp_path / "state.json"))
    if approve:
        assert resumed["ran"] == [["A-1", 850.0]] and "refunded 850.0" in resumed["answer"]
        again = _process(tmp_path, "resume", str(tmp_path / "state.json"))  # a second resume of the same state
        # The model gets what the refund returned then, not a refusal it would retry or report.
        assert again["ran"] == [] and "refunded 850.0 on A-1" in again["answer"]
        assert "Not approved" not in again["answer"]
        assert len(records(gov, "tool_call.finished")) == 1
        assert approvals.get(gov.db, approval_id).status == "executed"
    else:
        assert resumed["ran"] == [] and "over budget" in resumed["answer"]
    # One decision, one approval: replaying the hook on resume recorded nothing new.
    assert len(records(gov, "tool_call.decided")) == 1 and len(approvals.listing(gov.db, status=None)) == 1


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_against_a_fake_openai_server_usage_is_recorded(configure: Callable[..., Governor], streaming: bool) -> None:
    """The real HTTP client path: the chat completions model talking to a server on 127.0.0.1."""
    from openai import AsyncOpenAI

    from ..fake_openai import FakeOpenAI

    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    try:
        ran: list[Any] = []

        async def main() -> str:
            async with AsyncOpenAI(base_url=fake.url, api_key="sk-test") as client:
                model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
                agent = refund_agent(ran, model=model)
                agent.model_settings = ModelSettings(include_usage=True)
                return await run_one(agent)

        async def run_one(agent: Agent[Any]) -> str:
            with clearance.session(f"ses-agents-{streaming}"):
                if not streaming:
                    return str((await Runner.run(agent, "refund A-1")).final_output)
                streamed = Runner.run_streamed(agent, "refund A-1")
                async for _ in streamed.stream_events():
                    pass
                return str(streamed.final_output)

        answer = while_deciding(gov, lambda: asyncio.run(main()), approve=False, note="over the limit")
    finally:
        fake.close()
    assert ran == [] and "over the limit" in answer
    assert bool(fake.requests[0].get("stream")) is streaming
    assert llm_usage(gov, f"ses-agents-{streaming}") == TWO_FAKE_CALLS
    assert all(c["priced"] for c in records(gov, "llm.call", f"ses-agents-{streaming}"))


def test_paused_tools_decide_blocked_and_allowed_calls_once(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    blocked = run(governed.govern(refund_agent(ran, amount=9000), pause=True), "refund")
    assert ran == [] and "never issued" in blocked.final_output and not blocked.interruptions
    allowed = run(governed.govern(refund_agent(ran, amount=50), pause=True), "refund")
    assert ran == [("A-1", 50.0)] and not allowed.interruptions
    assert [d["decision"] for d in records(gov, "tool_call.decided")] == ["block", "allow"]


def test_pause_refuses_a_tool_that_has_its_own_needs_approval() -> None:
    agent = refund_agent([])
    [tool] = agent.tools
    tool.needs_approval = True
    original = tool.on_invoke_tool
    with pytest.raises(clearance.ConfigurationError, match="already has needs_approval"):
        governed.govern(agent, pause=True)
    assert tool.on_invoke_tool is original  # left as it was
