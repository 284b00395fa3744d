"""AG2: real `Agent.ask` runs, offline, with AG2's scripted model and a fake OpenAI server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("ag2")

from ag2 import Agent  # noqa: E402
from ag2.events import ModelMessage, ModelResponse, ToolCallEvent, ToolCallsEvent, ToolResultEvent, Usage  # noqa: E402
from ag2.testing import TestConfig  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402

from ._shared import POLICY, TWO_FAKE_CALLS, llm_usage, records, while_deciding  # noqa: E402

USAGE = Usage(prompt_tokens=120, completion_tokens=30, total_tokens=150)


def ask(ran: list[Any], amount: float = 850, config: Any = None, middleware: Any = ()) -> str:
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    arguments = f'{{"order_id": "A-1", "amount": {amount}}}'
    script = TestConfig(
        ModelResponse(
            tool_calls=ToolCallsEvent([ToolCallEvent("issue_refund", arguments=arguments)]),
            usage=USAGE,
            model="gpt-4o-mini",
            provider="openai",
        ),
        ModelResponse(ModelMessage("finished"), usage=USAGE, model="gpt-4o-mini", provider="openai"),
    )
    agent = Agent("support", "Refund orders.", config=config or script, tools=[issue_refund], middleware=middleware)

    async def main() -> str:
        with clearance.session("ses-ag2"):
            reply = await agent.ask("refund A-1")
        history = [repr(e) for e in await reply.history.get_events() if isinstance(e, ToolResultEvent)]
        return " | ".join([*history, str(reply.body)])

    return asyncio.run(main())


def test_denied_the_refund_never_runs_and_the_model_gets_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(gov, lambda: ask(ran), approve=False, note="customer already refunded")
    assert ran == [] and "customer already refunded" in answer


def test_approved_from_another_thread_runs_once_as_edited(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(gov, lambda: ask(ran), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300)] and "refunded 300" in answer
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "executed"


def test_blocked_and_usage_recorded_once_even_with_the_middleware_given_explicitly(
    configure: Callable[..., Governor],
) -> None:
    from clearance.integrations.ag2 import ClearanceMiddleware

    gov = configure(POLICY)
    ran: list[Any] = []
    answer = ask(ran, amount=9000, middleware=[ClearanceMiddleware])  # configure() adds none of its own
    assert ran == [] and "Blocked by policy: Refunds over $5000 are never issued" in answer
    assert llm_usage(gov, "ses-ag2") == TWO_FAKE_CALLS
    assert len(records(gov, "tool_call.decided")) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_against_a_fake_openai_server(configure: Callable[..., Governor]) -> None:
    from ag2.config import OpenAIConfig  # type: ignore[attr-defined]

    from ..fake_openai import FakeOpenAI

    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    ran: list[Any] = []
    config = OpenAIConfig(model="gpt-4o-mini", base_url=fake.url, api_key="sk-test")
    try:
        answer = while_deciding(gov, lambda: ask(ran, config=config), approve=False, note="over the limit")
    finally:
        fake.close()
    assert ran == [] and "over the limit" in answer
    assert llm_usage(gov, "ses-ag2") == TWO_FAKE_CALLS
    # AG2's OpenAIConfig keeps an HTTP client it never closes: collect its socket here, not in a later test.
    import gc

    gc.collect()
