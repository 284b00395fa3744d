"""CrewAI: a real crew run, offline, with a scripted LLM (in the pinned virtualenv: `make test-pinned`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
pytest.importorskip("crewai")
# CrewAI warns about its own deprecations (function_calling_llm, pydantic v1 idioms) on every crew.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import tool  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402
from clearance.integrations import crewai as governed  # noqa: E402

from ._shared import POLICY, TWO_FAKE_CALLS, llm_usage, records, while_deciding  # noqa: E402

ran: list[Any] = []


@tool("issue_refund")
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    ran.append((order_id, amount))
    return f"refunded {amount} on {order_id}"


class Scripted(BaseLLM):
    """Calls `issue_refund` once, then gives a final answer quoting what the tool said."""

    amount: float = 850
    seen: list[Any] = []

    def call(
        self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None, **kw: Any
    ) -> Any:
        text = str(messages)
        self.seen.append(text)
        if len(self.seen) == 1 and available_functions:
            result = available_functions["issue_refund"](order_id="A-1", amount=self.amount)
            return f"Final Answer: the tool said {result}"
        if len(self.seen) == 1:
            return [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "issue_refund",
                        "arguments": f'{{"order_id": "A-1", "amount": {self.amount}}}',
                    },
                }
            ]
        return f"Final Answer: the tool said {text[-400:]}"

    def supports_function_calling(self) -> bool:
        return True


def kickoff(amount: float = 850) -> str:
    ran.clear()
    llm = Scripted(model="gpt-4o-mini", amount=amount, seen=[])
    agent = Agent(role="support", goal="refund orders", backstory="-", llm=llm, tools=[issue_refund], max_iter=3)
    task = Task(description="refund A-1", expected_output="what happened", agent=agent)
    with clearance.session("ses-crew"):
        return str(Crew(agents=[agent], tasks=[task]).kickoff())


def test_denied_the_refund_never_runs_and_the_answer_carries_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    answer = while_deciding(gov, lambda: kickoff(), approve=False, note="customer already refunded")
    assert ran == [] and "customer already refunded" in answer


def test_approved_from_another_thread_runs_once_as_edited(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    answer = while_deciding(gov, lambda: kickoff(), approve=True, args={"amount": 300})
    assert ran == [("A-1", 300)] and "refunded 300" in answer
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "executed"


def test_blocked_and_a_failing_decision_blocks_too(
    configure: Callable[..., Governor], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(POLICY)
    answer = kickoff(amount=9000)
    assert ran == [] and "Blocked by policy: Refunds over $5000 are never issued" in answer

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("store on fire")

    monkeypatch.setattr(governed, "begin", broken)  # CrewAI would swallow this and run the tool
    answer = kickoff(amount=50)
    assert ran == [] and "Clearance could not decide" in answer


def test_usage_is_recorded(configure: Callable[..., Governor]) -> None:
    from crewai.events import crewai_event_bus
    from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallType

    gov = configure(POLICY)
    event = LLMCallCompletedEvent(
        model="gpt-4o-mini",
        call_id="c1",
        response="hi",
        call_type=LLMCallType.LLM_CALL,
        usage={"prompt_tokens": 120, "completion_tokens": 30},
    )
    with clearance.session("ses-crew-usage"):
        crewai_event_bus.emit(None, event)
        crewai_event_bus.flush()  # its handlers may run on its own threads
    clearance.flush()
    calls = records(gov, "llm.call", "ses-crew-usage")
    assert [(c["model"], c["input_tokens"], c["output_tokens"]) for c in calls] == [("gpt-4o-mini", 120, 30)]


def test_against_a_fake_openai_server(configure: Callable[..., Governor]) -> None:
    """The real HTTP client path: CrewAI's OpenAI provider talking to a server on 127.0.0.1."""
    from crewai import LLM

    from ..fake_openai import FakeOpenAI

    gov = configure(POLICY)
    fake = FakeOpenAI(amount=850)
    ran.clear()
    llm = LLM(model="openai/gpt-4o-mini", base_url=fake.url, api_key="sk-test")
    agent = Agent(role="support", goal="refund orders", backstory="-", llm=llm, tools=[issue_refund], max_iter=3)
    task = Task(description="refund A-1", expected_output="what happened", agent=agent)

    def kick() -> str:
        with clearance.session("ses-crew-http"):
            return str(Crew(agents=[agent], tasks=[task]).kickoff())

    try:
        answer = while_deciding(gov, kick, approve=False, note="over the limit")
    finally:
        fake.close()
    assert ran == [] and "over the limit" in answer
    assert llm_usage(gov, "ses-crew-http") == TWO_FAKE_CALLS


def test_the_guides_example_runs_as_shown(configure: Callable[..., Governor], tmp_path: Path) -> None:
    """docs/guides/crewai.md's example, unchanged, in a process of its own: the $850 refund waits in
    CrewAI's hook until a lead approves it from this process, then runs once and the crew answers."""
    import re
    import subprocess
    import sys

    from ..conftest import REPO
    from ..fake_openai import FakeOpenAI
    from ._shared import decide_when_pending

    guide = (REPO / "docs" / "guides" / "crewai.md").read_text()
    [code] = re.findall(r"<!-- example: crewai -->\n(?:<!-- not-run: .*? -->\n)?```python\n(.*?)```", guide, flags=re.S)
    gov = configure(POLICY)  # the same store file the example's process uses
    (tmp_path / "policy.yaml").write_text(POLICY)
    fake = FakeOpenAI(amount=850)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "CLEARANCE_POLICY": "policy.yaml",
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "sk-test",
        "CREWAI_DISABLE_TELEMETRY": "true",
        "OTEL_SDK_DISABLED": "true",
    }
    lead = decide_when_pending(gov, approve=True, note="checked the order")
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        lead.join(30)
        fake.close()
    assert out.returncode == 0, out.stderr
    assert "refunded 850" in out.stdout  # the model was given the tool's result, and said it
    [approved] = approvals.listing(gov.db, status=None) or [None]
    assert approved is not None and approved.status.value == "executed" and approved.args["amount"] == 850
    finished = records(gov, "tool_call.finished", "ticket-4711")
    assert [f["decision"] for f in finished] == ["ok"]
