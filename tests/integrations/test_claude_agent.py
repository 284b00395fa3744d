"""Claude Agent SDK: the real bundled Claude Code CLI, driven by a scripted Messages API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("claude_agent_sdk")

from claude_agent_sdk import (  # noqa: E402
    ClaudeAgentOptions,
    ClaudeSDKClient,
    HookMatcher,
    PermissionResult,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
    ToolPermissionContext,
    create_sdk_mcp_server,
    query,
    tool,
)
from claude_agent_sdk.types import PreToolUseHookInput  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations.claude_agent import governed_options  # noqa: E402
from clearance.policy._compile import MODEL_CALL  # noqa: E402

from ..budgets._shared import PRICES, spend  # noqa: E402
from ._shared import records, while_deciding  # noqa: E402
from .claude_fake import MODEL, ScriptedClaude, tool_result  # noqa: E402

REFUND = "mcp__shop__issue_refund"  # the name the model (and the policy) calls the in-process tool by
POLICY = """
version: 1
tools:
  "mcp__*__issue_refund":
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: Refunds over $200 need a lead}
      - {id: huge, when: 'args.amount > 5000', effect: block, reason: Refunds over $5000 are never issued}
"""
BLOCKING = "version: 1\nbudgets:\n  session: {max_cost_usd: 1}\n"
UPSTREAM = Path(__file__).with_name("mcp_upstream.py")


@tool("issue_refund", "Refund an order.", {"order_id": str, "amount": float})
async def issue_refund(args: dict[str, Any]) -> dict[str, Any]:
    """The in-process tool: notes what it received."""
    RAN.append(args)
    return {"content": [{"type": "text", "text": f"refunded {args['amount']} on {args['order_id']}"}]}


RAN: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    RAN.clear()


def options(home: Path, fake: ScriptedClaude, **given: Any) -> ClaudeAgentOptions:
    """Options that run the bundled CLI offline against `fake`, with the `shop` server in-process."""
    env = {
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "test",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home),
    }
    given.setdefault("mcp_servers", {"shop": create_sdk_mcp_server("shop", tools=[issue_refund])})
    given.setdefault("allowed_tools", [REFUND])
    return ClaudeAgentOptions(env=env, cwd=str(home), model=MODEL, **given)


def run(home: Path, fake: ScriptedClaude, **given: Any) -> list[Any]:
    """One `query()` to the end; its messages."""

    async def main() -> list[Any]:
        return [m async for m in query(prompt="refund A-1", options=options(home, fake, **given))]

    return asyncio.run(main())


def answer(messages: list[Any]) -> str:
    """What the model said last (the fake echoes the tool's result, or its refusal)."""
    return str(next(m.result for m in reversed(messages) if isinstance(m, ResultMessage)))


def second_request(fake: ScriptedClaude) -> str:
    """The tool result the model was sent after its tool use."""
    fake.bodies.get(timeout=30)
    result = tool_result(fake.bodies.get(timeout=30))
    assert result is not None
    return result


@pytest.fixture
def scripted() -> Callable[..., ScriptedClaude]:
    servers: list[ScriptedClaude] = []

    def make(tool_input: dict[str, Any] | str, name: str = REFUND) -> ScriptedClaude:
        servers.append(ScriptedClaude(name, tool_input))
        return servers[-1]

    yield make  # type: ignore[misc]
    for server in servers:
        server.close()


def test_an_allowed_call_runs_and_its_outcome_is_recorded(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    fake = scripted({"order_id": "A-1", "amount": 150})
    with clearance.session("ses-claude"):
        messages = run(tmp_path, fake)
    assert RAN == [{"order_id": "A-1", "amount": 150}] and "refunded 150 on A-1" in answer(messages)
    [decided] = records(gov, "tool_call.decided", "ses-claude")
    assert (decided["tool"], decided["decision"]) == (REFUND, "allow")
    assert len(records(gov, "tool_call.finished")) == 1


def test_a_blocked_call_is_denied_with_the_reason_the_model_reads(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    fake = scripted({"order_id": "A-1", "amount": 9000})
    run(tmp_path, fake)  # allowed_tools lets it through the SDK's own permissions: Clearance still decides
    assert RAN == []
    assert "Blocked by policy: Refunds over $5000 are never issued" in second_request(fake)
    assert [d["decision"] for d in records(gov, "tool_call.decided")] == ["block"]


@pytest.mark.parametrize(("edit", "runs"), [(None, 850), ({"amount": 300}, 300)], ids=["as-asked", "edited"])
def test_an_approval_decided_from_another_thread_lets_the_call_run_as_approved(
    configure: Callable[..., Governor],
    tmp_path: Path,
    scripted: Callable[..., ScriptedClaude],
    edit: dict[str, Any] | None,
    runs: int,
) -> None:
    gov = configure(POLICY)
    fake = scripted({"order_id": "A-1", "amount": 850})
    messages = while_deciding(gov, lambda: run(tmp_path, fake), approve=True, args=edit)
    assert RAN == [{"order_id": "A-1", "amount": runs}] and f"refunded {runs} on A-1" in answer(messages)
    [approval] = approvals.listing(gov.db, status=None)
    assert approval.status == "executed"


def test_an_approval_on_postgresql_lets_the_edited_call_run(
    configure: Callable[..., Governor], pg_url: str, tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY, database_url=pg_url)
    fake = scripted({"order_id": "A-1", "amount": 850})
    messages = while_deciding(gov, lambda: run(tmp_path, fake), approve=True, args={"amount": 300})
    assert RAN == [{"order_id": "A-1", "amount": 300}] and "refunded 300 on A-1" in answer(messages)
    assert [a.status for a in approvals.listing(gov.db, status=None)] == ["executed"]


def test_a_denied_approval_reaches_the_model_with_the_note(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    fake = scripted({"order_id": "A-1", "amount": 850})
    while_deciding(gov, lambda: run(tmp_path, fake), approve=False, note="customer already refunded")
    assert RAN == [] and "customer already refunded" in second_request(fake)


def test_an_external_mcp_tool_is_governed(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    ledger = tmp_path / "ledger.txt"
    servers = {"refunds": {"type": "stdio", "command": sys.executable, "args": [str(UPSTREAM), str(ledger)]}}
    fake = scripted({"order_id": "A-1", "amount": 9000}, "mcp__refunds__issue_refund")
    run(tmp_path, fake, mcp_servers=servers, allowed_tools=["mcp__refunds__issue_refund"])
    assert "Refunds over $5000 are never issued" in second_request(fake) and not ledger.exists()
    assert [d["tool"] for d in records(gov, "tool_call.decided")] == ["mcp__refunds__issue_refund"]


def test_explicit_options_and_the_users_own_hook_are_kept_and_decided_once(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    seen: list[str] = []

    async def mine(data: Any, tool_use_id: str | None, context: Any) -> Any:
        seen.append(data["tool_name"])
        return {}

    fake = scripted({"order_id": "A-1", "amount": 9000})
    given = governed_options(ClaudeAgentOptions(hooks={"PreToolUse": [HookMatcher(hooks=[mine])]}))
    assert governed_options(given).hooks == given.hooks  # idempotent
    run(tmp_path, fake, hooks=given.hooks)
    assert seen == [REFUND] and RAN == []
    assert len(records(gov, "tool_call.decided")) == 1  # install() saw the hooks were there already


def test_each_turn_records_its_usage_once(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    fake = scripted({"order_id": "A-1", "amount": 150})

    async def main() -> None:
        async with ClaudeSDKClient(options(tmp_path, fake)) as client:
            for prompt in ("refund A-1", "and again"):
                await client.query(prompt)
                [m async for m in client.receive_response()]

    with clearance.session("ses-claude"):  # set before the client connects: its hooks run in its tasks
        asyncio.run(main())
    clearance.flush()
    calls = records(gov, "llm.call", "ses-claude")
    # each turn: two requests of 100 input (+20 cache reads) and 30 output tokens; the CLI's
    # totals are cumulative, so the second turn records only what it added
    assert [(c["model"], c["input_tokens"], c["output_tokens"], c["cached_input_tokens"]) for c in calls] == [
        (MODEL, 240, 60, 40)
    ] * 2
    assert all(c["priced"] for c in calls)
    assert [d["decision"] for d in records(gov, "tool_call.decided", "ses-claude")] == ["allow"] * 2


def test_the_users_can_use_tool_still_decides_after_clearance_and_sees_the_approvers_edit(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(POLICY)
    asked: list[dict[str, Any]] = []

    async def mine(name: str, tool_input: dict[str, Any], context: ToolPermissionContext) -> PermissionResult:
        asked.append(tool_input)
        if tool_input["amount"] < 100:
            return PermissionResultDeny(message="I refuse small refunds")
        return PermissionResultAllow()

    fake = scripted({"order_id": "A-1", "amount": 850})
    # not in allowed_tools: the SDK asks can_use_tool, after Clearance's hook (which never grants)
    messages = while_deciding(
        gov, lambda: run(tmp_path, fake, allowed_tools=[], can_use_tool=mine), approve=True, args={"amount": 300}
    )
    assert asked == [{"order_id": "A-1", "amount": 300}] and RAN == asked and "refunded 300" in answer(messages)

    fake = scripted({"order_id": "A-1", "amount": 50})
    run(tmp_path, fake, allowed_tools=[], can_use_tool=mine)
    assert "I refuse small refunds" in second_request(fake) and len(RAN) == 1
    assert [d["decision"] for d in records(gov, "tool_call.decided")] == ["require_approval", "allow"]


@pytest.mark.parametrize(
    ("raw", "decision"),
    [
        ('{"order_id": "A-\\u202e1", "amount": 150}', "allow"),
        ('{"order_id": "A-\\u00001", "amount": 150}', "block"),
        ('{"order_id": "\\ud800", "amount": 150}', "block"),
        ('{"order_id": "A-1", "amount": 150, "deep": ' + "[" * 200 + "]" * 200 + "}", "block"),
    ],
    ids=["rtl-override", "nul", "lone-surrogate", "deep"],
)
def test_hostile_inputs_from_the_model_are_decided_and_recorded(
    configure: Callable[..., Governor],
    tmp_path: Path,
    scripted: Callable[..., ScriptedClaude],
    raw: str,
    decision: str,
) -> None:
    gov = configure(POLICY)
    fake = scripted(raw)
    messages = run(tmp_path, fake)
    assert isinstance(messages[-1], ResultMessage) and not messages[-1].is_error
    [decided] = records(gov, "tool_call.decided")
    assert decided["decision"] == decision
    if decision == "block":  # Clearance's boundary: arguments it cannot decide faithfully
        assert RAN == [] and "cannot be decided" in second_request(fake)
        assert decided["rule_ids"] == ["boundary:arguments"]
    else:
        assert len(RAN) == 1 and len(records(gov, "tool_call.finished")) == 1


@pytest.mark.parametrize(
    "tool_input",
    [{"order_id": "A-1", "amount": math.nan}, {"order_id": "A-1", "amount": 9000, "x": "\ud800\u202e\x00"}],
    ids=["nan", "blocked-hostile"],
)
def test_the_hook_decides_inputs_json_cannot_carry(
    configure: Callable[..., Governor], tool_input: dict[str, Any]
) -> None:
    gov = configure(POLICY)
    [hook] = governed_options().hooks["PreToolUse"][-1].hooks  # type: ignore[index]
    data: PreToolUseHookInput = {
        "session_id": "s",
        "transcript_path": "",
        "cwd": "",
        "hook_event_name": "PreToolUse",
        "tool_name": REFUND,
        "tool_input": tool_input,
        "tool_use_id": "toolu_x",
    }
    out = asyncio.run(hook(data, "toolu_x", {"signal": None}))
    decided = records(gov, "tool_call.decided")
    assert len(decided) == 1
    if decided[0]["decision"] == "block":
        assert out["hookSpecificOutput"]["permissionDecision"] == "deny"  # type: ignore[typeddict-item]


def test_a_spent_budget_stops_the_run_before_the_model_is_asked(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    gov = configure(BLOCKING, price_overrides=PRICES)
    fake = scripted({"order_id": "A-1", "amount": 150})
    spend(1.0, session="ses-spent")
    with clearance.session("ses-spent"):
        messages = run(tmp_path, fake)
    assert fake.turns == 0 and RAN == [] and isinstance(messages[-1], ResultMessage)
    [decided] = [r for r in records(gov, "tool_call.decided") if r["tool"] == MODEL_CALL]
    assert decided["decision"] == "block" and decided["reason"].startswith("session budget exhausted")


def test_a_budget_spent_by_a_turn_stops_the_run_after_its_tool_call(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    configure(BLOCKING, price_overrides=PRICES)
    fake = scripted({"order_id": "A-1", "amount": 150})

    @tool("issue_refund", "Refund an order.", {"order_id": str, "amount": float})
    async def costly_refund(args: dict[str, Any]) -> dict[str, Any]:
        spend(1.0)  # the tool's own model use spends the session's budget
        return await issue_refund.handler(args)

    shop = {"shop": create_sdk_mcp_server("shop", tools=[costly_refund])}
    with clearance.session("ses-spending"):
        run(tmp_path, fake, mcp_servers=shop)
    assert len(RAN) == 1 and fake.turns == 1  # the model was not asked again


@pytest.mark.parametrize("by", ["hook", "can_use_tool", "permission_request"])
@pytest.mark.parametrize(("rewritten", "runs"), [(9000, None), (120, 120)], ids=["to-forbidden", "to-allowed"])
def test_an_input_the_users_hook_or_can_use_tool_rewrites_is_decided_too(
    configure: Callable[..., Governor],
    tmp_path: Path,
    scripted: Callable[..., ScriptedClaude],
    by: str,
    rewritten: int,
    runs: int | None,
) -> None:
    gov = configure(POLICY)
    rewrite = {"order_id": "A-1", "amount": rewritten}

    async def hook(data: Any, tool_use_id: str | None, context: Any) -> Any:
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "updatedInput": rewrite}}

    async def permission_request(data: Any, tool_use_id: str | None, context: Any) -> Any:
        decision = {"behavior": "allow", "updatedInput": rewrite}
        return {"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}}

    async def can_use_tool(name: str, tool_input: dict[str, Any], context: ToolPermissionContext) -> PermissionResult:
        return PermissionResultAllow(updated_input=rewrite)

    fake = scripted({"order_id": "A-1", "amount": 150})  # the model asks for what policy allows
    given: dict[str, Any] = {
        "hook": {"hooks": {"PreToolUse": [HookMatcher(hooks=[hook])]}},
        "can_use_tool": {"can_use_tool": can_use_tool, "allowed_tools": []},
        "permission_request": {
            "hooks": {"PermissionRequest": [HookMatcher(hooks=[permission_request])]},
            "allowed_tools": [],
        },
    }[by]
    run(tmp_path, fake, **given)  # the CLI runs the last rewrite, which Clearance's own hook never saw
    decided = sorted((d["args"]["amount"], d["decision"]) for d in records(gov, "tool_call.decided"))  # in parallel
    if runs is None:
        assert RAN == [] and "Refunds over $5000 are never issued" in second_request(fake)
        assert decided == [(150, "allow"), (9000, "block")]
    else:
        assert RAN == [rewrite] and decided == [(120, "allow"), (150, "allow")]
        [finished] = records(gov, "tool_call.finished")  # the outcome is the rewrite's, which ran
        [ran] = [d for d in records(gov, "tool_call.decided") if d["args"]["amount"] == 120]
        assert finished["call_id"] == ran["call_id"]


def test_totals_that_start_again_are_counted_not_dropped(configure: Callable[..., Governor]) -> None:
    """A result whose cumulative usage is below the previous one's (the CLI counted from zero again)."""
    from clearance.integrations.claude_agent import _record_turn

    gov = configure(POLICY)
    totals: dict[str, dict[str, Any]] = {}
    with clearance.session("ses-reset"):
        for input_tokens in (500, 800, 300):  # +500, +300, then a fresh count of 300
            _record_turn({MODEL: {"inputTokens": input_tokens, "outputTokens": 10 * input_tokens // 100}}, totals)
    clearance.flush()
    assert [c["input_tokens"] for c in records(gov, "llm.call", "ses-reset")] == [500, 300, 300]


def test_a_resumed_session_records_only_its_own_turn(
    configure: Callable[..., Governor], tmp_path: Path, scripted: Callable[..., ScriptedClaude]
) -> None:
    """A new CLI process resuming a session starts its cumulative totals from the session's earlier usage."""
    gov = configure(POLICY)
    fake = scripted({"order_id": "A-1", "amount": 150})

    async def main() -> None:
        first = [m async for m in query(prompt="refund A-1", options=options(tmp_path, fake))]
        session = next(m.session_id for m in first if isinstance(m, ResultMessage))
        [m async for m in query(prompt="and again", options=options(tmp_path, fake, resume=session))]

    with clearance.session("ses-resumed"):
        asyncio.run(main())
    clearance.flush()
    calls = records(gov, "llm.call", "ses-resumed")
    assert [(c["input_tokens"], c["output_tokens"], c["cached_input_tokens"]) for c in calls] == [(240, 60, 40)] * 2
