"""The policy side of grants, monitor rules and budgets that ask: what a file may say, located."""

from __future__ import annotations

from decimal import Decimal

import pytest

from clearance import PolicyError, parse_policy
from clearance.policy import Effect

GRANTING = """\
version: 1
tools:
  refund:
    params: {order_id: string, amount: number, quantity: integer}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval:
          grants: %s
"""


def problem(text: str) -> tuple[int | None, int | None, str, str | None]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    [p] = info.value.problems
    return p.line, p.column, p.message, p.rule_id


@pytest.mark.parametrize(
    ("grants", "column", "says"),
    [
        ("{scopes: [team]}", 28, "'team' is not a grant scope: write session, agent or requester"),
        ("{scopes: [session, '\u202eagent']}", 28, "is not a grant scope"),
        ("{scopes: []}", 28, "at least 1 item"),
        ("{max_duration: 31d}", 34, "a grant may last at most 30d"),
        ("{max_duration: 2592001}", 34, "a grant may last at most 30d"),
        ("{max_duration: 0}", 34, "a duration must be positive"),
        ("{max_duration: -1h}", 34, "'-1h' is not a duration"),
        ("{max_duration: 1y}", 34, "'1y' is not a duration"),
        ("{max_duration: true}", 34, "a duration must look like"),
        ("{max_calls: 0}", 31, "'max_calls' should be at least 1, not 0"),
        ("{max_calls: -3}", 31, "should be at least 1"),
        ("{max_calls: 1000001}", 31, "should be at most 1000000"),
        ("{max_calls: 1e30}", 31, "max_calls"),
        ("{max_calls: true}", 31, "a whole number"),
        ("{max_calls: 2.5}", 31, "'max_calls' should be a whole number, not the number 2.5"),
        ("{max_total: {amount: 5, quantity: 3}}", 31, "max_total names one numeric argument"),
        ("{max_total: {}}", 31, "max_total names one numeric argument"),
        ("{max_total: 5}", 31, "'max_total' should be a mapping"),
        ("{max_total: {amount: lots}}", 40, "'amount' should be a number, not the text 'lots'"),
        ("{max_total: {amount: .nan}}", 40, "should be a finite number"),
        ("{max_total: {amount: 'NaN'}}", 40, "should be a finite number"),
        ("{max_total: {amount: .inf}}", 40, "should be a finite number"),
        ("{max_total: {amount: 1e400}}", 40, "should be a finite number"),
        ("{max_total: {amount: '1e400'}}", 40, "should be at most 1000000000000000"),
        ("{max_total: {amount: 1e16}}", 40, "should be at most 1000000000000000"),
        ("{max_total: {amount: -1}}", 40, "should be more than 0"),
        ("{max_total: {amount: 0}}", 40, "should be more than 0"),
        ("{max_total: {amount: true}}", 40, "must be a number"),
        ("{max_total: {total: 5}}", 31, "limits the total of 'total', which is not a parameter of this tool"),
        ("{max_total: {'x y': 5}}", 31, "'x y' is not an argument name"),
        ("{bogus: 1}", 20, "unknown key 'bogus'"),
    ],
)
def test_bad_grant_limits_are_located(grants: str, column: int, says: str) -> None:
    line, col, message, rule = problem(GRANTING % grants)
    assert (line, col, rule) == (10, column, "big"), message
    assert says in message


def test_good_grant_limits_compile_to_what_they_say() -> None:
    policy = parse_policy(
        GRANTING % "{scopes: [session, agent], max_duration: 8h, max_calls: 20, max_total: {amount: 500}}"
    )
    limits = policy.grant_limits("refund", ("big",))
    assert limits is not None
    assert (limits.scopes, limits.max_duration, limits.max_calls) == (("session", "agent"), 8 * 3600, 20)
    assert limits.max_total == {"amount": Decimal(500)}
    default = parse_policy(GRANTING % "{}").grant_limits("refund", ("big",))
    assert default is not None and (default.scopes, default.max_duration, default.max_calls) == (
        ("session",),
        3600,
        None,
    )
    assert parse_policy(GRANTING % "{max_duration: 30d}").grant_limits("refund", ("big",)) is not None


def test_grants_only_apply_to_an_approval() -> None:
    text = (
        "version: 1\ntools:\n  t:\n    rules:\n      - id: r\n        effect: block\n        approval: {grants: {}}\n"
    )
    line, _, message, rule = problem(text)
    assert (line, rule) == (5, "r") and "'approval' settings only apply to effect require_approval" in message


TWO_ASKING = """\
version: 1
tools:
  refund:
    params: {order_id: string, amount: number, quantity: integer}
    rules:
      - id: wide
        when: args.amount > 100
        effect: require_approval
        approval:
          grants: {scopes: [session, agent, requester], max_duration: 8h, max_calls: 20, max_total: {amount: 500}}
      - id: narrow
        when: args.amount > 200
        effect: require_approval
        approval: {grants: {scopes: [agent, requester], max_duration: 1h, max_total: {amount: 300}}}
      - id: calls
        when: args.amount > 300
        effect: require_approval
        approval: {grants: {scopes: [requester, session], max_duration: 2h, max_calls: 5}}
      - id: none
        when: args.amount > 400
        effect: require_approval
      - id: quantity
        when: args.quantity > 10
        effect: require_approval
        approval: {grants: {scopes: [agent], max_total: {quantity: 30}}}
      - id: session-only
        when: args.quantity > 20
        effect: require_approval
        approval: {grants: {scopes: [session]}}
"""


def test_grant_limits_are_the_narrowest_of_the_rules_that_asked() -> None:
    policy = parse_policy(TWO_ASKING)
    d = policy.decide("refund", {"order_id": "A", "amount": 350, "quantity": 1}, {})
    assert d.effect is Effect.REQUIRE_APPROVAL and d.rule_ids == ("wide", "narrow", "calls")
    limits = policy.grant_limits("refund", d.rule_ids)
    assert limits is not None
    assert limits.scopes == ("requester",)  # the scopes all three allow
    assert limits.max_duration == 3600  # the shortest
    assert limits.max_calls == 5  # the fewest (a rule without a call limit does not widen it)
    assert limits.max_total == {"amount": Decimal(300)}  # the smallest total
    assert policy.grant_limits("refund", ("wide",)) == parse_policy(TWO_ASKING).grant_limits("refund", ("wide",))


def test_no_grant_when_any_rule_that_asked_allows_none() -> None:
    policy = parse_policy(TWO_ASKING)
    assert policy.grant_limits("refund", ("wide", "none")) is None
    assert policy.grant_limits("refund", ("none",)) is None
    assert policy.grant_limits("refund", ()) is None
    assert policy.grant_limits("refund", ("no-such-rule",)) is None
    assert policy.grant_limits("refund", ("budget:session",)) is None
    assert policy.grant_limits("other_tool", ("wide",)) is None  # the rule is not this tool's


def test_no_grant_when_the_rules_share_no_scope() -> None:
    """A grant has one scope; rules that allow none in common allow no grant (not one with no scope)."""
    policy = parse_policy(TWO_ASKING)
    assert policy.grant_limits("refund", ("narrow", "session-only")) is None


def test_no_grant_when_the_rules_limit_totals_of_different_arguments() -> None:
    """A grant counts one total: keeping one rule's would let the other's grow without its limit."""
    policy = parse_policy(TWO_ASKING)
    assert policy.grant_limits("refund", ("wide", "quantity")) is None


MONITORED = """\
version: 1
tools:
  refund:
    rules:
      - {id: m-block, when: args.amount > 100, effect: block, mode: monitor, reason: would block}
      - {id: m-ask, when: args.amount > 50, effect: require_approval, mode: monitor}
      - {id: m-allow, when: args.amount > 10, effect: allow, mode: monitor}
      - {id: m-error, when: args.missing > 1, effect: allow, mode: monitor, on_error: require_approval}
      - {id: real, when: args.amount > 1000, effect: require_approval}
"""


@pytest.mark.parametrize(
    ("amount", "effect", "would"),
    [
        (5, Effect.ALLOW, {"m-error": "require_approval"}),
        (20, Effect.ALLOW, {"m-error": "require_approval", "m-allow": "allow"}),
        (60, Effect.ALLOW, {"m-error": "require_approval", "m-allow": "allow", "m-ask": "require_approval"}),
        (
            150,
            Effect.ALLOW,
            {"m-error": "require_approval", "m-allow": "allow", "m-ask": "require_approval", "m-block": "block"},
        ),
        (
            2000,
            Effect.REQUIRE_APPROVAL,
            {"m-error": "require_approval", "m-allow": "allow", "m-ask": "require_approval", "m-block": "block"},
        ),
    ],
)
def test_monitor_rules_are_recorded_never_enforced(amount: int, effect: Effect, would: dict[str, str]) -> None:
    d = parse_policy(MONITORED).decide("refund", {"amount": amount}, {})
    assert d.effect is effect
    assert {m.rule_id: m.effect.value for m in d.monitored} == would
    assert not {m.rule_id for m in d.monitored} & set(d.rule_ids)  # a monitor rule never decides
    reasons = {m.rule_id: m.reason for m in d.monitored}
    if "m-block" in reasons:
        assert reasons["m-block"] == "would block"
    assert "could not be evaluated" in reasons["m-error"]  # it errored; it did not match


def test_a_monitor_rule_needs_a_known_mode() -> None:
    for mode in ("shadow", "MONITOR", "''", "true"):
        line, column, message, rule = problem(
            f"version: 1\ntools:\n  t:\n    rules:\n      - {{id: r, effect: block, mode: {mode}}}\n"
        )
        assert (line, column, rule) == (5, 38, "r") and "'mode' should be 'enforce' or 'monitor'" in message


BUDGET = "version: 1\nbudgets:\n  session: {max_cost_usd: 5, on_exceed: %s}\n"


def test_budget_on_exceed_values() -> None:
    assert parse_policy(BUDGET % "block").budget_state({"session_cost_usd": 5.0}) == (
        "session",
        "block",
        "session budget exhausted: $5.0000 spent, limit $5",
    )
    asks = parse_policy(BUDGET % "require_approval, approval: {approvers: [role:finance]}")
    assert asks.budget_approval("session").approvers == ("role:finance",)
    assert {s.name for s in asks.budget_facts()} == {
        "session_cost_usd",
        "session_tokens",
        "session_budget_extension_usd",
        "session_budget_extension_tokens",
    }
    assert asks.budget_state({"session_cost_usd": 5.0, "session_budget_extension_usd": 1.0}) is None
    d = asks.decide("anything", {}, {"session_cost_usd": 6.0, "session_budget_extension_usd": 1.0})
    assert (d.effect, d.budget, d.rule_ids) == (Effect.REQUIRE_APPROVAL, "session", ("budget:session",))
    assert d.approval is not None and d.approval.approvers == ("role:finance",)
    for bad in ("ask", "deny", "''", "true"):
        line, column, message, _ = problem(BUDGET % bad)
        assert (line, column) == (3, 41) and "'on_exceed' should be 'block' or 'require_approval'" in message


def test_budget_approval_only_when_it_asks_and_never_grants() -> None:
    line, _, message, _ = problem(BUDGET % "block, approval: {approvers: [role:x]}")
    assert line == 3 and "'approval' settings only apply with on_exceed: require_approval" in message
    line, _, message, _ = problem(BUDGET % "require_approval, approval: {grants: {max_calls: 1}}")
    assert line == 3 and "a budget's approval extends the budget; 'grants' apply to rules" in message
    agent = "version: 1\nbudgets:\n  agent: {max_tokens: 5, window: 1h, approval: {approvers: [role:x]}}\n"
    line, _, message, _ = problem(agent)
    assert line == 3 and "only apply with on_exceed: require_approval" in message
