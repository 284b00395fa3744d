"""What an approver may grant beyond the call they approve, checked against the rule.

`GrantRequest` lets similar calls through (`approval.grants` on the rule bounds it);
`BudgetExtension` adds to a session's or agent's exhausted budget (on an approval the budget
asked for). `grant_row` checks either against the approval and the policy revision that put
it to approval, and returns the columns to store; every problem is one line of `GrantRejected`.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ._canonical import canonical_json
from ._store import Approval
from ._store import _grants as grants
from .errors import GrantRejected
from .policy import Policy
from .policy._model import GRANT_SCOPES, MAX_GRANT_CALLS, MAX_GRANT_SECONDS, GrantLimits, parse_duration

MAX_EXTENSION_USD = Decimal(1_000_000)
MAX_CONSTRAINTS_CHARS = 16 * 1024  # a grant's constraints as stored; read once per grant by every covered call
MAX_EXTENSION_TOKENS = 10**12
_BUDGET_EXTENSION_SECONDS = MAX_GRANT_SECONDS  # a budget extension is revocable; this bounds the row
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# A number written as text: ASCII digits only (Decimal alone also takes "1_000" and other scripts' digits).
_PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NANO_USD = Decimal("1e-9")  # budgets count in billionths of a dollar
_NUMERIC = ("number", "integer", "any")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 50
_SHORT.maxlevel = 2


def _short(value: Any) -> str:
    """A value as a refusal shows it: its repr (escapes, so no RTL override or lone surrogate), cut short."""
    return _SHORT.repr(value)


def _label(name: Any) -> str:
    """An argument name in a problem's path: as written when it is a plain name, else escaped."""
    return name if isinstance(name, str) and _ARG_NAME.fullmatch(name) else _short(name)


def _amount_text(number: Decimal) -> str:
    text = str(number)
    return text if len(text) <= 40 else f"{number:.3E}"


@dataclass(frozen=True)
class GrantRequest:
    """Similar calls an approver lets through with their approval.

    Attributes:
        scope: `session` (this session), `agent` (this agent) or `requester` (the person the
            agent acts for).
        duration: How long, in seconds or as `30m`, `8h`.
        max_calls: At most this many calls (default: the rule's limit, if it has one).
        max_total: The running total of one numeric argument may reach this, like
            `{"amount": 500}` (default: the rule's limit, if it has one).
        constraints: Argument constraints in the policy's `params` syntax
            (`{"amount": {"maximum": 150}}`).
        same: Arguments that must equal the approved call's (`["order_id"]`).
    """

    scope: str
    duration: int | str
    max_calls: int | None = None
    max_total: Mapping[str, Any] | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    same: tuple[str, ...] = ()


@dataclass(frozen=True)
class BudgetExtension:
    """More budget for the session (or agent) whose exhausted budget asked for this approval."""

    usd: Any = None
    tokens: Any = None


def _number(value: Any, what: str, problems: list[str]) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        problems.append(f"{what}: {_short(value)} is not a number")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{what}: {_short(value)} is not a finite number")
        return None
    if isinstance(value, str) and not _PLAIN_NUMBER.fullmatch(value):
        special = value.strip().lower().lstrip("+-") in ("nan", "snan", "inf", "infinity")
        problems.append(f"{what}: {_short(value)} is not a {'finite ' if special else ''}number")
        return None
    try:
        number = Decimal(value if isinstance(value, Decimal) else str(value))
    except (InvalidOperation, ValueError):  # ValueError: an int of more digits than str() writes
        problems.append(f"{what}: {_short(value)} is not a number")
        return None
    if not number.is_finite():
        problems.append(f"{what}: {_short(value)} is not a finite number")
        return None
    return number


def grant_row(
    a: Approval,
    policy: Policy | None,
    request: GrantRequest,
    *,
    by: str,
    note: str | None,
    at: int,
    args: Mapping[str, Any],
) -> dict[str, Any]:
    """The columns of the grant `request` asks for on approval `a`, or GrantRejected.

    `policy` is the revision that put `a` to approval; `args` the arguments that will run (an
    approver's edit included), which `same` refers to.

    Raises:
        GrantRejected: The request is wider than the rule permits, or malformed.
    """
    if any(r.startswith("budget:") for r in a.rule_ids):
        raise GrantRejected(a.id, a.tool, ["an exhausted budget asked for this approval: extend the budget instead"])
    limits = policy.grant_limits(a.tool, a.rule_ids) if policy is not None else None
    if limits is None:
        which = ", ".join(a.rule_ids) or "the rule"
        raise GrantRejected(a.id, a.tool, [f"{which} allows no grants (its approval has no 'grants' settings)"])
    problems: list[str] = []
    row: dict[str, Any] = {
        "id": grants.new_grant_id(),
        "kind": "calls",
        "scope": request.scope,
        "agent": a.agent,
        "environment": a.environment,
        "tool": a.tool,
        "rule_ids": canonical_json(list(a.rule_ids)),
        "approval_id": a.id,
        "policy_revision": a.policy_revision,
        "granted_by": by,
        "note": note,
        "created_at_us": at,
    }
    declared = policy.plan(a.tool).params if policy is not None else None
    _scope(a, request.scope, limits, row, problems)
    _duration(request.duration, limits, at, row, problems)
    _calls(request.max_calls, limits, row, problems)
    _total(request.max_total, limits, declared, row, problems)
    row["constraints_json"] = _constraints(request, declared, args, problems)
    if problems:
        raise GrantRejected(a.id, a.tool, problems)
    return row


def _scope(a: Approval, scope: Any, limits: GrantLimits, row: dict[str, Any], problems: list[str]) -> None:
    if not isinstance(scope, str) or scope not in GRANT_SCOPES:
        problems.append(f"scope: {_short(scope)} is not a scope; write session, agent or requester")
    elif scope not in limits.scopes:
        problems.append(f"scope: the rule allows grants for {', '.join(limits.scopes)}, not {scope}")
    elif scope == "session":
        if not a.session:
            problems.append("scope: the call has no session")
        row["session"] = a.session
    elif scope == "requester":
        if not a.requested_by:
            problems.append("scope: the call names no person the agent acts for")
        row["requester"] = a.requested_by


def _duration(value: Any, limits: GrantLimits, at: int, row: dict[str, Any], problems: list[str]) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        problems.append(f"duration: {exc}")
        return
    if seconds > limits.max_duration:
        problems.append(f"duration: {seconds}s is longer than the rule's max_duration of {limits.max_duration}s")
    row["expires_at_us"] = at + min(seconds, MAX_GRANT_SECONDS) * 1_000_000


def _calls(value: Any, limits: GrantLimits, row: dict[str, Any], problems: list[str]) -> None:
    if value is None:
        row["max_calls"] = limits.max_calls
        return
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"max_calls: {_short(str(value))} is not a whole number")
    elif value < 1 or value > MAX_GRANT_CALLS:
        problems.append(f"max_calls: {value} is not between 1 and {MAX_GRANT_CALLS}")
    elif limits.max_calls is not None and value > limits.max_calls:
        problems.append(f"max_calls: {value} is above the rule's {limits.max_calls}")
    else:
        row["max_calls"] = value


def _total(
    value: Mapping[str, Any] | None,
    limits: GrantLimits,
    declared: Mapping[str, str] | None,
    row: dict[str, Any],
    problems: list[str],
) -> None:
    allowed = next(iter((limits.max_total or {}).items()), None)
    if value is None:
        if allowed is not None:
            row["total_arg"], row["max_total"] = allowed[0], str(allowed[1])
        return
    if not isinstance(value, Mapping) or len(value) != 1:
        problems.append("max_total: name one numeric argument and its limit, like {amount: 500}")
        return
    ((name, raw),) = value.items()
    amount = _number(raw, f"max_total.{_label(name)}", problems)
    if amount is None:
        return
    if allowed is not None and name != allowed[0]:
        problems.append(f"max_total: the rule limits the total of {allowed[0]}, not {_label(name)}")
    elif allowed is None and (problem := _total_arg(name, declared)) is not None:
        problems.append(f"max_total: {problem}")
    elif amount <= 0:
        problems.append(f"max_total.{name}: {_amount_text(amount)} is not above 0")
    elif allowed is not None and amount > allowed[1]:
        problems.append(f"max_total.{name}: {_amount_text(amount)} is above the rule's {allowed[1]}")
    elif amount > Decimal("1e15"):
        problems.append(f"max_total.{name}: {_amount_text(amount)} is absurdly large")
    else:
        row["total_arg"], row["max_total"] = name, str(amount)


def _total_arg(name: Any, declared: Mapping[str, str] | None) -> str | None:
    """Why `name` cannot be the argument a grant totals (the rule names none), or None."""
    if not isinstance(name, str) or not _ARG_NAME.fullmatch(name):
        return f"{_short(name)} is not an argument name"
    if declared is not None and name not in declared:
        return f"the tool has no argument {name!r}"
    if declared is not None and declared[name] not in _NUMERIC:
        return f"{name} is a {declared[name]}, not a number"
    return None


def _constraints(
    request: GrantRequest, declared: Mapping[str, str] | None, args: Mapping[str, Any], problems: list[str]
) -> str | None:
    """The grant's argument constraints as stored (JSON), checked as they will be read back; or None."""
    out: dict[str, Any] = {}
    if not isinstance(request.constraints, Mapping):
        problems.append("constraints: give an object of argument constraints, like {amount: {maximum: 150}}")
        return None
    for name, spec in request.constraints.items():
        if not isinstance(name, str) or (declared is not None and name not in declared):
            problems.append(f"constraints.{_label(name)}: the tool has no argument {_short(name)}")
            continue
        out[name] = spec if not isinstance(spec, str) else {"type": spec}
    same = request.same
    if isinstance(same, str) or not isinstance(same, tuple | list) or not all(isinstance(n, str) for n in same):
        problems.append("same: give a list of argument names, like [order_id]")
        same = ()
    for name in same:
        if name not in args:
            problems.append(f"same: the approved call has no argument {_short(name)}")
        elif not isinstance(args[name], str | int | float | bool) and args[name] is not None:
            problems.append(f"same: {_short(name)} is not a single value (a string, number or boolean)")
        elif not isinstance(out.get(name, {}), Mapping):
            continue  # its constraint is malformed, and said so below
        else:
            out[name] = {**out.get(name, {}), "enum": [args[name]]}
    if not out:
        return None
    # A constrained argument must be given: else a call that leaves it out (and lets the tool
    # use its own default) would pass "same order_id" or "amount at most 150" unchecked.
    out = {name: {**spec, "required": True} if isinstance(spec, Mapping) else spec for name, spec in out.items()}
    try:
        text = canonical_json(out)
        stored = json.loads(text)
    except (TypeError, ValueError):
        problems.append("constraints: give plain JSON values (strings, numbers, true/false, lists, objects)")
        return None
    if len(text) > MAX_CONSTRAINTS_CHARS:
        problems.append(f"constraints: {len(text)} characters of JSON; at most {MAX_CONSTRAINTS_CHARS}")
        return None
    # Checked as stored: what JSON cannot carry (a lone surrogate) is stored in a marked form
    # that is no constraint, and a grant whose constraints do not read back covers nothing.
    problems.extend(grants.check_constraints(stored))
    return text


def extension_row(a: Approval, extend: BudgetExtension, *, by: str, note: str | None, at: int) -> dict[str, Any]:
    """The columns of a budget extension given on approval `a`, or GrantRejected.

    Raises:
        GrantRejected: `a` was not asked for by a budget, or the amount is not a sane one.
    """
    scope = next((r.removeprefix("budget:") for r in a.rule_ids if r.startswith("budget:")), None)
    if scope is None:
        raise GrantRejected(a.id, a.tool, ["only an approval an exhausted budget asked for can extend a budget"])
    problems: list[str] = []
    usd = _number(extend.usd, "extend.usd", problems) if extend.usd is not None else None
    tokens = extend.tokens
    if usd is not None and not (0 < usd <= MAX_EXTENSION_USD):
        problems.append(f"extend.usd: {_amount_text(usd)} is not between 0 and {MAX_EXTENSION_USD}")
    elif usd is not None and usd % _NANO_USD:
        problems.append(f"extend.usd: {_amount_text(usd)} is finer than a billionth of a dollar")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        problems.append(f"extend.tokens: {str(tokens)[:50]!r} is not a whole number")
    elif tokens is not None and not (0 < tokens <= MAX_EXTENSION_TOKENS):
        problems.append(f"extend.tokens: {tokens} is not between 1 and {MAX_EXTENSION_TOKENS}")
    if extend.usd is None and tokens is None:
        problems.append("extend: say by how much, in usd or tokens")
    if problems:
        raise GrantRejected(a.id, a.tool, problems)
    return {
        "id": grants.new_grant_id(),
        "kind": "budget",
        "scope": scope,
        "agent": a.agent,
        "environment": a.environment,
        "session": a.session if scope == "session" else None,
        "tool": None,
        "rule_ids": canonical_json(list(a.rule_ids)),
        "extend_nusd": int(usd / _NANO_USD) if usd is not None else None,
        "extend_tokens": tokens,
        "approval_id": a.id,
        "policy_revision": a.policy_revision,
        "granted_by": by,
        "note": note,
        "created_at_us": at,
        "expires_at_us": at + _BUDGET_EXTENSION_SECONDS * 1_000_000,
    }
