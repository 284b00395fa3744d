"""Arguments an approver edits: checked against the tool's parameters, merged, and compared.

An approver sees the arguments as recorded — secrets redacted — and sends back the arguments to
run, in full or only those that change. A value left as `[REDACTED]` where the record redacted
one keeps the hidden original, so approvers can edit a refund's amount without ever seeing the
card number. Names the call did not have are refused, and so is a value of another type than
the parameter's (declared in the policy's `params`, else the proposed value's type).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ._boundary import check_args
from ._canonical import REDACTED, canonical_json, redact, to_plain
from .policy._model import ParamType

# An integer proposed for a float parameter is still a number: inferred types do not narrow to integer.
_JSON_TYPE: dict[type, ParamType] = {bool: "boolean", int: "number", float: "number", str: "string"}


def merge(
    proposed: Mapping[str, Any],
    edited: Mapping[str, Any],
    *,
    redacted: Sequence[str],
    params: Mapping[str, ParamType] | None,
) -> tuple[dict[str, Any], list[str]]:
    """The full arguments to run, and every problem with the edit (empty: it is acceptable).

    Args:
        proposed: The call's full arguments as proposed.
        edited: The approver's arguments (as shown, so redaction marks may stand for originals).
        redacted: The tool's redaction pointers.
        params: Declared parameter types, when the policy declares them.
    """
    plain = to_plain(dict(edited))
    assert isinstance(plain, dict)
    refused = check_args(plain)  # an approver's values cross the same boundary as the agent's
    if refused:
        return dict(proposed), [f"{p.where.removeprefix('args.')}: {p.message}" for p in refused]
    problems: list[str] = []
    known = set(proposed) | set(params or {})
    out = copy.deepcopy(dict(proposed))
    for name, value in plain.items():
        if name not in known:
            problems.append(f"{name}: the call has no such argument")
            continue
        value = _restore(value, proposed.get(name), [p for p in redacted if _first(p) == name])
        expected = (params or {}).get(name) or _type_of(proposed.get(name))
        problem = _check(value, expected)
        if problem:
            problems.append(f"{name}: {problem}")
            continue
        out[name] = value
    return out, problems


def changes(proposed: Mapping[str, Any], executed: Mapping[str, Any], redacted: Sequence[str]) -> list[dict[str, Any]]:
    """What an edit changed, argument by argument, as people may see it (redacted both sides)."""
    shown_before, _ = redact(dict(proposed), redacted)
    shown_after, _ = redact(dict(executed), redacted)
    diff = []
    for name in sorted(set(proposed) | set(executed)):
        if canonical_json(proposed.get(name)) == canonical_json(executed.get(name)):
            continue
        diff.append({"arg": name, "from": shown_before.get(name), "to": shown_after.get(name)})
    return diff


def _first(pointer: str) -> str:
    return pointer.lstrip("/").split("/", 1)[0].replace("~1", "/").replace("~0", "~")


def _restore(value: Any, original: Any, pointers: Sequence[str]) -> Any:
    """Put back the originals where the edit still holds the redaction mark."""
    for pointer in pointers:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")][1:]
        if not parts:
            if value == REDACTED:
                return copy.deepcopy(original)
            continue
        value = _restore_at(value, original, parts)
    return value


def _restore_at(value: Any, original: Any, parts: list[str]) -> Any:
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict) and isinstance(original, dict) and head in value and head in original:
        if not rest:
            return {**value, head: copy.deepcopy(original[head])} if value[head] == REDACTED else value
        return {**value, head: _restore_at(value[head], original[head], rest)}
    if isinstance(value, list) and isinstance(original, list) and head.isdigit():
        i = int(head)
        if i < len(value) and i < len(original):
            child = copy.deepcopy(original[i]) if not rest and value[i] == REDACTED else value[i]
            if rest:
                child = _restore_at(value[i], original[i], rest)
            return [*value[:i], child, *value[i + 1 :]]
    return value


def _type_of(value: Any) -> ParamType:
    if value is None:
        return "any"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return _JSON_TYPE.get(type(value), "any")


def fits(value: Any, kind: ParamType) -> bool:
    """Whether `value` is of the parameter type `kind` (a bool is not a number)."""
    if kind == "any":
        return True
    if isinstance(value, bool):
        return kind == "boolean"
    return isinstance(value, _PYTHON_TYPES[kind])


_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float, Decimal),
    "list": (list, tuple),
    "map": dict,
}


def _check(value: Any, expected: ParamType) -> str | None:
    if fits(value, expected):
        return None
    article = "an" if expected[0] in "aeiou" else "a"
    return f"expected {article} {expected}, got {canonical_json(value)[:80]}"
