"""Agents traced the way their users trace them: a LangGraph and an Agents SDK agent, scripted, under OpenInference.

Each agent asks for three refunds in turn, one per model turn, which the refund policy of
tests/integrations/_shared.py decides three ways: `ALLOWED` runs, `BLOCKED` is refused, and
`APPROVED` waits for a lead's approval. The instrumentors are switched on for a provider
object of the test's own (never the global one) and off again when the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents import Agent, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from openinference.instrumentation.langchain import LangChainInstrumentor
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

from clearance.integrations.langchain import ClearanceMiddleware

ALLOWED, BLOCKED, APPROVED = 50.0, 9000.0, 300.0
AMOUNTS = (ALLOWED, BLOCKED, APPROVED)


class ThreeRefunds(BaseChatModel):
    """Asks for `issue_refund` once per amount, one a turn, then answers."""

    amounts: tuple[float, ...] = AMOUNTS

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ThreeRefunds:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < len(self.amounts):
            call = {"name": "issue_refund", "args": {"order_id": f"A-{done}", "amount": self.amounts[done]}}
            message = AIMessage(content="", tool_calls=[{**call, "id": f"call_{done}"}])
        else:
            message = AIMessage(content="Done.")
        return ChatResult(generations=[ChatGeneration(message=message)])


def langgraph_agent(
    ran: list[float], *, middleware: ClearanceMiddleware | None = None, checkpointer: Any = None, **script: Any
) -> Any:
    """A `create_agent` agent with one tool, `issue_refund`; governed by `middleware` when given, else by ToolGate."""

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append(amount)
        return f"refunded {amount} on {order_id}"

    return create_agent(
        ThreeRefunds(**script),
        tools=[issue_refund],
        middleware=[middleware] if middleware else [],
        checkpointer=checkpointer,
    )


def agents_sdk_agent(ran: list[float], amounts: tuple[float, ...] = AMOUNTS) -> Agent[Any]:
    """An Agents SDK agent with one function tool, `issue_refund`, on a scripted model."""

    @function_tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append(amount)
        return f"refunded {amount} on {order_id}"

    steps = [
        ModelStep(output=[function_call("issue_refund", {"order_id": f"A-{i}", "amount": a}, call_id=f"call_{i}")])
        for i, a in enumerate(amounts)
    ]
    model = ScriptedModel([*steps, ModelStep(output=[assistant_message("Done.")])])
    return Agent(name="support", instructions="Refund orders.", tools=[issue_refund], model=model)


@contextmanager
def langchain_traced(provider: Any) -> Iterator[None]:
    """OpenInference's LangChain instrumentation on, into `provider`, for the block."""
    LangChainInstrumentor().instrument(tracer_provider=provider)
    try:
        yield
    finally:
        LangChainInstrumentor().uninstrument()


@contextmanager
def agents_sdk_traced(provider: Any) -> Iterator[None]:
    """OpenInference's Agents SDK instrumentation on, into `provider`, for the block.

    It replaces the SDK's trace processors while on (so nothing is sent to OpenAI's backend)
    and puts them back after.
    """
    OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)
    try:
        yield
    finally:
        OpenAIAgentsInstrumentor().uninstrument()
