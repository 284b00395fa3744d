"""Facts and caps are unaffected by archiving records older than their windows (issue 18).

Refunds and model spend 40 days ago, more today; records older than 35 days are archived.
A daily sum, a 30-day count and a 24-hour agent budget decide the same afterwards, while a
60-day count (a window the archive reaches into) shows the archive did remove counted records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import ToolCallBlocked, _archive
from clearance._clock import ManualClock, now_us
from clearance._guard._governor import Governor
from clearance._store import _events as events
from clearance._store import _facts
from clearance.policy._facts import parse_fact

POLICY = """
version: 1
tools:
  issue_refund:
    rules:
      - {id: daily-cap, when: 'facts.sum_24h_amount + args.amount > 100', effect: block}
      - {id: monthly-count, when: 'facts.calls_30d >= 3', effect: block}
budgets:
  agent: {max_cost_usd: 0.05, window: 24h}
"""
FACTS = ["sum_24h_amount", "calls_30d", "agent_cost_usd_24h", "calls_60d"]


def facts_now(gov: Governor) -> dict[str, Any]:
    specs = [s for s in map(parse_fact, FACTS) if s is not None]
    with gov.db.write() as cur:
        values, errors = _facts.compute(
            gov.db, cur, specs, agent="test-agent", session="s", tool="issue_refund", now_us=now_us()
        )
    assert errors == {}
    return values


def test_windows_younger_than_the_cut_decide_the_same(
    configure: Callable[..., Governor], clock: ManualClock, tmp_path: Path
) -> None:
    gov = configure(POLICY)

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None:
        pass

    with clearance.session("old"):
        for order in "ABC":
            issue_refund(order, 30)
        clearance.record_usage("gpt-4o", 20_000, 10_000, provider="openai")  # $0.15: over the budget, then
    clock.advance(40 * 86_400)
    with clearance.session("s"):
        issue_refund("D", 40)
        issue_refund("E", 40)
        clearance.record_usage("gpt-4o", 2000, 1000, provider="openai")  # $0.015
    before = facts_now(gov)
    assert before == {"sum_24h_amount": 80, "calls_30d": 2, "agent_cost_usd_24h": 0.015, "calls_60d": 5}

    done = _archive.archive(gov.db, tmp_path / "arch", before_us=now_us() - 35 * 86_400 * 10**6)
    assert done.records >= 5  # the three old calls' records and the old model call left the database
    after = facts_now(gov)
    assert after["calls_60d"] == 2  # a window reaching past the cut does see the difference
    assert {k: after[k] for k in FACTS[:3]} == {k: before[k] for k in FACTS[:3]}

    with clearance.session("s"):
        with pytest.raises(ToolCallBlocked, match="daily-cap"):
            issue_refund("F", 30)  # 80 + 30 > 100
        issue_refund("G", 10)  # 90, and the third call in 30 days
        with pytest.raises(ToolCallBlocked, match="monthly-count"):
            issue_refund("H", 1)
    assert events.verify(gov.db).ok
    assert _archive.check(tmp_path / "arch", gov.db).ok
