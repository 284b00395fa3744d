"""Budgets that ask, on the tool-call path, end to end on the embedded store (SQLite and PostgreSQL).

A guarded tool called in a session whose budget is spent waits for a human; the approver may
extend the budget, and the calls run until the extended budget is spent too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import ApprovalDenied, ApprovalForbidden, ToolCallBlocked, _decisions
from clearance._clock import ManualClock
from clearance._granting import BudgetExtension, GrantRequest
from clearance._store import _approvals as approvals
from clearance._store import _events as events
from clearance._store import _grants as grants
from clearance.errors import GrantRejected

from ._shared import FINANCE, LEAD, PRICES, InThread, governor, pending, spend

ASKING = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: big-refund
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a lead
        approval: {approvers: [role:lead]}
      - {id: huge-refund, when: args.amount > 5000, effect: block, reason: never this much}
budgets:
  session:
    max_cost_usd: 1
    on_exceed: require_approval
    approval: {approvers: [role:finance], timeout: 10m}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    clearance.shutdown()  # its last records are committed before the schema is dropped


@pytest.fixture
def setup(configure: Callable[..., Any], store: str) -> Callable[[str], Callable[..., str]]:
    """Configure `policy` on the store; the guarded `issue_refund` tool."""

    def make(policy: str) -> Callable[..., str]:
        configure(policy, database_url=store, price_overrides=PRICES)

        def issue_refund(order_id: str, amount: float) -> str:
            return f"refunded {amount} on {order_id}"

        return clearance.guard_tool("issue_refund", issue_refund)

    return make


def test_a_spent_budget_waits_for_an_extension_then_runs_until_spent_again(setup: Any) -> None:
    refund = setup(ASKING)
    with clearance.session("s1"):
        assert refund("A-1", 10) == "refunded 10 on A-1"  # nothing spent yet
        spend(1.0)
    waiting = InThread(lambda: refund("A-2", 20), "s1")
    [asked] = pending()
    assert asked.tool == "issue_refund" and asked.session == "s1"
    assert asked.rule_ids == ("budget:session",)
    assert asked.approvers == ("role:finance",)  # from budgets.session.approval
    assert asked.reason == "session budget exhausted: $1.0000 spent, limit $1; an approver may extend it"
    with pytest.raises(ApprovalForbidden):  # the budget's approvers decide, not the rules'
        _decisions.decide(governor().db, asked.id, approve=True, by=LEAD, extend=BudgetExtension(usd=2))
    with pytest.raises(GrantRejected, match="extend the budget instead"):
        _decisions.decide(
            governor().db, asked.id, approve=True, by=FINANCE, grant=GrantRequest(scope="session", duration="1h")
        )
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=2))
    assert waiting.outcome() == "refunded 20 on A-2"
    [extension] = grants.listing(governor().db, session="s1")
    assert extension.kind == "budget" and extension.approval_id == asked.id and extension.granted_by == FINANCE.name
    with clearance.session("s1"):
        assert refund("A-3", 30) == "refunded 30 on A-3"  # $1 spent of $3
        spend(1.5)
        assert refund("A-4", 40) == "refunded 40 on A-4"  # $2.50 of $3
        spend(0.5)
    again = InThread(lambda: refund("A-5", 50), "s1")  # $3 of $3: ask again
    [second] = pending()
    assert second.reason == "session budget exhausted: $3.0000 spent, limit $3; an approver may extend it"
    _decisions.decide(governor().db, second.id, approve=False, by=FINANCE, note="enough")
    with pytest.raises(ApprovalDenied, match="enough"):
        again.outcome()
    with clearance.session("s2"):  # another session's budget is its own
        assert refund("B-1", 10) == "refunded 10 on B-1"
    decided = _decided_records()
    assert [(r["session"], r["decision"], r.get("budget")) for r in decided] == [
        ("s1", "allow", None),
        ("s1", "require_approval", "session"),
        ("s1", "allow", None),
        ("s1", "allow", None),
        ("s1", "require_approval", "session"),
        ("s2", "allow", None),
    ]
    assert decided[1]["facts"]["session_cost_usd"] == 1.0 and decided[4]["facts"]["session_budget_extension_usd"] == 2


def test_approving_without_an_extension_lets_one_call_run(setup: Any) -> None:
    refund = setup(ASKING)
    spend(1.0, session="s1")
    first = InThread(lambda: refund("A-1", 10), "s1")
    [asked] = pending()
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE)
    assert first.outcome() == "refunded 10 on A-1"
    assert grants.listing(governor().db, session="s1") == []
    second = InThread(lambda: refund("A-2", 10), "s1")  # still spent: asks again
    [again] = pending()
    assert again.id != asked.id
    _decisions.decide(governor().db, again.id, approve=True, by=FINANCE)
    assert second.outcome() == "refunded 10 on A-2"


def test_a_token_budget_extends_by_tokens(setup: Any) -> None:
    policy = """\
    version: 1
    budgets:
      session: {max_tokens: 1000, on_exceed: require_approval}
    """
    refund = setup(policy)
    clearance.record_usage("scripted", 600, 400, session="s1")
    waiting = InThread(lambda: refund("A-1", 10), "s1")
    [asked] = pending()
    assert asked.reason == "session budget exhausted: 1000 tokens used, limit 1000; an approver may extend it"
    assert asked.approvers == ()  # no approval settings: any approver
    with pytest.raises(GrantRejected, match="extend.tokens"):
        _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(tokens=-5))
    assert approvals.get(governor().db, asked.id).status == "pending"  # a refused extension decides nothing
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(tokens=500))
    assert waiting.outcome() == "refunded 10 on A-1"
    with clearance.session("s1"):
        assert refund("A-2", 10) == "refunded 10 on A-2"  # 1000 of 1500
        clearance.record_usage("scripted", 500, 0)
    waiting = InThread(lambda: refund("A-3", 10), "s1")
    [again] = pending()
    assert again.reason == "session budget exhausted: 1500 tokens used, limit 1500; an approver may extend it"
    _decisions.decide(governor().db, again.id, approve=False, by=FINANCE)
    with pytest.raises(ApprovalDenied):
        waiting.outcome()


def test_an_agent_budget_asks_within_its_window(setup: Any, clock: ManualClock) -> None:
    policy = """\
    version: 1
    budgets:
      agent: {max_cost_usd: 1, window: 1h, on_exceed: require_approval, approval: {approvers: [role:finance]}}
    """
    refund = setup(policy)
    spend(1.0, session="s1")
    waiting = InThread(lambda: refund("A-1", 10), "s2")  # the agent's budget spans its sessions
    [asked] = pending()
    assert asked.rule_ids == ("budget:agent",)
    assert asked.reason == "agent budget exhausted: $1.0000 spent in the last 1h, limit $1; an approver may extend it"
    _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=1))
    assert waiting.outcome() == "refunded 10 on A-1"
    with clearance.session("s3"):
        spend(0.5)
        assert refund("A-2", 10) == "refunded 10 on A-2"  # $1.50 of $2
    clock.advance(3601)  # the spend and the extension leave the window
    with clearance.session("s3"):
        assert refund("A-3", 10) == "refunded 10 on A-3"
        spend(1.0)
    waiting = InThread(lambda: refund("A-4", 10), "s3")  # $1 of $1 again: the old extension is out of the window
    [again] = pending()
    assert again.reason == "agent budget exhausted: $1.0000 spent in the last 1h, limit $1; an approver may extend it"
    _decisions.decide(governor().db, again.id, approve=True, by=FINANCE)
    assert waiting.outcome() == "refunded 10 on A-4"


def test_on_exceed_block_still_blocks(setup: Any) -> None:
    refund = setup("version: 1\nbudgets:\n  session: {max_cost_usd: 1}\n")
    with clearance.session("s1"):
        spend(1.0)
        with pytest.raises(ToolCallBlocked) as blocked:
            refund("A-1", 10)
    assert blocked.value.rule_ids == ("budget:session",)
    assert blocked.value.reason == "session budget exhausted: $1.0000 spent, limit $1"
    assert approvals.listing(governor().db) == []


def test_a_rule_that_blocks_wins_over_a_budget_that_asks(setup: Any) -> None:
    refund = setup(ASKING)
    with clearance.session("s1"):
        spend(1.0)
        with pytest.raises(ToolCallBlocked) as blocked:
            refund("A-1", 9000)
    assert blocked.value.rule_ids == ("huge-refund",) and blocked.value.reason == "never this much"
    assert approvals.listing(governor().db) == []


def test_a_rule_that_asks_and_a_spent_budget_ask_once_and_the_rule_s_approvers_decide(setup: Any) -> None:
    refund = setup(ASKING)
    spend(1.0, session="s1")
    waiting = InThread(lambda: refund("A-1", 300), "s1")
    [asked] = pending()
    assert asked.rule_ids == ("budget:session", "big-refund")
    assert asked.approvers == ("role:lead",)
    with pytest.raises(ApprovalForbidden):
        _decisions.decide(governor().db, asked.id, approve=True, by=FINANCE)
    # the lead decides the call, but the budget's money is finance's to give
    with pytest.raises(GrantRejected, match="only role:finance may extend the session budget"):
        _decisions.decide(governor().db, asked.id, approve=True, by=LEAD, extend=BudgetExtension(usd=5))
    _decisions.decide(governor().db, asked.id, approve=True, by=LEAD)
    assert waiting.outcome() == "refunded 300 on A-1"
    small = InThread(lambda: refund("A-2", 10), "s1")  # the budget alone asks now: finance's to decide
    [budget_only] = pending()
    assert budget_only.rule_ids == ("budget:session",) and budget_only.approvers == ("role:finance",)
    _decisions.decide(governor().db, budget_only.id, approve=True, by=FINANCE, extend=BudgetExtension(usd=5))
    assert small.outcome() == "refunded 10 on A-2"
    with clearance.session("s1"):
        assert refund("A-2b", 10) == "refunded 10 on A-2b"  # the extension holds for the session
    big = InThread(lambda: refund("A-3", 300), "s1")  # the rule still asks, alone now
    [rule_only] = pending()
    assert rule_only.rule_ids == ("big-refund",) and rule_only.reason == "Refunds over $200 need a lead"
    with pytest.raises(GrantRejected, match="only an approval an exhausted budget asked for"):
        _decisions.decide(governor().db, rule_only.id, approve=True, by=LEAD, extend=BudgetExtension(usd=1))
    _decisions.decide(governor().db, rule_only.id, approve=True, by=LEAD)
    assert big.outcome() == "refunded 300 on A-3"


def _decided_records() -> list[dict[str, Any]]:
    return [e.body for e in events.query(governor().db, events.EventFilter(kind="tool_call.decided"))]
