"""`params` that constrain values: validated at load time, checked before the rules on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import clearance
from clearance import PolicyError, ToolCallBlocked
from clearance._guard._governor import Governor
from clearance.policy import Effect, parse_policy

POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    params:
      order_id: {type: string, required: true, pattern: '^A-[0-9]+$', max_length: 20}
      amount: {type: number, required: true, minimum: 0.01, maximum: 5000}
      currency: {type: string, enum: [USD, EUR]}
      notify: {type: string, format: email}
      count: {type: integer, minimum: 1}
      tags: {type: list, max_length: 3}
      reason: string
      memo: {type: string, nullable: true, max_length: 10}
      word: {type: string, pattern: '^\\w+$'}
      code: {type: string, pattern: '^[]$]+$'}
      slow: {type: string, pattern: '^(a|a)*$'}
    rules:
      - {id: big, when: 'args.amount > 200.0', effect: require_approval}
  lookup:
    params: {q: string}
    additional: allow
"""


@pytest.fixture(scope="module")
def policy() -> Any:
    return parse_policy(POLICY)


def decide(policy: Any, args: dict[str, Any], tool: str = "issue_refund") -> Any:
    return policy.decide(tool, args, {})


@pytest.mark.parametrize(
    "args, reason",
    [
        ({"order_id": "A-1"}, "args.amount is required"),
        ({"order_id": "A-1", "amount": -5000}, "args.amount is -5000, below the minimum 0.01"),
        ({"order_id": "A-1", "amount": 0}, "below the minimum 0.01"),
        ({"order_id": "A-1", "amount": 0.009}, "below the minimum 0.01"),
        ({"order_id": "A-1", "amount": 5000.000001}, "above the maximum 5000"),
        ({"order_id": "A-1", "amount": "50"}, "args.amount must be a number, not a string"),
        ({"order_id": "A-1", "amount": True}, "args.amount must be a number, not true/false"),
        ({"order_id": "B-1", "amount": 5}, "args.order_id does not match the pattern ^A-[0-9]+$"),
        ({"order_id": "A-1\n", "amount": 5}, "does not match the pattern"),
        ({"order_id": "A-" + "1" * 30, "amount": 5}, "has 32 characters, more than the maximum 20"),
        ({"order_id": "A-1", "amount": 5, "currency": "usd"}, "args.currency is 'usd', not one of 'USD', 'EUR'"),
        ({"order_id": "A-1", "amount": 5, "notify": "Bob <bob@acme.com>"}, "is not one plain email address"),
        ({"order_id": "A-1", "amount": 5, "notify": "a@acme.com, eve@evil.io"}, "is not one plain email address"),
        ({"order_id": "A-1", "amount": 5, "count": 1.5}, "args.count must be a whole number"),
        ({"order_id": "A-1", "amount": 5, "count": 0}, "below the minimum 1"),
        ({"order_id": "A-1", "amount": 5, "tags": [1, 2, 3, 4]}, "has 4 items, more than the maximum 3"),
        ({"order_id": None, "amount": 5}, "args.order_id must be a string, not null"),
        ({"order_id": "A-1", "amount": 5, "Amount": 5}, "args.Amount is not a declared argument"),
        ({"order_id": "A-1", "amount": 5, "reason": None}, "args.reason must be a string, not null"),
        ({"order_id": "A-1", "amount": 5, "memo": "x" * 11}, "more than the maximum 10"),
        ({"order_id": "A-1", "amount": 5, "word": "p\u0430ypal"}, "does not match the pattern ^\\w+$"),
        ({"order_id": "A-1", "amount": 5, "word": "\u0661\u0662"}, "does not match the pattern"),
        ({"order_id": "A-1", "amount": 5, "code": "]x"}, "does not match the pattern ^[]$]+$"),
        ({"order_id": "A-1", "amount": 5, "notify": "bob@acme.com\n"}, "is not one plain email address"),
        ({"order_id": "A-1", "amount": 5, "notify": "bob\n@acme.com"}, "is not one plain email address"),
        (
            {"order_id": "A-1", "amount": 5, "slow": "a" * 40 + "!"},
            "within 50 ms (the pattern backtracks",
        ),  # 2**40 paths
    ],
)
def test_a_call_that_does_not_fit_its_params_is_blocked_before_the_rules(
    policy: Any, args: dict[str, Any], reason: str
) -> None:
    d = decide(policy, args)
    assert d.effect is Effect.BLOCK and reason in d.reason, d.reason
    assert all(r.startswith("params:") for r in d.rule_ids)


@pytest.mark.parametrize(
    "args",
    [
        {"order_id": "A-1", "amount": 0.01},
        {"order_id": "A-1", "amount": 150, "currency": "EUR", "count": 2.0, "tags": ["x"]},
        {"order_id": "A-12", "amount": 12.5, "notify": "bob@acme.com", "reason": "damaged"},
        {"order_id": "A-12", "amount": 12.5, "memo": None},  # nullable: a null is not given
        {"order_id": "A-12", "amount": 12.5, "word": "paypal", "code": "]$]"},
    ],
)
def test_a_call_that_fits_is_decided_by_the_rules(policy: Any, args: dict[str, Any]) -> None:
    assert decide(policy, args).effect is Effect.ALLOW


def test_the_rules_still_decide_after_the_params(policy: Any) -> None:
    d = decide(policy, {"order_id": "A-1", "amount": 300})
    assert d.effect is Effect.REQUIRE_APPROVAL and d.rule_ids == ("big",)


def test_additional_allow_lets_undeclared_arguments_through(policy: Any) -> None:
    assert decide(policy, {"q": "x", "page": 2}, "lookup").effect is Effect.ALLOW
    assert decide(policy, {"q": 1}, "lookup").effect is Effect.BLOCK


@pytest.mark.parametrize(
    "params, column, message",
    [
        ("{amount: {type: number, minimum: 10, maximum: 1}}", 22, "minimum 10 is above maximum 1"),
        ("{q: {type: string, pattern: '('}}", 41, "is not a regular expression"),
        ("{q: {type: string, minimum: 1}}", 17, "minimum and maximum apply to numbers, not to a string"),
        ("{q: {type: number, format: email}}", 17, "pattern and format apply to strings"),
        ("{q: {type: string, format: uri}}", 40, "'format'"),
        ("{q: {type: string, maxlength: 3}}", 32, "unknown key 'maxlength'; did you mean 'max_length'?"),
        ("{q: {type: text}}", 24, "'type'"),
        ("{q: {type: number, minimum: yes}}", 41, "'minimum' should be a number, not the text 'yes'"),
    ],
)
def test_malformed_params_are_reported_at_their_line_and_column(params: str, column: int, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(f"version: 1\ntools:\n  t:\n    params: {params}\n")
    [problem] = raised.value.problems
    assert message in problem.message, problem
    assert (problem.line, problem.column) == (4, column)


def test_additional_without_params_is_an_error() -> None:
    with pytest.raises(PolicyError, match="declare the tool's 'params' too"):
        parse_policy("version: 1\ntools:\n  t:\n    additional: allow\n")


CAPPED = """\
version: 1
default: allow
tools:
  issue_refund:
    params: {order_id: string, amount: {type: number, minimum: 0.01}}
    rules:
      - id: refund-daily-cap
        when: facts.sum_24h_amount + args.amount > 1000.0
        effect: block
        reason: daily refund cap
"""


def _refunds(configure: Callable[..., Governor], policy: str) -> list[float]:
    """The issue's attack on a daily cap of 1,000: a refund of -5000, then six of 199."""
    configure(policy)
    refunded: list[float] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None:
        refunded.append(amount)

    for i, amount in enumerate([-5000, *[199] * 6]):
        try:
            issue_refund(f"A-{i}", amount)
        except ToolCallBlocked:
            pass
    return refunded


def test_without_a_minimum_a_negative_refund_defeats_the_daily_cap(configure: Callable[..., Governor]) -> None:
    """Why docs/quickstart.md's example declares `minimum: 0.01`: the sum counts the negative refund."""
    refunded = _refunds(configure, CAPPED.replace("{type: number, minimum: 0.01}", "number"))
    assert refunded == [-5000, *[199] * 6] and sum(r for r in refunded if r > 0) == 1194


def test_a_negative_refund_cannot_defeat_the_daily_cap(configure: Callable[..., Governor]) -> None:
    """The issue's attack: -5000, then six of 199 (1,194 refunded against a cap of 1,000)."""
    configure(CAPPED)
    refunded: list[float] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None:
        refunded.append(amount)

    with pytest.raises(ToolCallBlocked, match="args.amount is -5000, below the minimum 0.01"):
        issue_refund("A-0", -5000)
    outcomes = []
    for i in range(6):
        try:
            issue_refund(f"A-{i + 1}", 199)
            outcomes.append("ran")
        except ToolCallBlocked as exc:
            outcomes.append(exc.reason)
    assert outcomes == ["ran"] * 5 + ["daily refund cap"]
    assert sum(refunded) == 995 <= 1000


def test_tool_names_in_a_policy_are_compared_folded() -> None:
    p = parse_policy("version: 1\ntools:\n  Send_Email:\n    default: block\n  'DB.*':\n    default: block\n")
    assert p.decide("send_email", {}, {}).effect is Effect.BLOCK
    assert p.decide("SEND_EMAIL", {}, {}).effect is Effect.BLOCK
    assert p.decide("send-email", {}, {}).effect is Effect.BLOCK
    assert p.decide("Send Email", {}, {}).effect is Effect.BLOCK
    assert p.decide("db.drop", {}, {}).effect is Effect.BLOCK


@pytest.mark.parametrize(
    "tools, message",
    [
        ("  send_email: {}\n  Send_Email: {}\n", "name the same tool"),
        ("  send_email: {}\n  send-email: {}\n", "name the same tool"),
        ("  'send email ': {}\n", "is not a tool name or glob"),
        ("  'send\u200bemail': {}\n", "is not a tool name or glob"),
        ("  'séndmail': {}\n", "is not a tool name or glob"),
    ],
)
def test_a_tool_name_the_boundary_would_refuse_is_a_policy_error(tools: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(f"version: 1\ntools:\n{tools}")


def test_declared_params_must_name_the_guarded_functions_parameters(configure: Callable[..., Governor]) -> None:
    configure("version: 1\ntools:\n  refund:\n    params: {order_id: string, amount: number, memo: string}\n")

    def refund(order_id: str, amount: float, card: str | None = None) -> None:
        pass

    with pytest.raises(PolicyError) as raised:
        clearance.guard_tool("refund", refund)
    messages = [p.message for p in raised.value.problems]
    assert any("does not declare 'card', a parameter of the function" in m for m in messages)
    assert any("declares 'memo', which the function does not take" in m for m in messages)
