"""Monitor rules and budgets that ask, as a call's record keeps them, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearance._clock import ManualClock
from clearance._granting import GrantRequest
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _grants as grants
from clearance.policy import Effect, parse_policy

from ._shared import call, decided, granted, open_store, records, spend

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: trial-cap
        when: facts.calls_1h >= 2
        effect: block
        mode: monitor
        reason: a third refund within the hour would be blocked
      - id: trial-approval
        when: args.amount > 50
        effect: require_approval
        mode: monitor
        approval: {grants: {scopes: [session]}}
      - id: trial-error
        when: int(args.order_id) > 5
        effect: allow
        mode: monitor
        on_error: block
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {grants: {scopes: [session], max_calls: 5}}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    return open_store(request, tmp_path, request.param, POLICY)


def test_monitor_rules_are_recorded_and_never_enforced(store: Database) -> None:
    first = call(store, {"order_id": "A-1", "amount": 60}, policy=parse_policy(POLICY, "policy.yaml"))
    assert first.decision.effect is Effect.ALLOW and first.approval_id is None  # would ask; allowed
    record = decided(store, first.call_id)
    assert record["decision"] == "allow" and record["rule_ids"] == []
    would = {m["rule_id"]: m for m in record["monitored"]}
    assert set(would) == {"trial-approval", "trial-error"}
    assert would["trial-approval"]["would"] == "require_approval"
    assert would["trial-error"]["would"] == "block" and "could not be evaluated" in would["trial-error"]["reason"]
    assert record["facts"] == {
        "calls_1h": 0,
        "session_cost_usd": 0.0,
        "session_tokens": 0,
        "session_budget_extension_usd": 0.0,
        "session_budget_extension_tokens": 0,
    }
    for _ in range(2):
        call(store, {"order_id": "A-1", "amount": 10}, policy=parse_policy(POLICY, "policy.yaml"))
    third = call(store, {"order_id": "A-1", "amount": 10}, policy=parse_policy(POLICY, "policy.yaml"))
    assert third.decision.effect is Effect.ALLOW
    [cap] = [m for m in decided(store, third.call_id)["monitored"] if m["rule_id"] == "trial-cap"]
    assert cap == {
        "rule_id": "trial-cap",
        "would": "block",
        "reason": "a third refund within the hour would be blocked",
    }
    assert approvals.listing(store) == [] and records(store, "approval.requested") == []


def test_a_monitor_rule_beside_an_enforced_one(store: Database) -> None:
    """The enforced rule asks; the monitor rule is recorded beside it, and a grant answers only the enforced one."""
    policy = parse_policy(POLICY, "policy.yaml")
    first = call(store, {"order_id": "A-1", "amount": 150}, policy=policy)
    assert first.decision.effect is Effect.REQUIRE_APPROVAL and first.decision.rule_ids == ("big",)
    assert {m.rule_id for m in first.decision.monitored} == {"trial-approval", "trial-error"}
    grant_id = granted(store, first, GrantRequest("session", "1h"))
    [created] = records(store, "grant.created")
    assert created["rule_ids"] == ["big"]  # never a monitor rule's
    second = call(store, {"order_id": "A-1", "amount": 150}, policy=policy)
    assert second.decision.grant_id == grant_id
    assert {m["rule_id"] for m in decided(store, second.call_id)["monitored"]} >= {"trial-approval"}


def test_a_spent_budget_asks_and_its_record_says_so(store: Database, clock: ManualClock) -> None:
    policy = parse_policy(POLICY, "policy.yaml")
    spend(store, "1.5")
    asked = call(store, {"order_id": "A-1", "amount": 10}, policy=policy)
    assert asked.decision.effect is Effect.REQUIRE_APPROVAL and asked.approval_id is not None
    record = decided(store, asked.call_id)
    assert record["budget"] == "session" and record["rule_ids"] == ["budget:session"]
    assert "session budget exhausted" in record["reason"] and "an approver may extend it" in record["reason"]
    other = call(store, {"order_id": "A-1", "amount": 10}, policy=policy, session="s2")
    assert other.decision.effect is Effect.ALLOW and "budget" not in decided(store, other.call_id)
    both = call(store, {"order_id": "A-1", "amount": 150}, policy=policy)  # the rule asks too: one approval
    assert both.decision.rule_ids == ("budget:session", "big") and both.decision.budget == "session"
    assert grants.listing(store) == []
