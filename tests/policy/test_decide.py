from __future__ import annotations

import pytest

from clearance import Effect, parse_policy
from clearance.policy import Policy

ORDERED = """
version: 1
default: allow
tools:
  t:
    rules:
      - {id: a, when: 'args.x > 1', effect: allow, reason: fine}
      - {id: b, when: 'args.x > 2', effect: require_approval, reason: check}
      - {id: c, when: 'args.x > 3', effect: block, reason: too much}
"""


def policy(text: str) -> Policy:
    return parse_policy(text.strip() + "\n")


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_most_restrictive_wins_whatever_the_order(order: tuple[int, int, int]) -> None:
    lines = ORDERED.strip().splitlines()
    head, rules = lines[:5], lines[5:]
    p = policy("\n".join(head + [rules[i] for i in order]))
    d = p.decide("t", {"x": 5}, {})
    assert (d.effect, d.reason, d.rule_ids) == (Effect.BLOCK, "too much", ("c",))
    d = p.decide("t", {"x": 3}, {})
    assert (d.effect, d.rule_ids) == (Effect.REQUIRE_APPROVAL, ("b",))
    assert d.approval is not None and d.approval.timeout == 3600 and d.approval.on_timeout == "deny"
    assert p.decide("t", {"x": 2}, {}).reason == "fine"


def test_defaults_tool_over_glob_over_global() -> None:
    p = policy("""
version: 1
default: require_approval
tools:
  db.read: {default: allow}
  "db.*": {default: block}
  "*.delete": {default: require_approval}
""")
    assert p.decide("db.read", {}, {}).effect is Effect.ALLOW
    d = p.decide("db.write", {}, {})
    assert d.effect is Effect.BLOCK and d.reason == "no rule matched; default of 'db.*' is block"
    assert p.decide("db.delete", {}, {}).effect is Effect.BLOCK  # most restrictive glob default
    d = p.decide("email", {}, {})
    assert d.effect is Effect.REQUIRE_APPROVAL and d.reason == "no rule matched; global default is require_approval"


def test_rules_from_every_matching_glob_count() -> None:
    p = policy("""
version: 1
tools:
  pay: {rules: [{id: small, when: 'args.amount < 10', effect: allow}]}
  "p*": {rules: [{id: weekend, when: 'args.day == "sat"', effect: block}]}
""")
    d = p.decide("pay", {"amount": 5, "day": "sat"}, {})
    assert d.effect is Effect.BLOCK and d.rule_ids == ("weekend",)


def test_rule_without_condition_always_matches() -> None:
    p = policy("version: 1\ntools:\n  t: {rules: [{id: always, effect: require_approval}]}\n")
    assert p.decide("t", {}, {}).rule_ids == ("always",)


def test_a_condition_error_applies_on_error_and_says_why() -> None:
    p = policy("""
version: 1
tools:
  t:
    rules:
      - {id: strict, when: 'args.amount > 100', effect: require_approval}
      - {id: lenient, when: 'args.missing == 1', effect: block, on_error: allow}
""")
    d = p.decide("t", {}, {})
    assert d.effect is Effect.BLOCK
    assert d.reason == "rule 'strict' could not be evaluated (Key not found in map : \"amount\"); its on_error is block"
    assert d.errors == ('strict: Key not found in map : "amount"', 'lenient: Key not found in map : "missing"')
    d = p.decide("t", {"amount": "lots"}, {})
    assert d.effect is Effect.BLOCK and "No matching overloads" in d.errors[0]
    assert p.decide("t", {"amount": 5, "missing": 2}, {}).effect is Effect.ALLOW


def test_non_boolean_result_is_an_error() -> None:
    p = policy("version: 1\ntools:\n  t: {rules: [{id: r, when: 'args.flag', effect: allow}]}\n")
    d = p.decide("t", {"flag": "yes"}, {})
    assert d.effect is Effect.BLOCK and "not true or false" in d.errors[0]
    assert p.decide("t", {"flag": True}, {}).effect is Effect.ALLOW


def test_numbers_add_and_compare_across_int_and_float() -> None:
    p = policy(
        "version: 1\ntools:\n  t:\n"
        "    rules: [{id: cap, when: 'facts.sum_24h_amount + args.amount > 1000', effect: block}]\n"
    )
    assert p.decide("t", {"amount": 500}, {"sum_24h_amount": 600.5}).effect is Effect.BLOCK
    assert p.decide("t", {"amount": 399.5}, {"sum_24h_amount": 600}).effect is Effect.ALLOW
    # Integers beyond 2**53 (ids) stay exact integers.
    big = policy("version: 1\ntools:\n  t: {rules: [{id: id, when: 'args.id == 9007199254740995', effect: block}]}\n")
    assert big.decide("t", {"id": 9007199254740995}, {}).effect is Effect.BLOCK
    assert big.decide("t", {"id": 9007199254740997}, {}).effect is Effect.ALLOW


def test_budgets_block_the_next_call() -> None:
    p = policy("""
version: 1
budgets:
  session: {max_cost_usd: 5, max_tokens: 1000}
  agent: {max_cost_usd: 50, window: 1h}
""")
    facts = {"session_cost_usd": 4.99, "session_tokens": 10, "agent_cost_usd_3600s": 0, "agent_tokens_3600s": 0}
    assert p.decide("t", {}, facts).effect is Effect.ALLOW
    d = p.decide("t", {}, {**facts, "session_cost_usd": 5.0})
    assert d.effect is Effect.BLOCK and d.rule_ids == ("budget:session",)
    assert d.reason == "session budget exhausted: $5.0000 spent, limit $5"
    d = p.decide("t", {}, {**facts, "session_tokens": 1000})
    assert d.reason == "session budget exhausted: 1000 tokens used, limit 1000"
    d = p.decide("t", {}, {**facts, "agent_cost_usd_3600s": 51})
    assert d.reason == "agent budget exhausted: $51.0000 spent in the last 1h, limit $50"
    assert {s.name for s in p.plan("anything").facts} == set(facts)


def test_plans_ask_only_for_the_facts_they_use() -> None:
    p = policy("""
version: 1
tools:
  refund: {rules: [{id: cap, when: 'facts.sum_24h_amount > 1 || facts.calls_10m > 3', effect: block}]}
  other: {rules: [{id: r, when: 'args.x > 1', effect: block}]}
""")
    assert [(s.kind, s.window_seconds, s.arg) for s in p.plan("refund").facts] == [
        ("calls", 600, ""),
        ("sum", 86400, "amount"),
    ]
    assert p.plan("other").facts == ()


def test_redaction_pointers_resolve_by_glob() -> None:
    p = policy("version: 1\nredact:\n  'pay*': [/card]\n  payment: [/cvv]\n")
    assert sorted(p.plan("payment").redact) == ["/card", "/cvv"]
    assert p.plan("email").redact == ()
