"""LlamaIndex: a real `FunctionAgent` workflow run, offline, with a scripted function-calling model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

pytest.importorskip("llama_index.core")
# LlamaIndex's workflows inspect agents with inspect.getmembers, which touches pydantic's
# deprecated attributes (`__fields__`, `model_computed_fields` on an instance, …).
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")

from llama_index.core.agent.workflow import FunctionAgent  # noqa: E402
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock  # noqa: E402
from llama_index.core.llms.mock import MockFunctionCallingLLM  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402

from ._shared import POLICY, while_deciding  # noqa: E402


def script(amount: float) -> Callable[..., ChatMessage]:
    def reply(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        results = [m for m in messages if m.role == MessageRole.TOOL]
        if results:
            return ChatMessage(role=MessageRole.ASSISTANT, content=f"Done: {results[-1].content}")
        call = ToolCallBlock(
            tool_call_id="call_1", tool_name="issue_refund", tool_kwargs={"order_id": "A-1", "amount": amount}
        )
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])

    return reply


def run(ran: list[Any], amount: float = 850) -> str:
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    llm = MockFunctionCallingLLM(response_generator=script(amount), is_chat_model=True)
    agent = FunctionAgent(tools=[issue_refund], llm=llm, system_prompt="Refund orders.")

    async def main() -> str:
        return str(await agent.run("refund A-1"))

    return asyncio.run(main())


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(gov, lambda: run(ran), approve=False, note="customer already refunded")
    assert ran == [] and "customer already refunded" in answer


def test_approved_from_another_thread_runs_once_as_edited(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    ran: list[Any] = []
    answer = while_deciding(gov, lambda: run(ran), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300)] and "refunded 300" in answer
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "executed"


def test_blocked_calls_answer_the_model(configure: Callable[..., Governor]) -> None:
    configure(POLICY)
    ran: list[Any] = []
    answer = run(ran, amount=9000)
    assert ran == [] and "Blocked by policy: Refunds over $5000 are never issued" in answer


def test_usage_of_a_raw_openai_style_response_is_recorded(configure: Callable[..., Governor]) -> None:
    from llama_index.core.base.llms.types import ChatResponse
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent
    from llama_index_instrumentation import get_dispatcher

    from ._shared import records

    gov = configure(POLICY)
    raw = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 120, "completion_tokens": 30}}
    response = ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content="hi"), raw=raw)
    with clearance.session("ses-llama"):
        get_dispatcher().event(LLMChatEndEvent(messages=[], response=response))
    clearance.flush()
    calls = records(gov, "llm.call", "ses-llama")
    assert [(c["model"], c["input_tokens"], c["output_tokens"]) for c in calls] == [("gpt-4o-mini", 120, 30)]
