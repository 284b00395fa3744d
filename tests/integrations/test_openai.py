"""A raw `openai` tool-call loop against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("openai")

import openai  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import EventFilter  # noqa: E402
from clearance._store._events import query  # noqa: E402
from clearance.integrations.openai import record, run_tool_calls  # noqa: E402

from ..fake_openai import FakeOpenAI  # noqa: E402
from ._shared import POLICY, decide_when_pending, while_deciding  # noqa: E402

SCHEMA = [
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id", "amount"],
            },
        },
    }
]


def loop(fake: FakeOpenAI, tools: dict[str, Callable[..., Any]]) -> str:
    client = openai.OpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "refund A-1"}]
    try:
        for _ in range(4):
            response = record(client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=SCHEMA))
            message = response.choices[0].message
            if not message.tool_calls:
                return str(message.content)
            messages.append(message)
            messages += run_tool_calls(message.tool_calls, tools)
    finally:
        client.close()
    raise AssertionError("the loop did not finish")


@pytest.fixture
def fake() -> Any:
    server = FakeOpenAI(amount=850)
    yield server
    server.close()


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(
    configure: Callable[..., Governor], fake: FakeOpenAI
) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        ran.append((order_id, amount))
        return "refunded"

    thread = decide_when_pending(gov, approve=False, note="customer already refunded")
    with clearance.session("ses-openai"):
        answer = loop(fake, {"issue_refund": issue_refund})
    thread.join(10)
    assert ran == [] and "customer already refunded" in answer
    clearance.flush()
    calls = [e.body for e in query(gov.db, EventFilter(kind="llm.call", session="ses-openai"))]
    assert [(c["model"], c["input_tokens"], c["output_tokens"], c["priced"]) for c in calls] == [
        ("gpt-4o-mini", 120, 30, True)
    ] * 2


def test_approved_runs_once_and_a_guarded_tool_is_governed_once(
    configure: Callable[..., Governor], fake: FakeOpenAI
) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        ran.append((order_id, amount))
        return f"refunded {amount}"

    answer = while_deciding(gov, lambda: loop(fake, {"issue_refund": issue_refund}), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300.0)] and "refunded 300.0" in answer
    assert len(list(query(gov.db, EventFilter(kind="tool_call.decided")))) == 1


def test_unknown_tools_and_bad_arguments_are_answered_not_raised(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    calls = [
        {"id": "c1", "function": {"name": "nope", "arguments": "{}"}},
        {"id": "c2", "function": {"name": "issue_refund", "arguments": "[1, 2]"}},
        {"id": "c3", "function": {"name": "issue_refund", "arguments": '{"order_id": "A", "colour": "red"}'}},
    ]

    def issue_refund(order_id: str, amount: float) -> str:
        return "refunded"

    out = run_tool_calls(calls, {"issue_refund": issue_refund})
    assert [m["tool_call_id"] for m in out] == ["c1", "c2", "c3"]
    assert "no tool called 'nope'" in out[0]["content"] and "not a JSON object" in out[1]["content"]
    assert "could not be called" in out[2]["content"]
