"""Raw `anthropic` loops: the real client against a fake Messages API on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("anthropic")

import anthropic  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance.integrations.anthropic import record, run_tool_uses  # noqa: E402

from ..fake_anthropic import FakeAnthropic  # noqa: E402
from ._shared import POLICY, records, while_deciding  # noqa: E402

TOOLS = [
    {
        "name": "issue_refund",
        "description": "Refund an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id", "amount"],
        },
    }
]


def agent_loop(amount: float, ran: list[Any]) -> str:
    def issue_refund(order_id: str, amount: float) -> str:
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    fake = FakeAnthropic(amount=amount)
    try:
        with anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test") as client:
            messages: list[dict[str, Any]] = [{"role": "user", "content": "refund A-1"}]
            for _ in range(4):
                message = record(
                    client.messages.create(model="claude-sonnet-4-6", max_tokens=512, messages=messages, tools=TOOLS)
                )
                if message.stop_reason != "tool_use":
                    return "".join(b.text for b in message.content if b.type == "text")
                messages.append({"role": "assistant", "content": [b.model_dump() for b in message.content]})
                messages.append(
                    {"role": "user", "content": run_tool_uses(message.content, {"issue_refund": issue_refund})}
                )
    finally:
        fake.close()
    raise AssertionError("the loop did not finish")


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(gov, lambda: agent_loop(850, ran), approve=False, note="customer already refunded")
    assert ran == [] and "customer already refunded" in answer


def test_approved_runs_once_as_edited_and_usage_is_recorded(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    with clearance.session("ses-claude"):
        answer = while_deciding(gov, lambda: agent_loop(850, ran), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300)] and "refunded 300" in answer
    clearance.flush()
    calls = records(gov, "llm.call", "ses-claude")
    # Anthropic counts cache reads apart from input_tokens: 100 + 20 in, of which 20 cached.
    assert [(c["model"], c["input_tokens"], c["cached_input_tokens"], c["output_tokens"]) for c in calls] == [
        ("claude-sonnet-4-6", 120, 20, 30)
    ] * 2
    assert all(c["priced"] for c in calls)


def test_blocked_unknown_and_malformed_calls_are_error_results(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    ran: list[Any] = []
    assert "Blocked by policy: Refunds over $5000" in agent_loop(9000, ran) and ran == []
    blocks = [
        {"type": "text", "text": "let me"},
        {"type": "tool_use", "id": "t1", "name": "nope", "input": {}},
        {"type": "tool_use", "id": "t2", "name": "lookup", "input": "not an object"},
        {"type": "tool_use", "id": "t3", "name": "lookup", "input": {"wrong": 1}},
    ]
    results = run_tool_uses(blocks, {"lookup": lambda order_id: "x"})
    assert [r["tool_use_id"] for r in results] == ["t1", "t2", "t3"] and all(r["is_error"] for r in results)
    assert "no tool called 'nope'" in results[0]["content"] and "not an object" in results[1]["content"]
