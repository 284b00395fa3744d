from __future__ import annotations

import pytest

from clearance import Effect, parse_policy
from clearance.policy import _functions as fn


@pytest.mark.parametrize(
    "value, expected",
    [
        ("bob@acme.com", ["acme.com"]),
        ("  Bob@ACME.Com  ", ["acme.com"]),
        ("Bob Smith <bob@Acme.com>", ["acme.com"]),
        ('"Smith, Bob" <bob@acme.com>', ["acme.com"]),
        ("a@acme.com, b@evil.com", ["acme.com", "evil.com"]),
        (["a@acme.com", "Eve <e@Evil.com.>"], ["acme.com", "evil.com"]),
        # An unterminated display form yields both addresses, so an allow-list check still fails.
        ("attacker@evil.com <victim@acme.com", ["evil.com", "acme.com"]),
    ],
)
def test_domains_normalise(value: object, expected: list[str]) -> None:
    assert fn.domains(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "not-an-address",
        '"bob@acme.com"@evil.com',
        "bob@acme.com@evil.com",
        "bob@",
        "@acme.com",
        [1],
    ],
)
def test_domains_refuse_what_they_cannot_read(value: object) -> None:
    with pytest.raises(ValueError):
        fn.domains(value)  # type: ignore[arg-type]


def test_domain_needs_exactly_one_recipient() -> None:
    assert fn.domain("Bob <BOB@acme.com>") == "acme.com"
    with pytest.raises(ValueError, match="use domains"):
        fn.domain("a@acme.com, b@evil.com")


def test_membership_ignores_case_and_spaces() -> None:
    assert fn.all_in(["ACME.com ", "acme.com"], ["acme.com"])
    assert not fn.all_in([], ["acme.com"])
    assert fn.any_in("Gold", ["gold", "platinum"])
    assert fn.all_in([1, 2.0], [1, 2])


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("200.00", 200, 0),
        ("200.01", "200", 1),
        ("0.1", 0.1, 0),
        ("-5", "3", -1),
        ("1e3", 999, 1),
    ],
)
def test_decimal_comparison_is_exact(a: object, b: object, expected: int) -> None:
    assert fn.dec_cmp(a, b) == expected


def test_decimal_refuses_non_numbers() -> None:
    for bad in ("abc", "1,000", "", True, "NaN"):
        with pytest.raises(ValueError):
            fn.to_decimal(bad)


def test_helpers_inside_conditions_fail_closed() -> None:
    p = parse_policy("""
version: 1
tools:
  send_email:
    rules:
      - {id: external, when: '!all_in(domains(args.to), ["acme.com"])', effect: require_approval}
  refund:
    rules:
      - {id: big, when: 'dec_gt(args.amount, "200.00")', effect: block}
      - {id: num, when: 'num(args.amount) > 1000.0', effect: block}
""")

    def decide(tool: str, **args: object) -> Effect:
        return p.decide(tool, args, {}).effect

    assert decide("send_email", to="Bob <BOB@acme.com>") is Effect.ALLOW
    assert decide("send_email", to=["a@acme.com", "x@evil.com"]) is Effect.REQUIRE_APPROVAL
    assert decide("send_email", to="a@acme.com, x@evil.com") is Effect.REQUIRE_APPROVAL
    d = p.decide("send_email", {"to": '"a@acme.com"@evil.com'}, {})
    assert d.effect is Effect.BLOCK and "is not a plain email address" in d.errors[0]
    assert decide("refund", amount="200.00") is Effect.ALLOW
    assert decide("refund", amount="200.01") is Effect.BLOCK
    assert decide("refund", amount=150) is Effect.ALLOW
    d = p.decide("refund", {"amount": "two hundred"}, {})
    assert d.effect is Effect.BLOCK and "'two hundred' is not a decimal number" in d.errors[0]
