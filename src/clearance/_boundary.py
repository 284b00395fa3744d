"""The argument boundary: one canonical value space for every tool call, on every way in.

Every call — `@guard`, each framework integration, `/v1/check`, `/policy/check`, ingest, the MCP
proxy, an approver's edit — passes here before anything is decided, hashed, stored or shown.
Arguments must be I-JSON (RFC 7493), so that the condition engine, the hash, the store and the
tool all see one value:

- numbers are finite (no NaN or ±Infinity) and integers lie within ±(2**53 − 1), the integers
  every JSON reader and the hash (RFC 8785) carry exactly; larger ids travel as strings;
- strings and keys hold no NUL (the condition engine would see a string cut at it, and
  PostgreSQL cannot store it) and no lone surrogate (not Unicode text);
- containers nest at most `MAX_DEPTH` deep and hold at most `MAX_MEMBERS` members each, and
  the whole arguments take at most `MAX_CHARS` characters of canonical JSON.

Other control characters, bidirectional controls and invisible characters are kept exactly:
conditions see them as they are, and every reader shows them visibly.

Names — tools, sessions, agents — follow the rules in `_names`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._names import fold_tool, name_problem, tool_problem
from ._text import LONE_SURROGATE, UNSTORABLE, text_problem

MAX_DEPTH = 64
MAX_MEMBERS = 10_000
MAX_CHARS = 16 * 1024 * 1024
MAX_KEY = 1024
MAX_INT = 2**53 - 1

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What `to_plain` writes for Python values JSON cannot carry: refused, never decided as maps.
_MARKERS = {
    "$float": "is {}, which is not a finite number (I-JSON carries no NaN or Infinity)",
    "$decimal": "is the decimal {}, which is not a finite number",
    "$cycle": "contains itself (a cyclic {}), which JSON cannot carry",
    "$truncated": f"is nested more than {MAX_DEPTH} levels deep",
}
# The exact values `to_plain` writes under each marker: anything else is an ordinary map.
_MARKED = {
    "$float": frozenset(("nan", "inf", "-inf")),
    "$decimal": frozenset(("NaN", "-NaN", "sNaN", "-sNaN", "Infinity", "-Infinity")),
    "$truncated": frozenset(("nested too deeply",)),
}


@dataclass(frozen=True)
class Problem:
    """Why an argument cannot cross the boundary, and where it is (e.g. `args.items[2].to`)."""

    path: tuple[str | int, ...]
    message: str
    root: str = "args"

    @property
    def where(self) -> str:
        """The path as a reader writes it: `args.to`, `args.items[2]`, `args['a b']`."""
        return self.root + "".join(_step(p) for p in self.path)

    def __str__(self) -> str:
        return f"{self.where} {self.message}"


def _step(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    if _IDENT.fullmatch(part):
        return f".{part}"
    return "[" + ascii(part) + "]" if len(part) <= 40 else "[" + ascii(part[:40]) + "…]"


def summary(problems: Sequence[Problem]) -> str:
    """One line naming the first problems (for a decision's reason)."""
    shown = "; ".join(str(p) for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"the arguments cannot be decided: {shown}{more}"


def check_args(args: Any, *, limit: int = 20) -> list[Problem]:
    """Every way the plain arguments `args` are not I-JSON within the limits (up to `limit`).

    Empty when they may be decided. Size is not measured here (see `check_size`): the caller
    serialises the arguments anyway.
    """
    if type(args) is not dict:
        return [Problem((), f"must be an object of named arguments, not {type(args).__name__}")]
    problems: list[Problem] = []
    if len(args) > MAX_MEMBERS:
        problems.append(Problem((), f"has {len(args)} arguments; at most {MAX_MEMBERS} are accepted"))
    # The common call (flat, ASCII text, small numbers) is checked inline: `isascii` is O(1) in
    # CPython and a lone surrogate is never ASCII, so only a NUL needs looking for.
    for key, value in args.items():
        if type(key) is str and "\x00" not in key and len(key) <= MAX_KEY and (key.isascii() or _clean_key(key)):
            t = type(value)
            if t is str:
                if "\x00" not in value and (value.isascii() or LONE_SURROGATE.search(value) is None):
                    continue
            elif (t is int and -MAX_INT <= value <= MAX_INT) or t is bool or value is None:
                continue
            elif t is float and value - value == 0.0:  # finite: inf - inf and nan - nan are nan
                continue
            elif (t is dict or t is list) and _clean(value, 1):
                continue
        problems.extend(_problems(key, value, (key,), 1))
        if len(problems) >= limit:
            break
    return problems[:limit]


def _clean_key(key: str) -> bool:
    return "\x00" not in key and len(key) <= MAX_KEY and (key.isascii() or UNSTORABLE.search(key) is None)


def _clean(value: Any, depth: int) -> bool:
    """Whether a container holds nothing the boundary refuses (the fast path; `_problems` says what)."""
    if depth >= MAX_DEPTH or len(value) > MAX_MEMBERS:
        return False
    if type(value) is dict:
        if _marker(value) is not None:
            return False
        items = value.values()
        for key in value:
            if type(key) is not str or not _clean_key(key):
                return False
    else:
        items = value
    for v in items:
        t = type(v)
        if t is str:
            if "\x00" in v or (not v.isascii() and LONE_SURROGATE.search(v) is not None):
                return False
        elif t is int:
            if not -MAX_INT <= v <= MAX_INT:
                return False
        elif t is float:
            if v - v != 0.0:
                return False
        elif t is dict or t is list:
            if not _clean(v, depth + 1):
                return False
        elif not (t is bool or v is None):
            return False
    return True


_NO_KEY: Any = object()  # an item of a list: it has no name


def _problems(key: Any, value: Any, path: tuple[str | int, ...], depth: int) -> Iterator[Problem]:
    if key is not _NO_KEY and not isinstance(key, str):
        yield Problem(path[:-1], f"has a name that is a {type(key).__name__}, not text")
    elif isinstance(key, str):
        if len(key) > MAX_KEY:
            yield Problem(path[:-1], f"has a key of {len(key)} characters; keys hold at most {MAX_KEY}")
        if (why := text_problem(key)) is not None:
            yield Problem(path, f"has a name that {why}")
    t = type(value)
    if t is str:
        if (why := text_problem(value)) is not None:
            yield Problem(path, why)
    elif t is bool or value is None:
        return
    elif t is int:
        if not -MAX_INT <= value <= MAX_INT:
            yield Problem(path, f"is an integer of {_digits(value)} digits, beyond ±(2**53 − 1); send it as a string")
    elif t is float:
        if not math.isfinite(value):
            yield Problem(path, f"is {value!r}, which is not a finite number (I-JSON carries no NaN or Infinity)")
    elif t is dict:
        marker = _marker(value)
        if marker is not None:
            yield Problem(path, marker)
            return
        if depth >= MAX_DEPTH:
            yield Problem(path, f"is nested more than {MAX_DEPTH} levels deep")
            return
        if len(value) > MAX_MEMBERS:
            yield Problem(path, f"has {len(value)} members; at most {MAX_MEMBERS} are accepted")
            return
        for k, v in value.items():
            yield from _problems(k, v, (*path, k), depth + 1)
    elif t is list:
        if depth >= MAX_DEPTH:
            yield Problem(path, f"is nested more than {MAX_DEPTH} levels deep")
            return
        if len(value) > MAX_MEMBERS:
            yield Problem(path, f"has {len(value)} items; at most {MAX_MEMBERS} are accepted")
            return
        for i, v in enumerate(value):
            yield from _problems(_NO_KEY, v, (*path, i), depth + 1)
    else:
        yield Problem(path, f"is a {t.__name__}, which is not a JSON value")


def _marker(value: dict[str, Any]) -> str | None:
    if len(value) != 1:
        return None
    ((key, inner),) = value.items()
    template = _MARKERS.get(key)
    if template is None or not isinstance(inner, str) or (key in _MARKED and inner not in _MARKED[key]):
        return None
    return template.format(inner)


def _digits(n: int) -> int:
    return len(str(abs(n))) if n.bit_length() < 10_000 else int(n.bit_length() * math.log10(2)) + 1


def check_size(text: str) -> Problem | None:
    """A problem when the canonical JSON of the arguments is larger than `MAX_CHARS`."""
    if len(text) <= MAX_CHARS:
        return None
    return Problem((), f"take {len(text):,} characters as JSON; at most {MAX_CHARS:,} are accepted")


def storable(value: Any, depth: int = 0) -> Any:
    """A refused value in a form every store keeps and every reader shows, truthfully marked.

    Lone surrogates are written as escapes inside a `$unstorable` marker, integers beyond the
    range as their digits in an `$int` marker; NUL characters stay (JSON text escapes them).
    """
    t = type(value)
    if t is str:
        return value if LONE_SURROGATE.search(value) is None else _escaped(value)
    if t is int:
        return value if -MAX_INT <= value <= MAX_INT else {"$int": _int_text(value)}
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if depth >= MAX_DEPTH:
        return {"$truncated": f"nested more than {MAX_DEPTH} levels deep"}
    if t is dict:
        return {
            (k if LONE_SURROGATE.search(k) is None else ascii(k)): storable(v, depth + 1)
            for k, v in list(value.items())[:MAX_MEMBERS]
        }
    if t is list:
        return [storable(v, depth + 1) for v in value[:MAX_MEMBERS]]
    return value


def _backslashed(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()


def _escaped(text: str) -> dict[str, str]:
    return {"$unstorable": "text with lone surrogates", "$escaped": _backslashed(text)}


def _int_text(n: int) -> str:
    return str(n) if n.bit_length() < 1000 else f"an integer of about {_digits(n)} digits"


# -- records from elsewhere (ingest) ----------------------------------------------------------

_RECORD_DEPTH = MAX_DEPTH + 4  # arguments nest below the record's own fields
_INT64 = 2**63 - 1


def check_record(body: Any) -> list[Problem]:
    """Why a record an agent sends cannot be stored and read back as sent (empty when it can).

    Its arguments were checked where the agent decided the call (a refused call's are in their
    storable form); here only what would not survive storage is refused: numbers that are not
    finite (they would be written as null), integers beyond 64 bits, lone surrogates, a NUL in a
    top-level field (each is a column or lands in one), and nesting deeper than any record the
    SDK writes. Paths are relative to the record.
    """
    if type(body) is not dict:
        return [Problem((), "must be an object", "record")]
    problems = list(_record_problems(body, (), 0))
    for field, value in body.items():  # fields are columns, or land in one (an error text, an approval id)
        if isinstance(value, str) and "\x00" in value:
            problems.append(Problem((field,), text_problem(value) or "holds a NUL", "record"))
    for field, what in (("session", "the session id"), ("tool", "the tool name")):
        value = body.get(field)
        if value is None:
            continue
        why = name_problem(value, what) if field == "session" else tool_problem(value)
        if why is None and field == "tool" and value != fold_tool(value):
            why = f"the tool name {value!r} is not as recorded tool names are written ({fold_tool(value)!r})"
        if why is not None:
            problems.append(Problem((field,), why, "record"))
    return problems[:20]


def _record_problems(value: Any, path: tuple[str | int, ...], depth: int) -> Iterator[Problem]:
    t = type(value)
    if t is str:
        # ASCII holds no lone surrogate: most text of most records is decided without a search
        if not value.isascii() and (why := text_problem(value, nul=False)) is not None:
            yield Problem(path, why, "record")
    elif t is float:
        if not math.isfinite(value):
            yield Problem(path, f"is {value!r}, which is not a finite number", "record")
    elif t is int:
        if not -_INT64 - 1 <= value <= _INT64:
            yield Problem(path, "is an integer beyond 64 bits", "record")
    elif t is dict or t is list:
        if depth >= _RECORD_DEPTH:
            yield Problem(path, f"is nested more than {_RECORD_DEPTH} levels deep", "record")
            return
        items = value.items() if t is dict else enumerate(value)
        for k, v in items:
            if type(k) is str and not (k.isascii() and "\x00" not in k) and (why := text_problem(k)) is not None:
                yield Problem((*path, k), f"has a name that {why}", "record")
                continue
            tv = type(v)
            if (
                (tv is str and v.isascii())
                or v is None
                or tv is bool
                or (tv is int and -_INT64 - 1 <= v <= _INT64)
                or (tv is float and v - v == 0.0)  # finite: inf - inf and nan - nan are nan
            ):
                continue  # the common values, fine as they are, without a call a level down
            yield from _record_problems(v, (*path, k), depth + 1)
