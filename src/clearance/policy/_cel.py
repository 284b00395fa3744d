"""The condition engine: CEL through cel-expr-python, behind a small interface.

Chosen by measurement (DESIGN.md): about 2 µs per condition, type checks at compile time. A
tool's conditions are compiled into one list expression so a call converts its context once and
evaluates every rule in one pass; only when that pass errors are the rules run one by one, to
say which of them failed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_math, ext_strings

from . import _functions as fn
from ._facts import parse_fact
from ._model import ParamType

_T = cel.Type
_ISSUE = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_FACT_REF = re.compile(r"\bfacts\.([A-Za-z_][A-Za-z0-9_]*)")
_INT64 = (-(2**63), 2**63 - 1)
_EXACT = 2**53

# Numbers are declared dyn so `args.amount > 200` type-checks whether the model sends 850 or
# 850.0; CEL compares int and double at run time but its checker rejects `double > int`.
_PARAM_TYPES: dict[str, Any] = {
    "string": _T.STRING,
    "number": _T.DYN,
    "integer": _T.DYN,
    "boolean": _T.BOOL,
    "list": _T.List(_T.DYN),
    "map": _T.Map(_T.STRING, _T.DYN),
    "any": _T.DYN,
}


@dataclass(frozen=True)
class CelIssue:
    """A problem the compiler found, at a 1-based line and column of the expression."""

    message: str
    line: int
    column: int


def fact_names(expression: str) -> set[str]:
    """The names used as `facts.NAME` in an expression."""
    return set(_FACT_REF.findall(expression))


# CEL's tokens, as far as finding `args.NAME` and `args["NAME"]` needs: string literals (so text
# inside them is never taken for a reference), identifiers, and any other character alone.
_STRING = "|".join(
    (
        r"'''[\s\S]*?'''",
        r'"""[\s\S]*?"""',
        r"'(?:[^'\\\n]|\\.)*'",
        r'"(?:[^"\\\n]|\\.)*"',
    )
)
_TOKEN = re.compile(
    rf"(?P<str>[rRbB]{{0,2}}(?:{_STRING}))|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>[0-9][0-9A-Za-z_.]*)"
    r"|(?P<space>\s+)|(?P<other>.)",
    re.DOTALL,
)


def _literal(token: str) -> str | None:
    """The text of a string literal token, when it holds no escape (else None: not read exactly)."""
    prefix = len(token) - len(token.lstrip("rRbB"))
    if "b" in token[:prefix].lower():
        return None
    body = token[prefix:]
    quote = 3 if body[:3] in ("'''", '"""') else 1
    inner = body[quote:-quote]
    return inner if "r" in token[:prefix].lower() or "\\" not in inner else None


def arg_names(expression: str) -> list[str]:
    """The arguments an expression reads (`args.NAME`, `args["NAME"]`), in the order they first appear.

    Read from its tokens, so `"args.x"` inside a string literal is no reference, nor is a field
    `args` of something else (`x.args.y`).
    """
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expression) if m.lastgroup != "space"]
    found: dict[str, None] = {}
    for i, (kind, text) in enumerate(tokens):
        if kind != "id" or text != "args" or (i and tokens[i - 1][1] == "."):
            continue
        after = tokens[i + 1 : i + 4]
        if len(after) >= 2 and after[0][1] == "." and after[1][0] == "id":
            found[after[1][1]] = None
        elif len(after) == 3 and after[0][1] == "[" and after[1][0] == "str" and after[2][1] == "]":
            name = _literal(after[1][1])
            if name is not None:
                found[name] = None
    return list(found)


def _overloads(name: str, impl: Callable[..., Any], ret: Any, arg_kinds: Sequence[Sequence[Any]]) -> Any:
    overloads = []
    for kinds in itertools.product(*arg_kinds):
        sig = "_".join(k.name().lower().replace("<", "_").replace(">", "") for k in kinds)
        overloads.append(cel.Overload(f"{name}_{sig}", return_type=ret, parameters=list(kinds), impl=impl))
    return cel.FunctionDecl(name, overloads)


def _declarations() -> list[Any]:
    text_or_list = [_T.STRING, _T.List(_T.DYN)]
    number = [_T.STRING, _T.INT, _T.DOUBLE]
    scalar_or_list = [_T.STRING, _T.INT, _T.DOUBLE, _T.BOOL, _T.List(_T.DYN)]
    decls = [
        _overloads("domain", fn.domain, _T.STRING, [text_or_list]),
        _overloads("domains", fn.domains, _T.List(_T.STRING), [text_or_list]),
        _overloads("all_in", fn.all_in, _T.BOOL, [scalar_or_list, [_T.List(_T.DYN)]]),
        _overloads("any_in", fn.any_in, _T.BOOL, [scalar_or_list, [_T.List(_T.DYN)]]),
        _overloads("dec_cmp", fn.dec_cmp, _T.INT, [number, number]),
        _overloads("num", fn.num, _T.DOUBLE, [number]),
    ]
    for name, test in fn.COMPARISONS.items():
        decls.append(_overloads(name, lambda a, b, t=test: t(fn.dec_cmp(a, b)), _T.BOOL, [number, number]))
    return decls


def _new_env(variables: Mapping[str, Any]) -> Any:
    return cel.NewEnv(
        variables=dict(variables),
        extensions=[ext_strings.ExtStrings(), ext_math.ExtMath()],
        functions=_declarations(),
    )


def _issues(error: Exception) -> list[CelIssue]:
    text = str(error)
    found = [CelIssue(m.group(3).strip(), int(m.group(1)), int(m.group(2))) for m in _ISSUE.finditer(text)]
    return found or [CelIssue(text.strip(), 1, 1)]


def as_cel(value: Any) -> Any:
    """Plain values as CEL sees them: every number a double.

    CEL compares int and double but will not add them, so `facts.sum_24h_amount + args.amount`
    works only if both are doubles. Integers beyond 2**53 (ids) stay integers, exactly. Returns
    `value` itself when nothing needs converting.
    """
    t = type(value)
    if t is int:
        return float(value) if -_EXACT <= value <= _EXACT or not _INT64[0] <= value <= _INT64[1] else value
    if t is dict:
        out = None
        for k, v in value.items():
            c = as_cel(v) if type(v) in _CONVERTIBLE else v
            if c is not v:
                if out is None:
                    out = dict(value)
                out[k] = c
        return value if out is None else out
    if t is list:
        converted = [as_cel(v) if type(v) in _CONVERTIBLE else v for v in value]
        return value if all(a is b for a, b in zip(converted, value, strict=True)) else converted
    return value


_CONVERTIBLE = frozenset((int, dict, list))


class ConditionSet:
    """The compiled conditions of one tool, evaluated together."""

    def __init__(self, engine: CelEngine, expressions: Sequence[str]) -> None:
        self._engine = engine
        self._expressions = tuple(expressions)
        joined = ", ".join(f"({e})" for e in expressions)
        self._all = engine.eval_env.compile(f"[{joined}]") if expressions else None
        self._singles: list[Any] | None = None

    def evaluate(self, args: Mapping[str, Any], facts: Mapping[str, Any]) -> list[bool | str]:
        """Each condition's value, or the error text for a condition that could not be evaluated.

        A condition that yields something other than true or false counts as an error.
        """
        if self._all is None:
            return []
        data = {"args": as_cel(args), "facts": as_cel(facts)}
        try:
            result = self._all.eval(data=data)
        except Exception as exc:  # a value CEL cannot hold
            return [f"arguments cannot be evaluated: {exc}"] * len(self._expressions)
        values = result.plain_value()  # an error comes back as its message, not a list
        if type(values) is list and all(type(v) is bool for v in values):
            return values
        return self._one_by_one(data)

    def _one_by_one(self, data: Mapping[str, Any]) -> list[bool | str]:
        if self._singles is None:
            self._singles = [self._engine.eval_env.compile(e) for e in self._expressions]
        out: list[bool | str] = []
        for program in self._singles:
            r = program.eval(data=data)
            if r.type() == _T.ERROR:
                out.append(_runtime_message(str(r.value())))
                continue
            v = r.plain_value()
            out.append(v if v is True or v is False else f"condition gave {v!r}, not true or false")
        return out


def _runtime_message(text: str) -> str:
    # cel-cpp prefixes a status code ("NOT_FOUND: Key not found in map : \"amount\"").
    code, _, rest = text.partition(": ")
    return rest if rest and code.isupper() else text


class CelEngine:
    """Compiles and type-checks conditions. One per process is enough; it is immutable."""

    def __init__(self) -> None:
        self.eval_env = _new_env({"args": _T.Map(_T.STRING, _T.DYN), "facts": _T.Map(_T.STRING, _T.DYN)})
        self._check_envs: dict[tuple[Any, ...], Any] = {}

    def check(self, expression: str, params: Mapping[str, ParamType] | None) -> list[CelIssue]:
        """Problems with one condition, found at compile time.

        With `params` each argument is declared with its type, so a misspelt argument or a
        type mismatch is reported; without, `args` is an open map. Unknown facts are reported
        either way. A condition must produce true or false.
        """
        facts = sorted(n for n in fact_names(expression) if parse_fact(n) is not None)
        key = (tuple(sorted(params.items())) if params is not None else None, tuple(facts))
        env = self._check_envs.get(key)
        if env is None:
            variables: dict[str, Any] = {f"facts.{n}": _T.DYN for n in facts}
            if params is None:
                variables["args"] = _T.Map(_T.STRING, _T.DYN)
            else:
                variables.update({f"args.{n}": _PARAM_TYPES[t] for n, t in params.items()})
            env = self._check_envs[key] = _new_env(variables)
        try:
            program = env.compile(expression)
        except RuntimeError as exc:
            return _issues(exc)
        rtype = program.return_type()
        if rtype != _T.BOOL and rtype != _T.DYN:
            return [CelIssue(f"a condition must be true or false, this one is {rtype.name().lower()}", 1, 1)]
        return []

    def compile_set(self, expressions: Iterable[str]) -> ConditionSet:
        """Compile a tool's conditions for evaluation together."""
        return ConditionSet(self, list(expressions))
