"""Grants on both stores: what a grant covers, how its limits count, how it ends, what is recorded."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from clearance import _decisions
from clearance._clock import ManualClock
from clearance._granting import BudgetExtension, GrantRequest
from clearance._store import Database
from clearance._store import _events as events
from clearance._store import _grants as grants
from clearance.errors import GrantNotFound, GrantRejected
from clearance.policy import Effect, parse_policy

from ._shared import LEAD, call, decided, granted, open_store, records, refund, spend


def test_a_covered_call_is_allowed_and_recorded_with_its_grant(db: Database) -> None:
    first = refund(db, 150)
    grant_id = granted(db, first, GrantRequest("session", "1h", max_calls=3))
    [created] = records(db, "grant.created")
    assert created["grant_id"] == grant_id and created["approval_id"] == first.approval_id
    assert created["max_calls"] == 3 and created["max_total"] == {"amount": "5000"}  # the rule's total, by default
    assert created["rule_ids"] == ["big"] and created["granted_by"] == "user:lena"
    second = refund(db, 120.5)
    assert second.decision.effect is Effect.ALLOW and second.approval_id is None
    assert second.decision.grant_id == grant_id
    assert f"allowed by grant {grant_id} from user:lena" in second.decision.reason
    record = decided(db, second.call_id)
    assert record["decision"] == "allow" and record["grant_id"] == grant_id
    assert record["grant_use"] == {"calls_used": 1, "total_used": "120.5"}
    assert record["rule_ids"] == ["big"]  # the rule that asked, which the grant answered
    small = refund(db, 50)  # a call policy allows needs no grant, and uses none
    assert small.decision.grant_id is None and "grant_id" not in decided(db, small.call_id)
    assert grants.get(db, grant_id).calls_used == 1
    assert events.verify(db).ok


def test_session_scope(db: Database) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("session", "1h"))
    assert refund(db, 150, session="s1").decision.grant_id == grant_id
    assert refund(db, 150, session="s2").decision.effect is Effect.REQUIRE_APPROVAL
    assert refund(db, 150, session="s1", agent="other").decision.effect is Effect.REQUIRE_APPROVAL


def test_agent_scope(db: Database) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h"))
    for session in ("s1", "s2", "s3"):
        assert refund(db, 150, session=session).decision.grant_id == grant_id
    assert refund(db, 150, agent="other").decision.effect is Effect.REQUIRE_APPROVAL
    assert call(db, {"key": "k"}, tool="lookup").decision.effect is Effect.REQUIRE_APPROVAL  # another tool


def test_requester_scope(db: Database) -> None:
    first = refund(db, 150, requested_by="pat")
    grant_id = granted(db, first, GrantRequest("requester", "1h"))
    assert refund(db, 150, session="s9", requested_by="pat").decision.grant_id == grant_id
    assert refund(db, 150, requested_by="quinn").decision.effect is Effect.REQUIRE_APPROVAL
    assert refund(db, 150).decision.effect is Effect.REQUIRE_APPROVAL  # nobody named
    assert refund(db, 150, requested_by="pat", agent="other").decision.effect is Effect.REQUIRE_APPROVAL


def test_a_requester_grant_needs_a_requester(db: Database) -> None:
    first = refund(db, 150)
    with pytest.raises(GrantRejected, match="the call names no person the agent acts for"):
        granted(db, first, GrantRequest("requester", "1h"))


def test_a_grant_covers_its_own_environment_only(db: Database) -> None:
    """A grant given on a staging call must not let production calls through."""
    grant_id = granted(db, refund(db, 150, environment="staging"), GrantRequest("agent", "1h"))
    assert refund(db, 150, environment="staging").decision.grant_id == grant_id
    assert refund(db, 150, environment="production").decision.effect is Effect.REQUIRE_APPROVAL


def test_constraints_same_and_maximum(db: Database) -> None:
    request = GrantRequest("agent", "1h", constraints={"amount": {"maximum": 150}}, same=("order_id",))
    grant_id = granted(db, refund(db, 140, order_id="A-7"), request)
    assert refund(db, 150, order_id="A-7").decision.grant_id == grant_id  # at the maximum
    assert refund(db, 150.01, order_id="A-7").decision.effect is Effect.REQUIRE_APPROVAL
    assert refund(db, 120, order_id="A-8").decision.effect is Effect.REQUIRE_APPROVAL
    [created] = records(db, "grant.created")
    assert created["constraints"] == {
        "amount": {"maximum": 150, "required": True},
        "order_id": {"enum": ["A-7"], "required": True},
    }


def test_same_refers_to_the_edited_arguments(db: Database) -> None:
    first = refund(db, 150, order_id="A-1")
    assert first.approval_id is not None
    _decisions.decide(
        db,
        first.approval_id,
        approve=True,
        by=LEAD,
        args={"order_id": "B-2"},
        grant=GrantRequest("session", "1h", same=("order_id",)),
    )
    assert refund(db, 150, order_id="B-2").decision.effect is Effect.ALLOW
    assert refund(db, 150, order_id="A-1").decision.effect is Effect.REQUIRE_APPROVAL


def test_max_calls_count_exactly_and_the_grant_ends_once(db: Database) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("session", "1h", max_calls=3))
    uses = [refund(db, 150) for _ in range(3)]
    assert [u.decision.grant_id for u in uses] == [grant_id] * 3
    assert [decided(db, u.call_id)["grant_use"]["calls_used"] for u in uses] == [1, 2, 3]
    assert refund(db, 150).decision.effect is Effect.REQUIRE_APPROVAL
    assert refund(db, 150).decision.effect is Effect.REQUIRE_APPROVAL
    [ended] = records(db, "grant.exhausted")
    assert ended["grant_id"] == grant_id and ended["calls_used"] == 3
    grant = grants.get(db, grant_id)
    assert (grant.calls_used, grant.status(grant.created_at_us)) == (3, "exhausted") and grant.ended_at_us
    assert grants.listing(db, live=True) == []
    with pytest.raises(ValueError, match="has ended already"):
        grants.revoke(db, grant_id, by="user:lena")


def test_a_total_is_counted_in_exact_decimals(db: Database) -> None:
    """0.1 + 0.2 is 0.3 here (in floats it is 0.30000000000000004, past the limit)."""
    grant_id = granted(db, call(db, {"amount": 0.05}, tool="tip"), GrantRequest("session", "1h"))
    first, second = call(db, {"amount": 0.1}, tool="tip"), call(db, {"amount": 0.2}, tool="tip")
    assert first.decision.grant_id == second.decision.grant_id == grant_id
    assert decided(db, second.call_id)["grant_use"] == {"calls_used": 2, "total_used": "0.3"}
    [ended] = records(db, "grant.exhausted")
    assert ended["total_used"] == "0.3"
    assert grants.get(db, grant_id).total_used == Decimal("0.3")
    assert call(db, {"amount": 0}, tool="tip").decision.effect is Effect.REQUIRE_APPROVAL  # it ended


def test_a_call_past_the_total_asks_and_leaves_the_total(db: Database) -> None:
    grant_id = granted(db, call(db, {"amount": 1}, tool="tip"), GrantRequest("session", "1h"))
    assert call(db, {"amount": 0.25}, tool="tip").decision.grant_id == grant_id
    assert call(db, {"amount": 0.06}, tool="tip").decision.effect is Effect.REQUIRE_APPROVAL  # 0.31 > 0.3
    assert call(db, {"amount": -5}, tool="tip").decision.effect is Effect.REQUIRE_APPROVAL  # never gives back
    assert call(db, {"amount": 0.05}, tool="tip").decision.grant_id == grant_id  # exactly 0.3
    assert grants.get(db, grant_id).total_used == Decimal("0.3")


def test_a_total_grant_covers_only_calls_that_say_how_much(db: Database) -> None:
    grant_id = granted(db, call(db, {"amount": 0.1}, tool="tip"), GrantRequest("session", "1h"))
    assert call(db, {}, tool="tip").decision.effect is Effect.REQUIRE_APPROVAL
    assert call(db, {"amount": 0.1}, tool="tip").decision.grant_id == grant_id


def test_a_blocking_rule_still_blocks_a_granted_call(db: Database) -> None:
    granted(db, refund(db, 150), GrantRequest("session", "1h", max_total={"amount": 5000}))
    blocked = refund(db, 2500)
    assert blocked.decision.effect is Effect.BLOCK and blocked.decision.grant_id is None
    assert "grant_id" not in decided(db, blocked.call_id)
    [grant] = grants.listing(db)
    assert grant.calls_used == 0 and grant.total_used == 0


def test_calls_other_rules_put_to_approval_are_not_covered(db: Database) -> None:
    granted(db, refund(db, 150), GrantRequest("session", "1h"))
    wider = refund(db, 700)  # `big` and `bigger` ask; the grant answers only `big`
    assert wider.decision.effect is Effect.REQUIRE_APPROVAL and wider.decision.rule_ids == ("big", "bigger")


def test_a_call_without_a_grant_setting_rule_gets_none(db: Database) -> None:
    first = call(db, {}, tool="plain")
    assert first.approval_id is not None
    with pytest.raises(GrantRejected, match="plain allows no grants"):
        _decisions.decide(db, first.approval_id, approve=True, by=LEAD, grant=GrantRequest("session", "1h"))


def test_grants_survive_a_reopened_store(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for kind in ("sqlite", "postgresql"):
        path = tmp_path / kind
        path.mkdir()
        first = open_store(request, path, kind)
        grant_id = granted(first, refund(first, 150), GrantRequest("session", "1h", max_calls=2))
        assert refund(first, 150).decision.grant_id == grant_id
        first.close()
        again = Database(first.url)
        request.addfinalizer(again.close)
        assert refund(again, 150).decision.grant_id == grant_id
        assert refund(again, 150).decision.effect is Effect.REQUIRE_APPROVAL  # two uses, across both
        assert grants.get(again, grant_id).calls_used == 2


def test_revoke(db: Database) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h"))
    assert refund(db, 150).decision.grant_id == grant_id
    revoked = grants.revoke(db, grant_id, by="user:omar", why="too generous")
    assert revoked.status(revoked.revoked_at_us or 0) == "revoked"
    assert refund(db, 150).decision.effect is Effect.REQUIRE_APPROVAL
    [record] = records(db, "grant.revoked")
    assert (record["grant_id"], record["by"], record["reason"]) == (grant_id, "user:omar", "too generous")
    with pytest.raises(ValueError, match="has ended already"):
        grants.revoke(db, grant_id, by="user:omar")
    with pytest.raises(GrantNotFound):
        grants.revoke(db, "grt_nope", by="user:omar")
    with pytest.raises(GrantNotFound):
        grants.get(db, "\u202egrt_" + "x" * 10_000)
    assert len(records(db, "grant.revoked")) == 1


def test_expiry_and_the_sweep(db: Database, clock: ManualClock) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("session", "30m"))
    clock.advance(29 * 60 + 59)
    assert refund(db, 150).decision.grant_id == grant_id
    clock.advance(1)  # exactly at expires_at: ended
    assert refund(db, 150).decision.effect is Effect.REQUIRE_APPROVAL
    assert grants.listing(db, live=True) == []
    assert [g.id for g in grants.sweep(db)] == [grant_id]
    assert grants.sweep(db) == []
    [record] = records(db, "grant.expired")
    assert record["grant_id"] == grant_id and record["calls_used"] == 1
    with pytest.raises(ValueError, match="expired"):
        grants.revoke(db, grant_id, by="user:omar")


def test_a_grant_lasts_at_most_the_rules_duration(db: Database) -> None:
    first = refund(db, 150)
    with pytest.raises(GrantRejected, match="longer than the rule's max_duration of 28800s"):
        granted(db, first, GrantRequest("session", "9h"))
    grant_id = granted(db, first, GrantRequest("session", "8h"))
    grant = grants.get(db, grant_id)
    assert grant.expires_at_us - grant.created_at_us == 8 * 3600 * 1_000_000


BUDGETED = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {grants: {scopes: [session, agent], max_duration: 1h}}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval}
"""


def test_a_budget_approval_is_never_answered_by_a_call_grant(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    for kind in ("sqlite", "postgresql"):
        (tmp_path / kind).mkdir()
        db = open_store(request, tmp_path / kind, kind, BUDGETED)
        policy = parse_policy(BUDGETED, "policy.yaml")
        grant_id = granted(db, refund(db, 150, policy=policy), GrantRequest("agent", "1h"))
        assert refund(db, 150, policy=policy).decision.grant_id == grant_id
        spend(db, "2")
        for amount in (150, 50):  # a call the grant covers, and one policy allows
            asked = refund(db, amount, policy=policy)
            assert asked.decision.effect is Effect.REQUIRE_APPROVAL and asked.decision.budget == "session"
            assert asked.decision.grant_id is None
        assert asked.approval_id is not None
        with pytest.raises(GrantRejected, match="extend the budget instead"):
            _decisions.decide(db, asked.approval_id, approve=True, by=LEAD, grant=GrantRequest("agent", "1h"))
        _decisions.decide(db, asked.approval_id, approve=True, by=LEAD, extend=BudgetExtension(usd="5"))
        assert refund(db, 150, policy=policy).decision.grant_id == grant_id  # the budget has room again


def test_uses_counts_the_calls_a_grant_let_through_and_nothing_else(db: Database) -> None:
    """An argument named grant_id holding the grant's id is not a use of it (the count reads the records)."""
    grant_id = granted(db, call(db, {"to": "a"}, tool="send_note"), GrantRequest("session", "1h"))
    grant = grants.get(db, grant_id)
    assert grant.max_calls is None and grant.max_total is None  # uncounted: no counter to read
    assert call(db, {"to": "b"}, tool="send_note").decision.grant_id == grant_id
    assert call(db, {"to": "c"}, tool="send_note").decision.grant_id == grant_id
    assert grants.uses(db, grant) == 2
    lookalike = {"to": "d", "grant_id": grant_id, "note": f'"grant_id":"{grant_id}"'}
    elsewhere = call(db, lookalike, tool="send_note", session="s2")  # another session: not covered
    assert elsewhere.decision.effect is Effect.REQUIRE_APPROVAL
    underscore = {"to": "e", "grant_id": grant_id[:3] + "X" + grant_id[4:]}  # LIKE's `_` matches any character
    assert call(db, underscore, tool="send_note", session="s3").decision.effect is Effect.REQUIRE_APPROVAL
    assert grants.uses(db, grant) == 2
