"""Which arguments a rule's condition reads: what the inbox shows first, as what is at stake."""

from __future__ import annotations

import pytest

from clearance.policy import _compile, parse_policy
from clearance.policy._cel import arg_names


@pytest.mark.parametrize(
    "expression, names",
    [
        ("args.amount > 200", ["amount"]),
        ('has(args.x) && args["y z"] == 1 && args.to != ""', ["x", "y z", "to"]),
        ("args['q'] + args.amount > args.q", ["q", "amount"]),  # each once, in order of appearance
        ('!all_in(domains(args.to), ["acme.com"])', ["to"]),
        ("args . spaced == 1", ["spaced"]),
        ("args.items.exists(i, i.price > 100)", ["items"]),
        ('"args.quoted" == args.real', ["real"]),  # text inside a string literal is no reference
        ('"""args.x """ == args.y && r"args.z" != \'args.w\'', ["y"]),
        ("x.args.y > 1", []),  # a field `args` of something else
        ('args["a\\"b"] == 1', []),  # an escaped name is not read exactly: left out, never guessed
        ('args[r"raw\\n"] == 1', ["raw\\n"]),
        ("facts.session_calls > 3", []),
    ],
)
def test_the_arguments_a_condition_reads(expression: str, names: list[str]) -> None:
    assert arg_names(expression) == names


POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: cap, when: 'facts.sum_24h_amount + args.amount > 1000', effect: require_approval}
      - {id: currency, when: 'args.currency != "USD" && args["order id"] != ""', effect: require_approval}
      - {id: always, effect: require_approval}
  "issue_*":
    rules:
      - {id: eu, when: 'args.region == "eu"', effect: require_approval}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval}
"""


def test_a_revision_says_what_the_rules_that_asked_read_in_their_order() -> None:
    policy = parse_policy(POLICY)
    asked = ("currency", "cap", "eu", "always")
    assert policy.reads("issue_refund", asked) == ("currency", "order id", "amount", "region")
    assert policy.reads("issue_refund", ("cap",)) == ("amount",)  # a summed argument too, once
    assert policy.reads("issue_refund", ("always",)) == ()  # no condition reads nothing
    assert policy.reads("issue_refund", ("budget:session",)) == ()  # a budget reads no argument
    assert policy.reads("issue_refund", ("gone",)) == ()
    assert policy.reads("issue_other", ("eu",)) == ("region",)  # a glob's rule


def test_per_tool_caches_stay_bounded_whatever_tool_names_agents_send() -> None:
    policy = parse_policy(
        "version: 1\ntools:\n  '*':\n    rules:\n      - {id: big, when: 'args.amount > 1', effect: require_approval}\n"
    )
    for i in range(_compile._KEEP * 2 + 5):
        assert policy.plan(f"tool_{i}").tool == f"tool_{i}"
        assert policy.reads(f"tool_{i}", ("big",)) == ("amount",)
    assert len(policy._plans) <= _compile._KEEP and len(policy._reads) <= _compile._KEEP
