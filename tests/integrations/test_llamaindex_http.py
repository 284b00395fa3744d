"""LlamaIndex's OpenAI LLM against the fake OpenAI server (in the pinned virtualenv: `make test-pinned`).

`llama-index-llms-openai` pins `openai<3`, older than the main virtualenv's, so this run lives
beside CrewAI's tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("llama_index.llms.openai")

from llama_index.core.agent.workflow import FunctionAgent  # noqa: E402
from llama_index.llms.openai import OpenAI  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402

from ..fake_openai import FakeOpenAI  # noqa: E402
from ._shared import POLICY, TWO_FAKE_CALLS, llm_usage, while_deciding  # noqa: E402

# LlamaIndex's workflows inspect agents with inspect.getmembers, which touches pydantic's
# deprecated attributes; CrewAI, installed beside it, warns about its own deprecations.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming"])
def test_a_function_agent_against_a_fake_openai_server(configure: Callable[..., Governor], streaming: bool) -> None:
    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    ran: list[Any] = []

    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    async def main() -> str:
        # Streamed, OpenAI reports usage only when asked to (as for every client).
        usage = {"stream_options": {"include_usage": True}} if streaming else {}
        llm = OpenAI(model="gpt-4o-mini", api_base=fake.url, api_key="sk-test", additional_kwargs=usage)
        agent = FunctionAgent(tools=[issue_refund], llm=llm, system_prompt="Refund orders.", streaming=streaming)
        with clearance.session("ses-llama-http"):
            return str(await agent.run("refund A-1"))

    try:
        answer = while_deciding(gov, lambda: asyncio.run(main()), approve=False, note="over the limit")
    finally:
        fake.close()
    assert ran == [] and "over the limit" in answer
    assert llm_usage(gov, "ses-llama-http") == TWO_FAKE_CALLS
    # LlamaIndex's OpenAI LLM keeps an async HTTP client it never closes: collect it here, not in a later test.
    import gc

    gc.collect()
