"""Checking a call's arguments against the tool's declared `params`, before any rule runs.

Pure and exact: numbers are compared as decimals, types follow JSON (a bool is not a number),
and every problem names the argument, so the decision's reason says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

import regex

from ._functions import is_plain_email, to_decimal
from ._model import ParamSpec

_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "list": "a list",
    "map": "an object",
}


def check(params: Mapping[str, ParamSpec], additional: str, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (argument, problem) of `args` against `params`; empty when the call fits."""
    problems: list[tuple[str, str]] = []
    for name, spec in params.items():
        if name not in args or (args[name] is None and spec.nullable):
            if spec.required and name not in args:
                problems.append((name, "is required"))
            continue
        why = _problem(spec, args[name])
        if why is not None:
            problems.append((name, why))
    if additional != "allow":
        problems.extend((name, "is not a declared argument of this tool") for name in args if name not in params)
    return problems


def _problem(spec: ParamSpec, value: Any) -> str | None:
    if not _is_type(spec.type, value):
        return f"must be {_TYPE_NAMES[spec.type]}, not {_json_type(value)}"
    if spec.enum is not None and not any(_same(value, option) for option in spec.enum):
        return f"is {_show(value)}, not one of {', '.join(_show(o) for o in spec.enum)}"
    if spec.minimum is not None or spec.maximum is not None:
        if _is_number(value):
            number = to_decimal(value)
            if spec.minimum is not None and number < spec.minimum:
                return f"is {_show(value)}, below the minimum {spec.minimum}"
            if spec.maximum is not None and number > spec.maximum:
                return f"is {_show(value)}, above the maximum {spec.maximum}"
        elif spec.type == "any":
            return f"must be a number (it has a minimum or maximum), not {_json_type(value)}"
    if spec.max_length is not None and isinstance(value, str | list) and len(value) > spec.max_length:
        unit = "characters" if isinstance(value, str) else "items"
        return f"has {len(value)} {unit}, more than the maximum {spec.max_length}"
    if spec.pattern is not None or spec.format is not None:
        if not isinstance(value, str):
            return f"must be a string, not {_json_type(value)}"
        if spec.pattern is not None:
            found = _matches(spec.pattern, value)
            if found is None:
                return (
                    f"could not be matched against the pattern {spec.pattern} within {PATTERN_SECONDS * 1000:.0f} ms"
                    " (the pattern backtracks: simplify it, or bound the value with max_length)"
                )
            if not found:
                return f"does not match the pattern {spec.pattern}"
        if spec.format == "email" and not is_plain_email(value):
            return "is not one plain email address (name@domain, nothing around it)"
    return None


PATTERN_SECONDS = 0.05  # a pattern that backtracks past this on one value blocks the call


@lru_cache(maxsize=512)
def compiled(pattern: str) -> regex.Pattern[str]:
    r"""A `pattern` as JSON Schema means it: ECMA-262's `$`, and `\d`, `\w`, `\s` in ASCII.

    Raises:
        regex.error: It is not a regular expression.
    """
    return regex.compile(ecma_end(pattern), flags=regex.ASCII | regex.V0)


def ecma_end(pattern: str) -> str:
    r"""`pattern` with each `$` meaning the end of the value, as in JSON Schema's (ECMA-262) patterns.

    Python's `$` also matches before a final newline, so `^A-[0-9]+$` would pass "A-1\n". A `]`
    right after `[` or `[^` is a literal in a class, not its end.
    """
    out: list[str] = []
    in_class, escaped, class_start = False, False, -1
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class, class_start = True, i
        elif char == "]" and in_class and i != class_start + 1 and pattern[class_start + 1 : i] != "^":
            in_class = False
        elif char == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


def _matches(pattern: str, value: str) -> bool | None:
    """Whether the pattern is found in `value`; None when matching took longer than allowed."""
    try:
        return compiled(pattern).search(value, timeout=PATTERN_SECONDS) is not None
    except TimeoutError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_type(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return _is_number(value)
    if kind == "integer":
        return _is_number(value) and float(value).is_integer()
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    return isinstance(value, dict)


def _same(value: Any, option: Any) -> bool:
    if isinstance(value, bool) or isinstance(option, bool) or value is None or option is None:
        return type(value) is type(option) and value == option
    if _is_number(value) and _is_number(option):
        return bool(to_decimal(value) == to_decimal(option))
    return type(value) is type(option) and value == option


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return ascii(value[:60]) + ("…" if len(value) > 60 else "")
    if isinstance(value, float) and value.is_integer():
        return str(Decimal(repr(value)).normalize()) if abs(value) < 1e16 else repr(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
