"""Pydantic AI: real agent runs, offline, with a scripted `FunctionModel` and a fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, ToolApproved  # noqa: E402
from pydantic_ai.messages import (  # noqa: E402
    ModelMessage,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel  # noqa: E402
from pydantic_ai.usage import RequestUsage  # noqa: E402

import clearance  # noqa: E402
from clearance import ModelCallBlocked, ToolCallBlocked, _decisions  # noqa: E402
from clearance._granting import BudgetExtension  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations import _usage_owner  # noqa: E402
from clearance.integrations import pydantic_ai as governed  # noqa: E402
from clearance.integrations.pydantic_ai import Clearance  # noqa: E402
from clearance.policy._compile import MODEL_CALL  # noqa: E402

from ..budgets._shared import FINANCE, PRICES, spend  # noqa: E402
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

USAGE = RequestUsage(input_tokens=120, output_tokens=30)


def script(args: dict[str, Any] | str, call_id: str = "call_1", tool: str = "issue_refund") -> FunctionModel:
    """A model that asks for `tool(**args)` once, then answers with what the tool (or Pydantic AI) returned."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [p for p in messages[-1].parts if isinstance(p, (ToolReturnPart, RetryPromptPart))]
        if returned:
            return ModelResponse(parts=[TextPart(f"Done: {returned[-1].content}")], usage=USAGE)
        return ModelResponse(parts=[ToolCallPart(tool, args, tool_call_id=call_id)], usage=USAGE)

    return FunctionModel(respond, model_name="scripted")


def refund_agent(
    ran: list[Any], amount: Any = 850, *, model: Any = None, call_id: str = "call_1", **agent_kwargs: Any
) -> Agent[None, Any]:
    agent = Agent(model or script({"order_id": "A-1", "amount": amount}, call_id), **agent_kwargs)

    @agent.tool_plain
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    return agent


def run(agent: Agent[Any, Any], prompt: str) -> Any:
    return asyncio.run(agent.run(prompt))  # (run_sync leaves its event loop open)


def test_an_allowed_call_runs_and_each_model_request_is_recorded_once(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    with clearance.session("ses-allowed"):
        result = run(refund_agent(ran, amount=50), "refund A-1")
    assert ran == [("A-1", 50.0)] and result.output == "Done: refunded 50.0 on A-1"
    [decided] = records(gov, "tool_call.decided")
    assert decided["decision"] == "allow" and decided["args"] == {"order_id": "A-1", "amount": 50.0}
    [finished] = records(gov, "tool_call.finished")
    assert finished["decision"] == "ok"
    assert llm_usage(gov, "ses-allowed") == [("scripted", 120, 30)] * 2  # two model requests, one record each


def test_a_blocked_call_tells_the_model_why_and_the_run_goes_on(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    ran: list[Any] = []
    result = run(refund_agent(ran, amount=9000), "refund")
    assert ran == []
    assert result.output == "Done: Blocked by policy: Refunds over $5000 are never issued"
    [returned] = [p for m in result.all_messages() for p in m.parts if isinstance(p, ToolReturnPart)]
    assert returned.outcome == "failed"  # Pydantic AI's own failed tool result


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The store the approvals are decided in: a SQLite file, or a fresh PostgreSQL schema."""
    return str(db_path) if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_approved_from_another_thread_runs_the_edit_once(configure: Callable[..., Governor], database: str) -> None:
    gov = configure(POLICY, database_url=database)
    ran: list[Any] = []
    agent = refund_agent(ran)
    result = while_deciding(gov, lambda: run(agent, "refund A-1"), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300.0)] and result.output == "Done: refunded 300.0 on A-1"  # the approver's edit ran
    [a] = approvals.listing(gov.db, status=None)
    assert a.args == {"order_id": "A-1", "amount": 850.0} and a.status == "executed"  # decided as the tool gets it


def test_denied_never_runs_and_the_model_gets_the_note(configure: Callable[..., Governor], database: str) -> None:
    gov = configure(POLICY, database_url=database)
    ran: list[Any] = []
    agent = refund_agent(ran)
    result = while_deciding(gov, lambda: run(agent, "refund"), approve=False, note="customer already refunded")
    assert ran == [] and "denied by user:lena: customer already refunded" in result.output


def test_the_wait_does_not_block_the_event_loop(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []

    async def main() -> tuple[str, list[str]]:
        ticks: list[str] = []

        async def approve_when_asked() -> None:
            while not approvals.listing(gov.db):
                await asyncio.sleep(0.01)
            for _ in range(3):  # the loop runs while the tool call waits
                ticks.append("tick")
                await asyncio.sleep(0.01)
            _decisions.decide(gov.db, approvals.listing(gov.db)[0].id, by=LEAD, approve=True)

        approving = asyncio.create_task(approve_when_asked())
        result = await refund_agent(ran).run("refund")
        await approving
        return result.output, ticks

    output, ticks = asyncio.run(asyncio.wait_for(main(), 20))
    assert output == "Done: refunded 850.0 on A-1" and ticks == ["tick"] * 3


def test_agents_made_before_configure_are_governed_once(configure: Callable[..., Governor]) -> None:
    ran: list[Any] = []
    agent = refund_agent(ran, amount=9000)  # built before configure() installs anything
    explicit = refund_agent(ran, amount=9000, capabilities=[Clearance()])
    gov = configure(POLICY)
    assert "never issued" in run(agent, "refund").output
    assert "never issued" in run(explicit, "refund").output  # its own Clearance, not a second one
    assert ran == [] and len(records(gov, "tool_call.decided")) == 2


def test_on_block_raise_fails_the_run(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    agent = refund_agent([], amount=9000, capabilities=[Clearance(on_block="raise")])
    with pytest.raises(ToolCallBlocked, match="never issued"):
        run(agent, "refund")


# -- durable pause -------------------------------------------------------------------------------

PAUSED = """
import asyncio, json, sys
from pydantic_ai import DeferredToolRequests
from clearance.integrations import pydantic_ai as governed
from tests.integrations.test_pydantic_ai import refund_agent, run

ran = []
agent = refund_agent(ran, output_type=[str, DeferredToolRequests], capabilities=[governed.Clearance(pause=True)])
if sys.argv[1] == "start":
    result = run(agent, "refund A-1")
    saved = result.all_messages_json().decode()
    print(json.dumps({"messages": saved, "ids": governed.approval_ids(saved), "meta": result.output.metadata}))
else:
    saved = open(sys.argv[2]).read()
    try:
        result = asyncio.run(governed.resume(agent, saved))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__}))
    else:
        print(json.dumps({"ran": ran, "answer": result.output}))
"""


def _process(tmp_path: Path, *args: str) -> dict[str, Any]:
    return last_json(run_python(tmp_path, PAUSED, *args))


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_a_paused_run_resumes_in_another_process_once(
    configure: Callable[..., Governor], tmp_path: Path, approve: bool
) -> None:
    """`DeferredToolRequests` ends the run; messages are saved; a human decides; other processes resume it."""
    gov = configure(POLICY)
    started = _process(tmp_path, "start")
    [approval_id] = started["ids"]
    assert started["meta"] == {"call_1": {"clearance_approval": approval_id, "reason": "Refunds over $200 need a lead"}}
    saved = tmp_path / "messages.json"
    saved.write_text(started["messages"])
    assert _process(tmp_path, "resume", str(saved)) == {"error": "ApprovalPending"}
    decision: dict[str, Any] = {"args": {"amount": 300}} if approve else {}
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=approve, note="over budget", **decision)
    resumed = _process(tmp_path, "resume", str(saved))
    if approve:
        assert resumed == {"ran": [["A-1", 300.0]], "answer": "Done: refunded 300.0 on A-1"}  # as edited
        again = _process(tmp_path, "resume", str(saved))  # a second resume of the same saved messages
        # The model gets what the refund returned then, not a refusal it would retry or report.
        assert again == {"ran": [], "answer": "Done: refunded 300.0 on A-1"}
        assert len(records(gov, "tool_call.finished")) == 1
        assert approvals.get(gov.db, approval_id).status == "executed"
    else:
        assert resumed["ran"] == [] and "denied by user:lena: over budget" in resumed["answer"]
    # One decision, one approval: the resumes found the call by its id and recorded nothing new.
    assert len(records(gov, "tool_call.decided")) == 1 and len(approvals.listing(gov.db, status=None)) == 1


def test_paused_agents_run_allowed_calls_and_refuse_blocked_ones_in_the_run(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    kwargs: dict[str, Any] = {"output_type": [str, DeferredToolRequests], "capabilities": [Clearance(pause=True)]}
    assert "never issued" in run(refund_agent(ran, amount=9000, call_id="c-9000", **kwargs), "refund").output
    assert run(refund_agent(ran, amount=50, call_id="c-50", **kwargs), "refund").output.startswith("Done: refunded")
    assert ran == [("A-1", 50.0)]
    assert [d["decision"] for d in records(gov, "tool_call.decided")] == ["block", "allow"]


def test_calls_the_application_defers_itself_are_left_to_it(configure: Callable[..., Governor]) -> None:
    """A tool with its own `requires_approval`: Clearance allows it, the application answers it on resume."""
    configure(POLICY)
    ran: list[Any] = []
    agent = Agent(
        script({"order_id": "A-1", "amount": 50}, "call-own"),
        output_type=[str, DeferredToolRequests],
        capabilities=[Clearance(pause=True)],
    )

    @agent.tool_plain(requires_approval=True)
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    paused = run(agent, "refund")
    assert isinstance(paused.output, DeferredToolRequests) and ran == []
    assert "clearance_approval" not in paused.output.metadata.get("call-own", {})  # not Clearance's to decide
    saved = paused.all_messages_json()
    with pytest.raises(clearance.ConfigurationError, match="answer it in `answered`"):
        asyncio.run(governed.resume(agent, saved))
    mine = DeferredToolResults(approvals={"call-own": True})
    assert asyncio.run(governed.resume(agent, saved, answered=mine)).output == "Done: refunded 50.0 on A-1"
    assert ran == [("A-1", 50.0)]


# -- the real HTTP path --------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_against_a_fake_openai_server(configure: Callable[..., Governor], streaming: bool) -> None:
    """`OpenAIChatModel` over HTTP to 127.0.0.1: governed, one priced record per request, owned by this integration."""
    import httpx
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from ..fake_openai import FakeOpenAI

    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    owners: list[str | None] = []

    async def seen(request: httpx.Request) -> None:
        owners.append(_usage_owner.owner())

    async def main() -> str:
        http = httpx.AsyncClient(event_hooks={"request": [seen]})
        async with AsyncOpenAI(base_url=fake.url, api_key="sk-test", http_client=http) as client:
            provider = OpenAIProvider(openai_client=client)
            agent = refund_agent(ran, model=OpenAIChatModel("gpt-4o-mini", provider=provider))
            with clearance.session(f"ses-pai-{streaming}"):
                if not streaming:
                    return str((await agent.run("refund A-1")).output)
                async with agent.run_stream("refund A-1") as stream:
                    return str(await stream.get_output())

    ran: list[Any] = []
    try:
        answer = while_deciding(gov, lambda: asyncio.run(main()), approve=False, note="over the limit")
    finally:
        fake.close()
    assert ran == [] and "over the limit" in answer
    assert bool(fake.requests[0].get("stream")) is streaming
    assert llm_usage(gov, f"ses-pai-{streaming}") == TWO_FAKE_CALLS
    assert all(c["priced"] for c in records(gov, "llm.call", f"ses-pai-{streaming}"))
    assert owners == ["pydantic_ai", "pydantic_ai"]  # the raw openai capture leaves these to us


def test_a_spent_budget_stops_the_model_request(configure: Callable[..., Governor]) -> None:
    configure("version: 1\nbudgets:\n  session: {max_cost_usd: 1}\n", price_overrides=PRICES)
    spend(1.0, session="s1")
    asked: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        asked.append(len(messages))
        return ModelResponse(parts=[TextPart("hello")])

    with clearance.session("s1"), pytest.raises(ModelCallBlocked, match="session budget exhausted"):
        run(Agent(FunctionModel(respond, model_name="scripted")), "hi")
    assert asked == []


def test_a_spent_budget_that_asks_waits_on_the_loop_until_extended(configure: Callable[..., Governor]) -> None:
    asking = "session: {max_cost_usd: 1, on_exceed: require_approval, approval: {approvers: [role:finance]}}"
    gov = configure(f"version: 1\nbudgets:\n  {asking}\n", price_overrides=PRICES)
    spend(1.0, session="s1")
    ran: list[Any] = []

    async def main() -> tuple[str, list[str]]:
        ticks: list[str] = []

        async def extend_when_asked() -> None:
            while not approvals.listing(gov.db):
                await asyncio.sleep(0.01)
            for _ in range(3):  # the loop runs while the model request waits
                ticks.append("tick")
                await asyncio.sleep(0.01)
            [asked] = approvals.listing(gov.db)
            assert asked.tool == MODEL_CALL and asked.args == {"model": "scripted"}
            _decisions.decide(gov.db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=5))

        extending = asyncio.create_task(extend_when_asked())
        with clearance.session("s1"):
            result = await refund_agent(ran, amount=50).run("refund")
        await extending
        return result.output, ticks

    output, ticks = asyncio.run(asyncio.wait_for(main(), 20))
    assert output == "Done: refunded 50.0 on A-1" and ticks == ["tick"] * 3 and ran == [("A-1", 50.0)]


# -- MCP -----------------------------------------------------------------------------------------


def test_mcp_toolsets_are_governed(configure: Callable[..., Governor], tmp_path: Path) -> None:
    import sys

    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai.mcp import MCPToolset

    gov = configure(POLICY)
    ledger = tmp_path / "ledger.txt"
    server = Path(__file__).with_name("mcp_upstream.py")
    transport = StdioTransport(command=sys.executable, args=[str(server), str(ledger)])
    agent = Agent(script({"order_id": "A-1", "amount": 9000}), toolsets=[MCPToolset(Client(transport))])
    blocked = run(agent, "refund")
    assert "never issued" in blocked.output and not ledger.exists()
    agent = Agent(script({"order_id": "A-2", "amount": 50}, "call_2"), toolsets=[MCPToolset(Client(transport))])
    assert "refunded 50.0 on A-2" in run(agent, "refund").output
    assert ledger.read_text() == "A-2 50.0\n"
    # Decided once each: the MCP client layer below stands aside for a call governed here.
    assert [d["decision"] for d in records(gov, "tool_call.decided")] == ["block", "allow"]


# -- hostile arguments ---------------------------------------------------------------------------


HOSTILE_TEXT = "a\x00b\ud800c\u202egnp.exe"  # NUL, a lone surrogate, a right-to-left override
DEEP_JSON = '{"d":' * 10_000 + '"bottom"' + "}" * 10_000


def _deep() -> Any:
    deep: Any = "bottom"
    for _ in range(10_000):
        deep = {"d": deep}
    return deep


@pytest.mark.parametrize(
    "args",
    [
        {"text": HOSTILE_TEXT, "n": math.nan, "data": {"d": "bottom"}},  # as a Python model may hand them over
        {"text": "deep", "n": 1.5, "data": _deep()},
        '{"text": "deep", "n": NaN, "data": ' + DEEP_JSON + "}",  # as JSON text, the way an HTTP model sends them
    ],
    ids=["nan-nul-surrogate-rtl", "10k-deep", "10k-deep-json"],
)
def test_hostile_arguments_are_recorded_readably_and_never_crash(configure: Callable[..., Governor], args: Any) -> None:
    gov = configure("version: 1\ndefault: allow\n")
    got: list[Any] = []
    agent = Agent(script(args, tool="note"))

    @agent.tool_plain
    def note(text: str, n: float, data: Any) -> str:
        """Take a note."""
        got.append(text)
        return "noted"

    result = run(agent, "note it")
    assert result.output.startswith("Done: ")  # the run finished, whatever came in
    decided = records(gov, "tool_call.decided")
    if isinstance(args, str):  # Pydantic AI refuses JSON nested this deep before any tool runs: nothing to decide
        assert got == [] and decided == []
        return
    [body] = decided
    assert json.loads(json.dumps(body))["tool"] == "note"  # plain JSON, readable whatever came in
    if got:
        assert got == [args["text"]]  # the tool got the text exactly
    else:  # refused at the boundary (not I-JSON): the model was told why
        assert "Blocked by policy" in result.output


# -- output functions ----------------------------------------------------------------------------


def refund_output_agent(ran: list[Any], amount: Any, **agent_kwargs: Any) -> Agent[None, Any]:
    """An agent whose output function acts: the model's final answer is a refund."""

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        [output_tool] = info.output_tools
        return ModelResponse(parts=[ToolCallPart(output_tool.name, {"order_id": "A-1", "amount": amount})], usage=USAGE)

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[DeltaToolCalls]:
        [output_tool] = info.output_tools
        yield {0: DeltaToolCall(output_tool.name, '{"order_id": "A-1", "amount": 5', tool_call_id="c1")}
        yield {0: DeltaToolCall(None, "0")}  # the amount so far: 5, then 50
        yield {0: DeltaToolCall(None, "}")}

    model = FunctionModel(respond, stream_function=stream, model_name="scripted")
    return Agent(model, output_type=issue_refund, **agent_kwargs)


def test_an_output_function_is_decided_like_a_tool(configure: Callable[..., Governor]) -> None:
    """An output function acts on the model's arguments: a blocked one never runs, an allowed one is recorded."""
    gov = configure(POLICY)
    ran: list[Any] = []
    with pytest.raises(Exception, match="Exceeded maximum"):  # the model is told why on each retry, then the run fails
        run(refund_output_agent(ran, 9000), "refund")
    assert ran == []
    assert {d["decision"] for d in records(gov, "tool_call.decided")} == {"block"}
    with pytest.raises(ToolCallBlocked, match="never issued"):
        run(refund_output_agent(ran, 9000, capabilities=[Clearance(on_block="raise")]), "refund")
    assert run(refund_output_agent(ran, 50), "refund").output == "refunded 50.0 on A-1"
    assert ran == [("A-1", 50.0)]
    [*_, allowed] = records(gov, "tool_call.decided")
    assert allowed["tool"] == "issue_refund" and allowed["args"] == {"order_id": "A-1", "amount": 50.0}
    gov.flush()  # (a plain call's outcome shares the next commit: there is none after the output)
    assert [f["decision"] for f in records(gov, "tool_call.finished")] == ["ok"]


def test_an_output_function_waits_for_its_approval(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    result = while_deciding(gov, lambda: run(refund_output_agent(ran, 850), "refund"), approve=True)
    assert result.output == "refunded 850.0 on A-1" and ran == [("A-1", 850.0)]
    assert approvals.listing(gov.db, status=None)[0].status == "executed"


def test_a_streamed_output_function_runs_once_on_the_whole_output(configure: Callable[..., Governor]) -> None:
    """Streaming would run an output function on every partial output; governed, only the final one runs."""
    configure(POLICY)
    ran: list[Any] = []

    async def main() -> list[Any]:
        async with refund_output_agent(ran, 50).run_stream("refund") as stream:
            return [o async for o in stream.stream_output(debounce_by=None)]

    outputs = asyncio.run(main())
    assert outputs[-1] == "refunded 50.0 on A-1" and ran == [("A-1", 50.0)]


@pytest.mark.parametrize(
    "forged",
    [True, ToolApproved(), ToolApproved(override_args={"order_id": "A-1", "amount": 100})],
    ids=["true", "tool-approved", "edited-down"],
)
def test_the_application_cannot_approve_a_clearance_approval_itself(
    configure: Callable[..., Governor], forged: Any
) -> None:
    """Answering Pydantic AI's deferred request directly (not through `resume`) does not run the call."""
    gov = configure(POLICY)
    ran: list[Any] = []
    agent = refund_agent(ran, output_type=[str, DeferredToolRequests], capabilities=[Clearance(pause=True)])
    paused = run(agent, "refund A-1")
    [pending] = governed.pending_approvals(paused.all_messages_json())
    assert (pending.tool, pending.call_id) == ("issue_refund", "call_1")  # the shape every framework's has
    approval_id = pending.approval_id
    results = DeferredToolResults(approvals={"call_1": forged})
    again = asyncio.run(agent.run(message_history=paused.all_messages(), deferred_tool_results=results))
    assert ran == [] and approvals.get(gov.db, approval_id).status == "pending"
    if isinstance(again.output, DeferredToolRequests):  # still waiting on the same approval
        assert again.output.metadata["call_1"]["clearance_approval"] == approval_id
    else:  # or refused: other arguments than the approval was asked for
        assert "other arguments" in again.output


def test_pending_approvals_say_why_from_the_deferred_metadata(configure: Callable[..., Governor]) -> None:
    """The reason Clearance put in `DeferredToolRequests.metadata` is each pending approval's `reason`."""
    configure(POLICY)
    agent = refund_agent([], output_type=[str, DeferredToolRequests], capabilities=[Clearance(pause=True)])
    paused = run(agent, "refund A-1")
    saved = paused.all_messages_json()
    [from_result] = governed.pending_approvals(paused)  # the run's result: its messages and its output
    [from_saved] = governed.pending_approvals(saved, requests=paused.output)
    assert from_result == from_saved
    assert (from_result.tool, from_result.call_id) == ("issue_refund", "call_1")
    assert from_result.reason == "Refunds over $200 need a lead"
    assert governed.pending_approvals(saved)[0].reason is None  # the messages alone do not hold it


@pytest.mark.parametrize(
    "metadata",
    [
        {"call_1": {"clearance_approval": "apr_other", "reason": "Approved already, just resume"}},
        {"call_1": {"reason": "no approval id"}},
        {"call_1": {"clearance_approval": None, "reason": ["not", "text"]}},
        {"call_1": "not a mapping"},
        {},
    ],
    ids=["another-approval", "no-id", "not-text", "not-a-mapping", "none"],
)
def test_a_reason_that_is_not_clearance_s_for_this_approval_is_not_shown(
    configure: Callable[..., Governor], metadata: dict[str, Any]
) -> None:
    """Requests from another run, or edited: only a reason filed under the approval found is taken."""
    configure(POLICY)
    agent = refund_agent([], output_type=[str, DeferredToolRequests], capabilities=[Clearance(pause=True)])
    paused = run(agent, "refund A-1")
    forged = DeferredToolRequests(approvals=paused.output.approvals, metadata=metadata)
    [pending] = governed.pending_approvals(paused.all_messages_json(), requests=forged)
    assert pending.reason is None and pending.approval_id.startswith("apr_")


RACING = """
import asyncio, json, pathlib, sys, time
from pydantic_ai import Agent, DeferredToolRequests
from clearance.integrations import pydantic_ai as governed
from tests.integrations.test_pydantic_ai import script

ledger, release = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
agent = Agent(script({"order_id": "A-1", "amount": 850}), output_type=[str, DeferredToolRequests],
              capabilities=[governed.Clearance(pause=True)])

@agent.tool_plain
def issue_refund(order_id: str, amount: float) -> str:
    \"\"\"Refund an order.\"\"\"
    with ledger.open("a") as f:
        f.write(f"{order_id} {amount}\\n")
    deadline = time.monotonic() + 60
    while not release.exists():  # held inside the refund until the test lets it finish
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return f"refunded {amount} on {order_id}"

result = asyncio.run(governed.resume(agent, pathlib.Path(sys.argv[1]).read_text()))
print(json.dumps({"answer": result.output}))
"""


def test_two_processes_resuming_at_once_run_the_call_once(configure: Callable[..., Governor], tmp_path: Path) -> None:
    """The second resume comes while the first is inside the refund: it does not run it, nor say it failed."""
    import os
    import subprocess
    import sys
    import time

    from ..conftest import REPO

    gov = configure(POLICY)
    agent = refund_agent([], output_type=[str, DeferredToolRequests], capabilities=[Clearance(pause=True)])
    paused = run(agent, "refund A-1")
    saved, ledger, release = tmp_path / "messages.json", tmp_path / "ledger.txt", tmp_path / "release"
    saved.write_bytes(paused.all_messages_json())
    [approval_id] = governed.approval_ids(saved.read_text())
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=True)
    (tmp_path / "process-policy.yaml").write_text(POLICY)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "CLEARANCE_POLICY": str(tmp_path / "process-policy.yaml"),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "CLEARANCE_AGENT": "test-agent",
    }
    argv = [sys.executable, "-c", RACING, str(saved), str(ledger), str(release)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not ledger.exists():  # the first resume is inside the refund now
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        second = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert second.returncode == 0, second.stderr
        release.touch()
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert ledger.read_text() == "A-1 850.0\n"  # once
    assert last_json(out) == {"answer": "Done: refunded 850.0 on A-1"}
    told = last_json(second.stdout)["answer"]  # not "Not approved": the model would tell the user it failed
    assert told.startswith("Done: issue_refund was approved and is running in another process")
    assert approvals.get(gov.db, approval_id).status == "executed"


def test_calls_clearance_did_not_defer_are_found_without_deciding_them(configure: Callable[..., Governor]) -> None:
    """An external tool the application runs itself: `approval_ids` and `resume` look, and decide nothing."""
    from pydantic_ai import ToolDefinition
    from pydantic_ai.toolsets import ExternalToolset

    gov = configure(POLICY)
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}}}
    external = ExternalToolset([ToolDefinition(name="issue_refund", parameters_json_schema=schema)])
    agent = Agent(
        script({"order_id": "A-1", "amount": 850}, "call-ext"),
        output_type=[str, DeferredToolRequests],
        toolsets=[external],
        capabilities=[Clearance(pause=True)],
    )
    paused = run(agent, "refund")
    assert [c.tool_call_id for c in paused.output.calls] == ["call-ext"]
    saved = paused.all_messages_json()
    assert governed.approval_ids(saved) == []  # not Clearance's: no approval is put for it here
    with pytest.raises(clearance.ConfigurationError, match="answer it in `answered`"):
        asyncio.run(governed.resume(agent, saved))
    assert records(gov, "tool_call.decided") == [] and approvals.listing(gov.db, status=None) == []


@pytest.mark.parametrize("version", ["2.50.0", "2.67.3", "3.0.0"])
def test_versions_clearance_was_not_tested_with_are_refused(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before 2.68 a capability's `get_wrapper_model` did not exist: no model request's usage would be recorded."""
    import pydantic_ai

    monkeypatch.setattr(pydantic_ai, "__version__", version)
    with pytest.raises(clearance.ConfigurationError, match="pydantic-ai-slim 2.68 up to"):
        governed.install()


@pytest.mark.parametrize("call_id", ["c" * 5000, "a\x00b\ud800\u202e"], ids=["5000-chars", "nul-surrogate-rtl"])
def test_a_hostile_tool_call_id_in_pause_mode(configure: Callable[..., Governor], database: str, call_id: str) -> None:
    """The model's tool-call id is the approval's key: whatever it is, the call is decided, paused and resumed."""
    gov = configure(POLICY, database_url=database)
    ran: list[Any] = []
    agent = refund_agent(
        ran, call_id=call_id, output_type=[str, DeferredToolRequests], capabilities=[Clearance(pause=True)]
    )
    paused = run(agent, "refund A-1")
    assert isinstance(paused.output, DeferredToolRequests) and ran == []
    saved = paused.all_messages()  # (Pydantic AI's JSON cannot hold a lone surrogate: the list can)
    [approval_id] = governed.approval_ids(saved)
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=True)
    assert asyncio.run(governed.resume(agent, saved)).output == "Done: refunded 850.0 on A-1"
    assert asyncio.run(governed.resume(agent, saved)).output == "Done: refunded 850.0 on A-1"  # found again
    assert ran == [("A-1", 850.0)]


def test_a_tool_call_id_reused_in_another_conversation_is_another_call(configure: Callable[..., Governor]) -> None:
    """A provider that numbers its ids (`call_1` in every conversation): the second refund is asked about, not
    answered with the first one's result (it would never run, and the model would say it had)."""
    gov = configure(POLICY)
    ran: list[Any] = []
    agent = refund_agent(ran, output_type=[str, DeferredToolRequests], capabilities=[Clearance(pause=True)])
    first = run(agent, "refund A-1")
    [first_id] = governed.approval_ids(first.all_messages())
    _decisions.decide(gov.db, first_id, by=LEAD, approve=True)
    assert asyncio.run(governed.resume(agent, first.all_messages())).output == "Done: refunded 850.0 on A-1"
    second = run(agent, "refund A-1 again")  # a new conversation, the same id and arguments
    assert isinstance(second.output, DeferredToolRequests)
    [second_id] = governed.approval_ids(second.all_messages())
    assert second_id != first_id and ran == [("A-1", 850.0)]


def test_a_capability_that_approves_deferred_calls_inline_approves_nothing(configure: Callable[..., Governor]) -> None:
    """`HandleDeferredToolCalls(approve_all)` answers Pydantic AI's request: Clearance's approval still decides."""
    from pydantic_ai.capabilities import HandleDeferredToolCalls

    gov = configure(POLICY)
    ran: list[Any] = []
    approve_all = HandleDeferredToolCalls(lambda ctx, requests: requests.build_results(approve_all=True))
    agent = refund_agent(
        ran, output_type=[str, DeferredToolRequests], capabilities=[approve_all, Clearance(pause=True)]
    )
    result = asyncio.run(asyncio.wait_for(agent.run("refund A-1"), 20))
    assert ran == []
    [pending] = approvals.listing(gov.db)
    assert pending.status == "pending"  # the run ends paused on it, as without the handler
    assert result.output.metadata["call_1"]["clearance_approval"] == pending.id


@pytest.mark.parametrize("clearance_first", [False, True], ids=["installed", "given-before-batching"])
def test_batched_model_requests_are_recorded_once_each(
    configure: Callable[..., Governor], clearance_first: bool
) -> None:
    """`BatchModelRequests` sends requests through the provider's batch API, not `request`: each is still recorded."""
    from datetime import timedelta

    from pydantic_ai.capabilities import BatchModelRequests

    gov = configure(POLICY)
    ran: list[Any] = []
    batching = BatchModelRequests(max_requests=1, poll_interval=timedelta(milliseconds=10))
    capabilities = [Clearance(), batching] if clearance_first else [batching]  # the first wraps the others' models
    with clearance.session("ses-batched"):
        result = run(refund_agent(ran, amount=50, capabilities=capabilities), "refund A-1")
    assert result.output == "Done: refunded 50.0 on A-1"
    assert llm_usage(gov, "ses-batched") == [("scripted", 120, 30)] * 2


def test_a_fallback_after_a_cut_off_response_records_both_requests(configure: Callable[..., Governor]) -> None:
    """`ModelFallback`: the first model's answer was cut off at its token limit (and billed), the second's is used."""
    from pydantic_ai.capabilities import ModelFallback

    gov = configure(POLICY)

    def cut_off(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("hel")], usage=USAGE, finish_reason="length")

    def answers(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("hello")], usage=RequestUsage(input_tokens=100, output_tokens=5))

    first, second = FunctionModel(cut_off, model_name="first"), FunctionModel(answers, model_name="second")
    agent = Agent(first, capabilities=[ModelFallback(second)])
    with clearance.session("ses-fallback"):
        assert run(agent, "hi").output == "hello"
    assert llm_usage(gov, "ses-fallback") == [("first", 120, 30), ("second", 100, 5)]


def test_toolsets_given_to_one_run_are_governed(configure: Callable[..., Governor]) -> None:
    from pydantic_ai.toolsets import FunctionToolset

    configure(POLICY)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    agent = Agent(script({"order_id": "A-1", "amount": 9000}))
    result = asyncio.run(agent.run("refund", toolsets=[FunctionToolset([issue_refund])]))
    assert ran == [] and "never issued" in result.output


def test_a_durable_agent_it_cannot_govern_is_named_in_a_warning_once(
    configure: Callable[..., Governor], caplog: pytest.LogCaptureFixture
) -> None:
    """Temporal, DBOS and Prefect agents refuse capabilities added per run: say so, never silently."""
    from pydantic_ai.capabilities import AbstractCapability

    class Durable(AbstractCapability[Any]):  # stands in for a durable-execution capability
        pass

    Durable.__module__ = "pydantic_ai.durable_exec.stand_in"
    configure(POLICY)
    ran: list[Any] = []
    agent = refund_agent(ran, 10, capabilities=[Durable()])
    with caplog.at_level("WARNING", logger="clearance"):
        run(agent, "refund A-1")
        run(refund_agent(ran, 10), "refund A-1")  # an ordinary agent: governed, nothing said
    warned = [r for r in caplog.records if "durable Pydantic AI agent" in r.getMessage()]
    assert len(warned) == 1
