"""What the review of grants found: a rule reading facts.grant_id, a policy that no longer grants,
a budget's money, one migration at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from clearance import GrantRejected, _decisions
from clearance._granting import BudgetExtension, GrantRequest
from clearance._store import Database
from clearance._store import _grants as grants
from clearance._store import _policies as policies
from clearance.policy import parse_policy

from ._shared import LEAD, POLICY, granted, refund, spend

READS_GRANT = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100 && facts.grant_id == ""
        effect: require_approval
        approval: {grants: {scopes: [session], max_calls: 2}}
"""


def test_a_rule_that_reads_facts_grant_id_still_counts_the_grant_s_uses(db: Database) -> None:
    # Before: the rule let granted calls through as plain allows, never counted: unlimited calls.
    policies.create(db, READS_GRANT, source="policy.yaml", author="t")  # the revision that asks
    policy = parse_policy(READS_GRANT, "policy.yaml")
    grant_id = granted(db, refund(db, 150, policy=policy), GrantRequest("session", "1h"))
    got = [refund(db, 150, policy=policy).decision for _ in range(4)]
    assert [(d.effect.value, d.grant_id) for d in got] == [
        ("allow", grant_id),
        ("allow", grant_id),
        ("require_approval", None),
        ("require_approval", None),
    ]
    assert grants.get(db, grant_id).calls_used == 2 and grants.get(db, grant_id).status(0) == "exhausted"


def test_a_grant_covers_nothing_once_the_policy_no_longer_lets_the_rule_grant(db: Database) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("session", "1h"))
    assert refund(db, 150).decision.grant_id == grant_id
    stricter = parse_policy(
        POLICY.replace("max_duration: 8h, max_calls: 20, ", "").replace(
            "          grants: {scopes: [session, agent, requester], max_total: {amount: 5000}}\n", ""
        ),
        "policy.yaml",
    )
    assert stricter.grant_limits("issue_refund", ("big",)) is None
    assert refund(db, 150, policy=stricter).decision.effect.value == "require_approval"
    assert refund(db, 150).decision.grant_id == grant_id  # under the policy that grants, it still does


BUDGET = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: args.amount > 200, effect: require_approval, approval: {approvers: [role:lead]}}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval, approval: {approvers: [role:finance]}}
"""


def test_only_the_budget_s_approvers_extend_it_when_a_rule_asked_too(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from ._shared import open_store

    db = open_store(request, tmp_path, "sqlite", BUDGET)
    policy = parse_policy(BUDGET, "policy.yaml")
    spend(db, "1")
    asked = refund(db, 300, policy=policy)
    assert asked.decision.rule_ids == ("budget:session", "big") and asked.approval_id
    with pytest.raises(GrantRejected, match="only role:finance may extend the session budget"):
        _decisions.decide(db, asked.approval_id, approve=True, by=LEAD, extend=BudgetExtension(usd=5))
    assert _decisions.decide(db, asked.approval_id, approve=True, by=LEAD).status == "approved"  # the call alone
    finance = _decisions.Decider("user:fay", frozenset({"approver", "finance"}))
    alone = refund(db, 10, policy=policy)
    assert alone.decision.rule_ids == ("budget:session",) and alone.approval_id
    _decisions.decide(db, alone.approval_id, approve=True, by=finance, extend=BudgetExtension(usd=5))
    assert refund(db, 10, policy=policy).decision.effect.value == "allow"


def test_stores_opened_from_several_threads_at_once_all_open(pg_url: str) -> None:
    # Alembic's context is process-wide: two threads migrating at once hung until a timeout.
    opened: list[Database] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(Database(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not failures and len(opened) == 6 and not any(t.is_alive() for t in threads)
    finally:
        for store in opened:
            store.close()


def test_a_budget_extension_stays_live_until_revoked(
    request: pytest.FixtureRequest, tmp_path: Path, clock: object
) -> None:
    from ._shared import open_store

    db = open_store(request, tmp_path, "sqlite", BUDGET)
    policy = parse_policy(BUDGET, "policy.yaml")
    spend(db, "1")
    asked = refund(db, 10, policy=policy)
    finance = _decisions.Decider("user:fay", frozenset({"approver", "finance"}))
    assert asked.approval_id is not None
    _decisions.decide(db, asked.approval_id, approve=True, by=finance, extend=BudgetExtension(usd=5))
    clock.advance(31 * 86_400)  # type: ignore[attr-defined]  # past the row's 30-day bound
    [extension] = grants.listing(db, live=True)
    assert extension.kind == "budget" and extension.status(10**18) == "live"  # before: "expired", yet counted
    assert refund(db, 10, policy=policy).decision.effect.value == "allow"  # and it still counts
    assert not grants.sweep(db)  # no grant.expired for it
    grants.revoke(db, extension.id, by="user:fay")
    assert refund(db, 10, policy=policy).decision.effect.value == "require_approval"


def test_a_constrained_argument_must_be_given_for_the_grant_to_cover(db: Database) -> None:
    # Before: a call leaving order_id out passed "same order_id", and the tool used its default.
    grant_id = granted(db, refund(db, 150), GrantRequest("session", "1h", same=("order_id",)))
    assert refund(db, 150).decision.grant_id == grant_id
    from ._shared import call

    assert call(db, {"amount": 150}).decision.effect.value == "require_approval"


def test_the_person_who_granted_gets_no_grant_for_calls_made_for_them(db: Database) -> None:
    grant_id = granted(db, refund(db, 150, requested_by="alice"), GrantRequest("agent", "1h"))  # lena grants
    assert refund(db, 150, requested_by="bob").decision.grant_id == grant_id
    assert refund(db, 150, requested_by="lena").decision.effect.value == "require_approval"


READS_GRANT_TO_BLOCK = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        approval: {grants: {scopes: [session], max_calls: 2}}
      - {id: granted-small, when: 'facts.grant_id != "" && args.amount > 400', effect: block}
"""


def test_calls_allowed_anyway_do_not_use_up_a_grant_a_rule_reads(db: Database) -> None:
    # Before: with a rule reading facts.grant_id, two $10 refunds used up a 2-call grant.
    policies.create(db, READS_GRANT_TO_BLOCK, source="policy.yaml", author="t")
    policy = parse_policy(READS_GRANT_TO_BLOCK, "policy.yaml")
    grant_id = granted(db, refund(db, 300, policy=policy), GrantRequest("session", "1h"))
    assert [refund(db, 10, policy=policy).decision.grant_id for _ in range(3)] == [None, None, None]
    assert refund(db, 300, policy=policy).decision.grant_id == grant_id
    assert grants.get(db, grant_id).calls_used == 1
