"""The model-call gate (`Backend.before_model_call`) on the embedded store, SQLite and PostgreSQL.

A spent budget stops the model call (`block`) or pauses it until an approver lets it go ahead
(`require_approval`), with the reason, rule ids, approval and approvers the next tool call gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import ApprovalDenied, ApprovalTimeout, ModelCallBlocked, ToolCallBlocked, _decisions
from clearance._clock import ManualClock
from clearance._granting import BudgetExtension
from clearance._guard import _budget
from clearance._store import _approvals as approvals
from clearance._store import _events as events
from clearance.policy._compile import MODEL_CALL

from ._shared import FINANCE, LEAD, PRICES, InThread, governor, pending, spend

ASKING = """\
version: 1
default: block
tools:
  "*.*":  # would match the model call's reserved name, were tools' rules applied to it
    rules:
      - {id: dotted-tools-blocked, effect: block}
  lookup:
    default: allow
budgets:
  session:
    max_cost_usd: 1
    on_exceed: require_approval
    approval: {approvers: [role:finance], timeout: 10m}
"""
BLOCKING = "version: 1\nbudgets:\n  session: {max_cost_usd: 1}\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    clearance.shutdown()  # its last records are committed before the schema is dropped


@pytest.fixture
def setup(configure: Callable[..., Any], store: str) -> Callable[[str], None]:
    return lambda policy: configure(policy, database_url=store, price_overrides=PRICES) and None


def gate(session: str | None = "", model: str | None = "gpt-test") -> None:
    """The gate as an integration calls it: in the current session (`s1` outside any)."""
    governor().before_model_call(clearance.get_session() or "s1" if session == "" else session, model)


def records(kind: str | None = None) -> list[dict[str, Any]]:
    return [e.body for e in events.query(governor().db, events.EventFilter(kind=kind))]


def test_without_budgets_the_gate_reads_nothing(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    setup("version: 1\ndefault: block\n")

    class NoStore:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the gate used the store ({name}) for a policy without budgets")

    with monkeypatch.context() as patched:
        patched.setattr(governor(), "db", NoStore())
        for _ in range(3):
            gate()
        asyncio.run(governor().before_model_call_async("s1", "gpt-test"))


def test_an_unspent_budget_lets_model_calls_through_unrecorded(setup: Any) -> None:
    setup(ASKING)
    spend(0.99, session="s1")
    before = len(records())
    gate()
    gate(session="s2")
    assert len(records()) == before


def test_a_spent_budget_that_blocks_stops_the_model_call_with_the_tool_call_s_reason(setup: Any) -> None:
    setup(BLOCKING)
    tool = clearance.guard_tool("lookup", lambda q: q)
    spend(1.0, session="s1")
    with clearance.session("s1"), pytest.raises(ToolCallBlocked) as by_tool:
        tool("x")
    with pytest.raises(ModelCallBlocked) as by_model:
        gate(model="gpt-test")
    blocked = by_model.value
    assert isinstance(blocked, ToolCallBlocked)  # handled wherever a block is
    assert blocked.reason == by_tool.value.reason == "session budget exhausted: $1.0000 spent, limit $1"
    assert blocked.rule_ids == by_tool.value.rule_ids == ("budget:session",)
    assert blocked.model == "gpt-test" and blocked.tool == MODEL_CALL
    assert str(blocked) == "model call to gpt-test blocked: session budget exhausted: $1.0000 spent, limit $1"
    decided = records("tool_call.decided")[-1]
    assert decided["call_id"] == blocked.call_id and decided["tool"] == MODEL_CALL
    assert decided["args"] == {"model": "gpt-test"} and decided["decision"] == "block"
    assert decided["reason"] == blocked.reason and decided["session"] == "s1"
    gate(session="s2")  # another session's budget is its own


def test_a_spent_budget_that_asks_pauses_the_model_call_until_extended(setup: Any) -> None:
    setup(ASKING)
    spend(1.0, session="s1")
    tool = clearance.guard_tool("lookup", lambda q: q)
    by_tool = InThread(lambda: tool("x"), "s1")
    [tool_approval] = pending()
    by_model = InThread(lambda: gate(model="gpt-test"), "s1")
    asked = next(a for a in pending(2) if a.id != tool_approval.id)
    assert asked.tool == MODEL_CALL and asked.args == {"model": "gpt-test"} and asked.session == "s1"
    # what the tool call got: the budget's reason, rule and approvers (not the tools' rules or default)
    assert (asked.reason, asked.rule_ids, asked.approvers) == (
        tool_approval.reason,
        tool_approval.rule_ids,
        tool_approval.approvers,
    )
    assert asked.reason == "session budget exhausted: $1.0000 spent, limit $1; an approver may extend it"
    assert asked.rule_ids == ("budget:session",) and asked.approvers == ("role:finance",)
    assert by_model.thread.is_alive()  # paused
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=1))
    by_model.outcome()  # went ahead
    _decisions.decide(governor().db, tool_approval.id, approve=True, by=FINANCE)
    assert by_tool.outcome() == "x"
    assert approvals.get(governor().db, asked.id).status == "executed"
    ours = [r for r in records() if r.get("call_id") == asked.call_id]
    assert [r["kind"] for r in ours] == [
        "tool_call.decided",
        "approval.requested",
        "approval.decided",
        "tool_call.finished",
        "approval.executed",
    ]
    assert ours[0]["budget"] == "session" and ours[0]["facts"]["session_cost_usd"] == 1.0
    assert ours[2]["grant_id"]  # the extension, on the decision's own record
    before = len(records())
    gate()  # $1 of $2: through, unrecorded
    spend(1.0, session="s1")
    again = InThread(gate, "s1")
    [second] = pending()
    assert second.reason == "session budget exhausted: $2.0000 spent, limit $2; an approver may extend it"
    assert len(records()) > before
    _decisions.decide(governor().db, second.id, approve=False, by=FINANCE, note="no more")
    with pytest.raises(ApprovalDenied, match="no more"):
        again.outcome()
    assert approvals.get(governor().db, second.id).status == "denied"


def test_approving_without_an_extension_lets_one_model_call_through(setup: Any) -> None:
    setup(ASKING)
    spend(1.0, session="s1")
    first = InThread(gate, "s1")
    [asked] = pending()
    with pytest.raises(clearance.ApprovalForbidden):  # only the budget's approvers decide
        _decisions.decide(governor().db, asked.id, approve=True, by=LEAD)
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE)
    first.outcome()
    second = InThread(gate, "s1")  # still spent: asks again
    [again] = pending()
    assert again.id != asked.id
    _decisions.decide(governor().db, again.id, approve=False, by=FINANCE)
    with pytest.raises(ApprovalDenied):
        second.outcome()


def test_the_async_gate_waits_without_blocking_the_event_loop(setup: Any) -> None:
    setup(ASKING)
    spend(1.0, session="s1")

    async def main() -> list[str]:
        steps: list[str] = []

        async def decide_when_asked() -> None:
            for _ in range(3):  # runs only while the gate awaits: it waits on the event loop
                steps.append("tick")
                await asyncio.sleep(0.01)
            [asked] = approvals.listing(governor().db)
            _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=5))

        with clearance.session("s1"):
            deciding = asyncio.create_task(decide_when_asked())
            await governor().before_model_call_async(clearance.get_session(), "gpt-test")
            steps.append("went ahead")
            await deciding
        return steps

    steps = asyncio.run(asyncio.wait_for(main(), 15))
    assert steps == ["tick", "tick", "tick", "went ahead"]


def test_an_agent_budget_over_its_window(setup: Any, clock: ManualClock) -> None:
    setup("version: 1\nbudgets:\n  agent: {max_tokens: 100, window: 1h}\n")
    clearance.record_usage("scripted", 100, 0, session="s1")
    with pytest.raises(ModelCallBlocked, match=r"agent budget exhausted: 100 tokens used in the last 1h, limit 100"):
        gate(session="s2")
    clock.advance(3601)
    gate(session="s2")


def test_an_approval_nobody_decides_times_out(setup: Any, clock: ManualClock) -> None:
    setup(ASKING)
    spend(1.0, session="s1")
    waiting = InThread(gate, "s1")
    [asked] = pending()
    clock.advance(601)  # the budget's approval timeout, 10m; on_timeout: deny
    with pytest.raises(ApprovalTimeout):
        waiting.outcome()
    assert approvals.get(governor().db, asked.id).status == "expired"


def test_an_extension_that_lands_after_the_read_lets_the_call_through_recorded(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(ASKING)
    monkeypatch.setattr(_budget, "_spent", lambda *_: True)  # read as spent; not spent when decided
    gate()
    [decided] = records("tool_call.decided")
    assert decided["tool"] == MODEL_CALL and decided["decision"] == "allow"
    assert decided["reason"] == "no rule matched; the default of a model call is allow"
    assert approvals.listing(governor().db) == []


@pytest.mark.parametrize(
    ("model", "recorded"),
    [
        ("gpt\x00evil", "gpt\\x00evil"),
        ("gpt\ud800", "gpt\\ud800"),
        ("gpt\u202eevil", "gpt\u202eevil"),  # kept as text; readers make it visible
        ("m" * 10_000_000, "m" * 200),
        ("", None),
        (None, None),
    ],
)
def test_hostile_model_names_are_recorded_as_text_any_store_keeps(setup: Any, model: Any, recorded: Any) -> None:
    setup(BLOCKING)
    spend(1.0, session="s1")
    with pytest.raises(ModelCallBlocked) as blocked:
        gate(model=model)
    assert blocked.value.model == recorded
    assert records("tool_call.decided")[-1]["args"] == ({"model": recorded} if recorded is not None else {})


@pytest.mark.parametrize("session", ["s\x00", "s\ud800", " s", "s" * 201, "\u202e"])
def test_a_hostile_session_id_is_refused_and_recorded_never_read_with(setup: Any, session: str) -> None:
    setup(ASKING)
    with pytest.raises(ModelCallBlocked) as blocked:
        gate(session=session)
    assert blocked.value.rule_ids == ("boundary:arguments",)
    assert "the session id" in blocked.value.reason
    assert records("tool_call.decided")[-1]["decision"] == "block"


def test_an_approval_with_edited_arguments_is_not_made_and_recorded_failed(setup: Any) -> None:
    setup(ASKING)
    spend(1.0, session="s1")
    waiting = InThread(gate, "s1")
    [asked] = pending()
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, args={"model": "cheaper"})
    with pytest.raises(ModelCallBlocked, match="with edited arguments, which a model call cannot take") as refused:
        waiting.outcome()
    assert refused.value.model == "gpt-test"
    assert approvals.get(governor().db, asked.id).status == "failed"
    [finished] = [r for r in records("tool_call.finished") if r["call_id"] == asked.call_id]
    assert finished["decision"] == "error" and "cannot take" in finished["error"]
