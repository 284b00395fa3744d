"""Helper functions for conditions, in plain Python; `_cel` declares them to the engine.

They fail closed: an input they cannot read unambiguously raises, so the rule's `on_error`
(block by default) applies instead of a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from email.utils import getaddresses
from typing import Any

_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def domains(recipients: str | list[Any]) -> list[str]:
    """The normalised domain of every recipient.

    Accepts one address, a comma-separated list, display-name forms (`Bob <bob@acme.com>`) and
    lists of any of those. Case, surrounding spaces and a trailing dot do not matter.

    Raises:
        ValueError: When any recipient is not a plain address, or the input hides an extra `@`.
    """
    texts = [recipients] if isinstance(recipients, str) else recipients
    found: list[str] = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"a recipient must be a string, not {type(text).__name__}")
        parsed = [addr for _, addr in getaddresses([text]) if addr]
        if not parsed:
            raise ValueError(f"{text!r} holds no email address")
        # getaddresses can drop parts it does not understand; every '@' must be accounted for.
        if text.count("@") != sum(addr.count("@") for addr in parsed):
            raise ValueError(f"{text!r} is not a list of plain email addresses")
        for addr in parsed:
            local, sep, domain = addr.strip().rpartition("@")
            domain = domain.strip().rstrip(".").lower()
            if not sep or not local or "@" in local or not _DOMAIN.match(domain):
                raise ValueError(f"{addr!r} is not a plain email address")
            found.append(domain)
    return found


def domain(recipient: str | list[Any]) -> str:
    """The normalised domain of exactly one recipient.

    Raises:
        ValueError: When there is not exactly one recipient; use `domains()` for lists.
    """
    found = domains(recipient)
    if len(found) != 1:
        raise ValueError(f"domain() needs one recipient, got {len(found)}; use domains()")
    return found[0]


# The local part of a plain address (RFC 5322 dot-atom): also the e-mail channel's check.
EMAIL_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def is_plain_email(value: str) -> bool:
    """Whether `value` is exactly one plain ASCII address, `name@domain`, with nothing around it."""
    local, sep, domain = value.rpartition("@")
    if not sep or len(value) > 254 or len(local) > 64:
        return False
    plain_domain = _DOMAIN.fullmatch(domain.lower()) is not None and "." in domain
    return EMAIL_LOCAL_PART.fullmatch(local) is not None and plain_domain


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return to_decimal(value)
    return value


def all_in(values: Any, allowed: list[Any]) -> bool:
    """Whether every value (one value or a list) is in `allowed`, ignoring case and spaces."""
    items = values if isinstance(values, list) else [values]
    pool = {_norm(a) for a in allowed}
    return bool(items) and all(_norm(v) in pool for v in items)


def any_in(values: Any, candidates: list[Any]) -> bool:
    """Whether any value (one value or a list) is in `candidates`, ignoring case and spaces."""
    items = values if isinstance(values, list) else [values]
    pool = {_norm(c) for c in candidates}
    return any(_norm(v) in pool for v in items)


def to_decimal(value: Any) -> Decimal:
    """An exact decimal from a decimal string, an int or a float (by its shortest repr).

    Raises:
        ValueError: When the value is not a number.
    """
    if isinstance(value, bool):
        raise ValueError("true/false is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            pass
    raise ValueError(f"{value!r} is not a decimal number")


def dec_cmp(a: Any, b: Any) -> int:
    """-1, 0 or 1 as `a` is less than, equal to or greater than `b`, compared exactly."""
    x, y = to_decimal(a), to_decimal(b)
    return (x > y) - (x < y)


def num(value: Any) -> float:
    """A number (double) from a decimal string, an int or a float."""
    return float(to_decimal(value))


# name -> (implementation, return kind, argument kinds per overload). Kinds: string, int,
# double, list, number (string|int|double, expanded per overload), any (string|list).
COMPARISONS: dict[str, Callable[[int], bool]] = {
    "dec_gt": lambda c: c > 0,
    "dec_ge": lambda c: c >= 0,
    "dec_lt": lambda c: c < 0,
    "dec_le": lambda c: c <= 0,
    "dec_eq": lambda c: c == 0,
}
