"""Policy problems in plain words.

The validators speak of their own internals ("input should be a valid tuple", "found no matching
overload for '_>_' applied to '(string, int)'", "mismatched input '<EOF>'"); the person editing
the policy needs what to write instead, and where. Every message here says what the key should
be and what it is, and `key_path` names the place as `tools.issue_refund.rules[0].effect`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ._facts import FACT_NAMES_HELP
from ._model import ParamType

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_LIST = "a list (one '- ' line per item, or [a, b])"
_MAPPING = "a mapping (key: value lines)"
_NUMBER = "a number"
_WHOLE = "a whole number"
# What each pydantic type error expects, in the policy's own terms.
_EXPECTED = {
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type", "mapping_type"), _MAPPING),
    **dict.fromkeys(("tuple_type", "list_type", "set_type", "frozen_set_type", "iterable_type"), _LIST),
    **dict.fromkeys(("string_type", "string_sub_type", "string_unicode"), "text"),
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float", "int_parsing_size"), _WHOLE),
    **dict.fromkeys(("decimal_type", "decimal_parsing", "float_type", "float_parsing"), _NUMBER),
    "finite_number": "a finite number",
    **dict.fromkeys(("bool_type", "bool_parsing"), "true or false"),
}
_BOUNDS = {
    "greater_than": ("more than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def key_path(path: Sequence[str | int]) -> str | None:
    """`tools.issue_refund.rules[0].effect`: keys joined by dots, odd keys quoted, indexes in brackets."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += ("." if out else "") + part
        else:  # quoted with JSON's escapes: hidden and bidi characters show as \u….
            out += f"[{_clip(json.dumps(part), 60)}]"
    return out or None


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def shown(value: Any) -> str:
    """A value as the message names it: 'the text …', 'the number 5', 'a list', 'true', 'empty'."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return f"the number {_clip(str(value), 40)}"
    if isinstance(value, str):
        return f"the text {quoted(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return "something else"


def quoted(text: str) -> str:
    """Text in quotes, shortened, with invisible and bidi characters escaped (Python's repr does)."""
    return repr(text[:40]) + ("…" if len(text) > 40 else "")


def label(loc: Sequence[str | int]) -> str | None:
    """The key a message is about: `'effect'`, or `'approvers[0]'` for a list item."""
    keys = [p for p in loc if isinstance(p, str)]
    if not loc or not keys:
        return None
    last = loc[-1]
    return f"'{keys[-1]}[{last}]'" if isinstance(last, int) else f"'{last}'"


def expected(kind: str, ctx: Mapping[str, Any] | None) -> str | None:
    """What a pydantic error of `kind` says the value should be, or None when it is not a type error."""
    if kind in ("literal_error", "enum"):
        return str((ctx or {}).get("expected", "one of the allowed values"))
    return _EXPECTED.get(kind)


def pydantic_message(error: Mapping[str, Any], key: str | None) -> str:
    """One pydantic error (not `missing` or `extra_forbidden`) as a sentence about `key`."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    name = key or "the policy"
    want = expected(kind, ctx)
    if want is not None:
        hint = ": start each item with '- '" if want == _LIST and isinstance(got, Mapping) else ""
        return f"{name} should be {want}, not {shown(got)}{hint}"
    if kind in _BOUNDS:
        words, bound = _BOUNDS[kind]
        return f"{name} should be {words} {_figure(ctx.get(bound))}, not {_clip(str(got), 40)}"
    if kind == "too_short":
        return f"{name} should have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"{name} should have at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_long":
        return f"{name} is too long: at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return _pattern(name, str(ctx.get("pattern", "")), got)
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    return f"{key}: {message}" if key and key.endswith("'") and not key.endswith("]'") else message


def _figure(value: Any) -> str:
    """A bound as written in a policy: 1000000000000000, not Decimal('1E+15')."""
    if isinstance(value, str) and (m := re.fullmatch(r"Decimal\('([^']*)'\)", value)):
        value = Decimal(m.group(1))  # pydantic gives some bounds as their repr
    return f"{value:f}" if isinstance(value, Decimal) else str(value)


def _pattern(name: str, pattern: str, got: Any) -> str:
    value = quoted(got) if isinstance(got, str) else shown(got)
    if pattern.startswith("^[A-Za-z0-9][A-Za-z0-9_.:-]"):
        return f"{name} may hold letters, digits and _ . : - (starting with a letter or digit), not {value}"
    if pattern.startswith("^(/("):
        return f"{name} should be a JSON pointer such as /card_number or /items/0/number, not {value}"
    return f"{name} should match the pattern {pattern}, not {value}"


def union_message(key: str | None, wanted: list[str], got: Any) -> str:
    """Several alternatives refused one value (a union): one sentence naming them all."""
    options = list(dict.fromkeys(wanted))
    joined = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
    return f"{key or 'the policy'} should be {joined}, not {shown(got)}"


# ---- conditions (CEL) ----

_UNDECLARED = re.compile(r"undeclared reference to '(args|facts)\.([^']+)'")
_OVERLOAD = re.compile(r"found no matching overload for '([^']+)' applied to '\((.*)\)'")
_RESULT = re.compile(r"a condition must be true or false, this one is (.+)")
_OPERATORS = {
    "_>_": ">",
    "_<_": "<",
    "_>=_": ">=",
    "_<=_": "<=",
    "_==_": "==",
    "_!=_": "!=",
    "_+_": "+",
    "_-_": "-",
    "_*_": "*",
    "_/_": "/",
    "_%_": "%",
    "!_": "!",
    "-_": "-",
    "_&&_": "&&",
    "_||_": "||",
    "_?_:_": "? :",
    "_[_]": "[…]",
    "@in": "in",
}
_COMPARISONS = {">", "<", ">=", "<=", "==", "!="}
_CEL_TYPES = {
    "string": "text",
    "int": _WHOLE,
    "uint": _WHOLE,
    "double": _NUMBER,
    "bool": "true or false",
    "null_type": "null",
    "list": "a list",
    "map": "a map",
    "dyn": "any value",
    "bytes": "bytes",
    "google.protobuf.Timestamp": "a time",
    "timestamp": "a time",
    "google.protobuf.Duration": "a duration",
    "duration": "a duration",
}


def _cel_types(text: str) -> list[str]:
    """`string, map(string, dyn)` → ['string', 'map(string, dyn)']: split at top-level commas."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()] if current.strip() else parts


def cel_type(name: str) -> str:
    """A CEL type in words: `int` → 'a whole number', `list(dyn)` → 'a list'."""
    base = name.split("(", 1)[0].strip()
    return _CEL_TYPES.get(base, base)


_NESTING = re.compile(r"recursion limit exceeded\. limit: (\d+)", re.IGNORECASE)


def condition_message(message: str, params: Mapping[str, ParamType] | None) -> str | None:
    """A CEL compiler message in plain words; None for one that only follows from an earlier one."""
    if m := _UNDECLARED.search(message):
        if m.group(1) == "facts":
            return f"unknown fact 'facts.{m.group(2)}'; facts are {FACT_NAMES_HELP}"
        if params is not None:
            known = ", ".join(sorted(params)) or "none"
            return f"the tool has no parameter '{m.group(2)}' (its parameters: {known})"
        return f"unknown name '{m.group(1)}.{m.group(2)}'"
    if "undeclared reference to" in message:
        name = message.split("'")[1] if "'" in message else "?"
        return f"unknown name '{name}'; conditions read args.NAME and facts.NAME"
    if message.startswith("Syntax error: "):
        return "syntax error: " + _syntax(message.removeprefix("Syntax error: "))
    if m := _OVERLOAD.fullmatch(message.strip()):
        return _overload(m.group(1), _cel_types(m.group(2)))
    if m := _RESULT.fullmatch(message):
        return f"a condition must be true or false; this one gives {cel_type(m.group(1))}"
    if m := _NESTING.search(message):
        return f"the condition nests too deeply: at most {m.group(1)} levels of brackets, calls or fields"
    return message


def _syntax(detail: str) -> str:
    if m := re.match(r"mismatched input '<EOF>' expecting (.*)", detail):
        wanted = m.group(1)
        return "the condition ends too early" + (f" (expected {wanted})" if re.fullmatch(r"'[^']+'", wanted) else "")
    if m := re.match(r"extraneous input '(.*)' expecting <EOF>", detail):
        return f"unexpected '{m.group(1)}' after the end of the condition"
    if m := re.match(r"(?:extraneous|mismatched) input '(.*)' expecting", detail):
        return f"unexpected '{m.group(1)}'"
    if m := re.match(r"missing '(.*)' at", detail):
        return f"a '{m.group(1)}' is missing"
    if m := re.match(r"token recognition error at: '(.*)'$", detail):
        token = m.group(1)
        return f"a quote is not closed ({token})" if token[:1] in "'\"" else f"cannot read '{token}'"
    return detail.split(" expecting ", 1)[0]


def _overload(name: str, types: list[str]) -> str | None:
    if any("*error*" in t for t in types):
        return None  # a mistake reported already (an unknown name) made this one
    words = [cel_type(t) for t in types]
    op = _OPERATORS.get(name)
    if op is None:
        return f"'{name}' cannot take {' and '.join(words) or 'no arguments'}"
    if len(words) == 1:
        return f"'{op}' cannot apply to {words[0]}"
    if op in _COMPARISONS:
        return f"'{op}' cannot compare {words[0]} with {words[1]}"
    if op == "in":
        return f"'in' needs a list or a map on its right, not {words[1]}"
    if op in ("&&", "||"):
        return f"'{op}' needs true or false on both sides, not {words[0]} and {words[1]}"
    return f"'{op}' cannot combine {' and '.join(words)}"


# ---- YAML ----

_DUPLICATE = re.compile(r'found duplicate key "(.*)" with value')


def yaml_message(context: str, problem: str, text: str, at: tuple[int, int] | None) -> str:
    """A YAML parser's complaint in plain words (`at`: the 0-based line and column it points to)."""
    both = f"{context} {problem}"
    if "'\\t'" in problem:
        return "a tab indents this line; YAML indents with spaces only"
    if m := _DUPLICATE.search(problem):
        key = m.group(1)
        first = _first_use(text, key, at)
        return f"the key {quoted(key)} appears twice in one mapping" + (f" (first at line {first})" if first else "")
    if "quoted scalar" in context:
        return "a quote is not closed: the text runs to the end of the file"
    if "mapping values are not allowed here" in problem:
        return "a ':' cannot follow a value on this line; put text that holds ': ' in quotes"
    if "flow sequence" in context or "expected ',' or ']'" in problem:
        return "a [ list is not closed, or its items are not separated by ','"
    if "flow mapping" in context or "expected ',' or '}'" in problem:
        return "a { mapping is not closed, or its entries are not separated by ','"
    if "flow node" in context and "stream end" in problem:
        return "the file ends inside a [ list or { mapping: close it"
    if "could not find expected ':'" in both or "simple key" in both:
        return "a key on this line has no ':' after it"
    if "expected <block end>" in problem or "did not find expected" in problem:
        return "this line's indentation does not line up with the lines above it"
    if "anchor" in both or "alias" in both:
        return f"an alias (*name) names no anchor (&name) above it: {problem}"
    return f"malformed YAML: {problem or context}"


def _first_use(text: str, key: str, at: tuple[int, int] | None) -> int | None:
    """The 1-based line where a duplicated key was first written, when it can be found.

    Earlier on its line (a flow mapping), or above it at the same indentation (a block mapping).
    """
    if at is None:
        return None
    lines = text.splitlines()
    line, column = at
    written = r"['\"]?" + re.escape(key) + r"['\"]?\s*:"
    if line < len(lines) and re.search(r"[{,]\s*" + written, lines[line][:column]):
        return line + 1
    for n in range(min(line, len(lines)) - 1, -1, -1):
        source = lines[n]
        stripped = source.lstrip(" -")
        if not stripped or stripped.startswith("#"):
            continue
        if len(source) - len(stripped) < column:
            return None  # the mapping began below this line
        if len(source) - len(stripped) == column and re.match(written, stripped):
            return n + 1
    return None
