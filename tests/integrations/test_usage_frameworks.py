"""One `llm.call` per model request when a framework and the raw client capture both see it.

LangChain's `ChatOpenAI` and the Agents SDK's models against the fake OpenAI server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

import clearance
from clearance._guard._governor import Governor

from ..fake_openai import FakeOpenAI
from ._shared import POLICY, TWO_FAKE_CALLS, llm_usage

ONE_CALL = TWO_FAKE_CALLS[:1]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(amount=100)  # a refund policy allows without approval
    yield server
    server.close()


@pytest.mark.parametrize("how", ["invoke", "stream", "ainvoke", "astream", "batch"])
def test_chat_openai_each_way_of_calling_it(configure: Callable[..., Governor], fake: FakeOpenAI, how: str) -> None:
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    gov = configure(POLICY)
    model = ChatOpenAI(model="gpt-4o-mini", base_url=fake.url, api_key="sk-test", stream_usage=True)

    async def call_async() -> None:
        if how == "ainvoke":
            await model.ainvoke("refund A-1")
        else:
            async for _ in model.astream("refund A-1"):
                pass

    with clearance.session(f"ses-lc-{how}"):
        if how == "invoke":
            model.invoke("refund A-1")
        elif how == "stream":
            list(model.stream("refund A-1"))
        elif how == "batch":
            model.batch(["refund A-1", "refund A-2"])
        else:
            asyncio.run(call_async())
    assert llm_usage(gov, f"ses-lc-{how}") == (TWO_FAKE_CALLS if how == "batch" else ONE_CALL)
    assert len(fake.requests) == (2 if how == "batch" else 1)


@pytest.fixture
def tracing_disabled() -> Iterator[None]:
    """The usual setting against other providers than OpenAI."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    yield
    agents.set_tracing_disabled(False)


def _run_agent(make_model: Callable[[AsyncExitStack], Any], streaming: bool) -> str:
    """Run the refund agent on a model made (and closed) inside the run's event loop."""
    from agents import Agent, ModelSettings, Runner, function_tool

    @function_tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        return f"refunded {amount} on {order_id}"

    async def main() -> str:
        async with AsyncExitStack() as stack:
            model = make_model(stack)
            settings = ModelSettings(include_usage=True)
            agent = Agent(name="support", tools=[issue_refund], model=model, model_settings=settings)
            if not streaming:
                return str((await Runner.run(agent, "refund A-1")).final_output)
            streamed = Runner.run_streamed(agent, "refund A-1")
            async for _ in streamed.stream_events():
                pass
            return str(streamed.final_output)

    return asyncio.run(main())


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_agents_sdk_with_tracing_disabled_records_each_request_once(
    configure: Callable[..., Governor], fake: FakeOpenAI, tracing_disabled: None, streaming: bool
) -> None:
    """Usage used to come from the SDK's tracing alone: with tracing disabled, none was recorded."""
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    gov = configure(POLICY)

    def model(stack: AsyncExitStack) -> Any:
        client = AsyncOpenAI(base_url=fake.url, api_key="sk-test")
        stack.push_async_callback(client.close)
        return OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)

    with clearance.session(f"ses-agents-off-{streaming}"):
        answer = _run_agent(model, streaming)
    assert "refunded 100.0" in answer
    assert llm_usage(gov, f"ses-agents-off-{streaming}") == TWO_FAKE_CALLS


@pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")  # from litellm
@pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")  # litellm streaming
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_agents_sdk_litellm_model_records_each_request_once(
    configure: Callable[..., Governor],
    fake: FakeOpenAI,
    tracing_disabled: None,
    streaming: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LiteLLM's OpenAI provider uses the `openai` client underneath: the model's record stands, not the raw one."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of litellm's price list
    pytest.importorskip("litellm")
    from agents.extensions.models.litellm_model import LitellmModel

    gov = configure(POLICY)
    model = LitellmModel(model="openai/gpt-4o-mini", base_url=fake.url, api_key="sk-test")
    with clearance.session(f"ses-litellm-{streaming}"):
        answer = _run_agent(lambda stack: model, streaming)
    assert "refunded 100.0" in answer
    assert llm_usage(gov, f"ses-litellm-{streaming}") == TWO_FAKE_CALLS
