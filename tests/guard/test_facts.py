from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import clearance
from clearance import ToolCallBlocked
from clearance._guard._governor import Governor
from clearance._store import EventFilter
from clearance._store._events import query

CAPS = """
version: 1
tools:
  issue_refund:
    rules:
      - {id: daily-cap, when: 'facts.sum_24h_amount + args.amount > 100', effect: block}
      - {id: burst, when: 'facts.calls_1h >= 4', effect: block}
      - {id: per-session, when: 'facts.session_calls >= 3', effect: require_approval, approval: {timeout: 1s}}
budgets:
  session: {max_cost_usd: 0.01}
"""


def facts_of(gov: Governor) -> list[dict[str, Any]]:
    return [e.body.get("facts", {}) for e in query(gov.db, EventFilter(kind="tool_call.decided"))]


def test_rolling_sum_counts_and_session_calls(configure: Callable[..., Governor]) -> None:
    gov = configure(CAPS)

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None:
        pass

    with clearance.session("s1"):
        issue_refund("A", 30)
        issue_refund("B", 30.5)
        with pytest.raises(ToolCallBlocked, match="daily-cap|matched"):
            issue_refund("C", 40)  # 60.5 + 40 > 100
    with clearance.session("s2"):
        issue_refund("D", 39.5)  # blocked calls do not count: 60.5 + 39.5 = 100
    f = facts_of(gov)
    assert [x["sum_24h_amount"] for x in f] == [0, 30, 60.5, 60.5]
    assert [x["calls_1h"] for x in f] == [0, 1, 2, 2]
    assert [x["session_calls"] for x in f] == [0, 1, 2, 0]


def test_denied_approvals_do_not_count(configure: Callable[..., Governor]) -> None:
    gov = configure(CAPS)
    from clearance import _decisions

    @clearance.guard(
        on_pending=lambda p: _decisions.decide(
            gov.db, p.approval_id, approve=False, by=_decisions.Decider("lead", trusted=True)
        )
    )
    def issue_refund(order_id: str, amount: float) -> None:
        pass

    with clearance.session("s1"):
        for order in "ABC":
            issue_refund(order, 1)
        with pytest.raises(clearance.ApprovalDenied):
            issue_refund("D", 1)  # the session's 4th call needs approval; denied
        with pytest.raises(clearance.ApprovalDenied):
            issue_refund("E", 1)
    assert [x["calls_1h"] for x in facts_of(gov)] == [0, 1, 2, 3, 3]


def test_session_budget_blocks_the_next_call(configure: Callable[..., Governor]) -> None:
    configure(CAPS)

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None:
        pass

    with clearance.session("s1"):
        issue_refund("A", 1)
        clearance.record_usage("gpt-4o", 2000, 1000, provider="openai")  # $0.015
        with pytest.raises(ToolCallBlocked, match=r"session budget exhausted: \$0.0150 spent, limit \$0.01"):
            issue_refund("B", 1)
    with clearance.session("s2"):
        issue_refund("C", 1)


def test_a_sum_over_a_non_number_blocks_with_the_reason(configure: Callable[..., Governor]) -> None:
    gov = configure("version: 1\ntools:\n  t: {rules: [{id: cap, when: 'facts.sum_1d_amount > 100', effect: block}]}\n")

    @clearance.guard(name="t")
    def t(amount: Any) -> None:
        pass

    t("12.5")  # a decimal string sums exactly
    t(1)
    t("lots")  # allowed: the sum before it is 13.5
    with pytest.raises(ToolCallBlocked) as info:  # now the sum cannot be computed
        t(1)
    assert "a recorded t call has amount='lots', not a number" in info.value.reason
    assert facts_of(gov)[2]["sum_1d_amount"] == 13.5


def test_concurrent_threads_cannot_both_pass_a_cap(configure: Callable[..., Governor]) -> None:
    configure(
        "version: 1\ntools:\n  pay:\n"
        "    rules: [{id: cap, when: 'facts.sum_1h_amount + args.amount > 100', effect: block}]\n"
    )

    @clearance.guard
    def pay(amount: float) -> None:
        pass

    outcomes: list[str] = []

    def attempt() -> None:
        try:
            pay(10)
            outcomes.append("ok")
        except ToolCallBlocked:
            outcomes.append("blocked")

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 10 and outcomes.count("blocked") == 10
