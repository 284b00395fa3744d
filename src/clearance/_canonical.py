"""Arguments as plain JSON values: what policy sees, what is hashed, what is recorded.

`to_plain` turns anything a tool can be called with into JSON values deterministically, so the
same call always has the same hash, in any process; objects JSON cannot hold become a
`{"$type", "$repr"}` form with memory addresses removed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson
import rfc8785

REDACTED = "[REDACTED]"
MAX_STRING = 4096
MAX_RECORD_ARGS = 256 * 1024
_MAX_DEPTH = 64
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")
_PLAIN_SCALARS = (str, int, bool, type(None))
_FAST = frozenset(_PLAIN_SCALARS)


def to_plain(value: Any) -> Any:
    """`value` as JSON-compatible data (dict with str keys, list, str, int, float, bool, None)."""
    return _plain(value, 0, set())


def _plain(value: Any, depth: int, seen: set[int]) -> Any:
    if isinstance(value, _PLAIN_SCALARS):
        # A subclass (an IntEnum, a str Enum) is the value its base type holds.
        return value if type(value) in _FAST else _base(value)  # type: ignore[arg-type]
    if isinstance(value, float):
        value = float(value)  # a subclass (numpy's float64) as the float it holds
        return value if math.isfinite(value) else {"$float": repr(value)}
    if type(value) is dict and depth < _MAX_DEPTH and id(value) not in seen:
        seen.add(id(value))
        try:
            return {
                (k if type(k) is str else _key(k)): (
                    v if type(v) in _FAST or (type(v) is float and math.isfinite(v)) else _plain(v, depth + 1, seen)
                )
                for k, v in value.items()
            }
        finally:
            seen.discard(id(value))
    if depth >= _MAX_DEPTH:
        return {"$truncated": "nested too deeply"}
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if id(value) in seen:
            return {"$cycle": type(value).__name__}
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                return {_key(k): _plain(v, depth + 1, seen) for k, v in value.items()}
            items = [_plain(v, depth + 1, seen) for v in value]
            if isinstance(value, set | frozenset):
                items.sort(key=canonical_json)
            return items
        finally:
            seen.discard(id(value))
    return _special(value, depth, seen)


def _base(value: str | int) -> str | int:
    return str.__str__(value) if isinstance(value, str) else int.__index__(value)


def _key(key: Any) -> str:
    return key if isinstance(key, str) else canonical_json(to_plain(key))


def _special(value: Any, depth: int, seen: set[int]) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            return {"$decimal": str(value)}
        as_float = float(value)
        exact = Decimal(repr(as_float)) == value
        if value == value.to_integral_value() and abs(value) < 2**63:
            return int(value)
        return as_float if exact else {"$decimal": str(value)}
    if isinstance(value, enum.Enum):
        return _plain(value.value, depth + 1, seen)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return {"$seconds": value.total_seconds()}
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return {"$bytes": base64.b64encode(raw[:MAX_STRING]).decode(), "$length": len(raw)}
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        try:
            return _plain(dump(mode="json"), depth + 1, seen)
        except Exception:  # a model that cannot dump falls through to the safe form
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _plain(fields, depth + 1, seen)
    return safe_repr(value)


def safe_repr(value: Any) -> dict[str, str]:
    """A deterministic stand-in for an object JSON cannot hold: its type and repr, no addresses."""
    cls = type(value)
    try:
        text = repr(value)
    except Exception as exc:  # a hostile __repr__ must not break the call
        text = f"<repr failed: {type(exc).__name__}>"
    return {
        "$type": f"{cls.__module__}.{cls.__qualname__}",
        "$repr": _ADDRESS.sub("", text)[:MAX_STRING],
    }


def canonical_json(value: Any) -> str:
    """The one JSON text of a plain value: orjson with sorted keys (no spaces, UTF-8 kept).

    Values orjson refuses (integers beyond 64 bits, lone surrogates; the boundary keeps both out
    of arguments) are written in the boundary's marked form (`storable`) by the standard
    library; a given value always takes the same path, so its text never changes.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        pass
    # What orjson refuses (a lone surrogate, an integer beyond 64 bits) is written in the
    # boundary's marked, storable form, so a record is never lost nor unreadable for it.
    from ._boundary import storable

    return _stdlib_json(storable(value))


def _stdlib_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# How `args_hash` is computed, recorded beside it; records without it: `legacy_args_hash`.
ARGS_HASH_ALG = "sha256-jcs"
_JCS_INT = 2**53  # integers JCS (and I-JSON) carry exactly: |n| < 2**53
_JCS_FRACTION_MIN = 1e-5  # below this, orjson writes an exponent where JCS writes digits


def jcs(value: Any) -> str:
    """The RFC 8785 (JSON Canonicalization Scheme) text of a plain I-JSON value.

    orjson with sorted keys writes the same text for most values at a hundredth of the cost of
    the pure-Python `rfc8785`: strings are escaped alike, and so are integers and fractions of
    at least 1e-5. Whole floats are written as integers (`1.0` → `1`, as JCS does) and the rare
    value orjson would write differently (a fraction below 1e-5, a whole float beyond 2**53, a
    key outside the Basic Multilingual Plane, which JCS sorts by UTF-16 units) goes through
    `rfc8785` itself. A test checks both against `rfc8785` on generated values.

    Raises:
        ValueError: The value is not I-JSON (NaN, Infinity, an integer beyond 2**53, a lone
            surrogate): the boundary refuses such arguments before anything is hashed.
    """
    return _jcs_text(value, _jcs_ready(value))


def _jcs_text(value: Any, fast: Any) -> str:
    """The JCS text of `value`, given `_jcs_ready(value)`."""
    if fast is _SLOW:
        try:
            return rfc8785.dumps(value).decode()
        except (rfc8785.CanonicalizationError, UnicodeEncodeError, RecursionError) as exc:
            raise ValueError(f"not I-JSON: {exc}") from None
    try:
        return orjson.dumps(fast, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"not I-JSON: {exc}") from None


_SLOW: Any = object()


def _jcs_ready(value: Any) -> Any:
    """`value` with whole floats as integers, itself when nothing changes, or _SLOW."""
    t = type(value)
    if t is float:
        if value != value or value in (math.inf, -math.inf):
            return _SLOW
        if value.is_integer():
            return int(value) if abs(value) < _JCS_INT else _SLOW
        return value if abs(value) >= _JCS_FRACTION_MIN else _SLOW
    if t is int:
        return value if -_JCS_INT < value < _JCS_INT else _SLOW
    if t is dict:
        out = None
        for k, v in value.items():
            if not k.isascii() and max(k) > "\uffff":
                return _SLOW
            tv = type(v)
            if tv in _JCS_SAME or (tv is float and abs(v) >= _JCS_FRACTION_MIN and not v.is_integer() and v - v == 0):
                continue
            c = _jcs_ready(v)
            if c is _SLOW:
                return _SLOW
            if c is not v:
                if out is None:
                    out = dict(value)
                out[k] = c
        return value if out is None else out
    if t is list:
        items = None
        for i, v in enumerate(value):
            if type(v) in _JCS_SAME:
                continue
            c = _jcs_ready(v)
            if c is _SLOW:
                return _SLOW
            if c is not v:
                if items is None:
                    items = list(value)
                items[i] = c
        return value if items is None else items
    return value


_JCS_SAME = frozenset((str, bool, type(None)))


def args_hash(args: Any, text: str | None = None) -> str:
    """SHA-256 (hex) of the RFC 8785 canonical JSON of plain arguments: `args_hash` in records.

    Any language can recompute it with a JCS library. `text`, the arguments' `canonical_json`
    when the caller has it, is reused when it already is their JCS text (the common case).

    Raises:
        ValueError: The value is not I-JSON.
    """
    fast = _jcs_ready(args)
    if text is not None and fast is args:
        return sha256_hex(text)
    return sha256_hex(_jcs_text(args, fast))


def legacy_args_hash(args: Any, *, stdlib: bool = False) -> str:
    """`args_hash` as records without `args_hash_alg` computed it (orjson, sorted keys).

    The standard library wrote integers beyond 64 bits, which arguments could hold then, and
    every value before orjson came in (`stdlib=True`; its floats differ: `1e-05`, `0.00001`).

    Raises:
        ValueError: A value neither writer writes (NaN with `stdlib`).
    """
    if not stdlib:
        try:
            return sha256_hex(orjson.dumps(args, option=orjson.OPT_SORT_KEYS).decode())
        except TypeError:
            pass
    return sha256_hex(_stdlib_json(args))


def sha256_hex(text: str) -> str:
    """SHA-256 of UTF-8 text, as hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def redact(args: dict[str, Any], pointers: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `args` with the values at the JSON pointers replaced, and the pointers that hit.

    Only the containers on a redacted path are copied; the input is not changed.
    """
    if not pointers:
        return args, []
    out: Any = args
    hit: list[str] = []
    for pointer in pointers:
        parts = _parts(pointer)
        copied = _redact_path(out, parts)
        if copied is not None:
            out = copied
            hit.append(pointer)
    return out, hit


def _redact_path(node: Any, parts: list[str]) -> Any:
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict) and head in node:
        if not rest and node[head] is None:
            return None  # nothing to hide; "[REDACTED]" would misstate a null
        child = REDACTED if not rest else _redact_path(node[head], rest)
        return None if child is None else {**node, head: child}
    if isinstance(node, list) and head.isdigit() and int(head) < len(node):
        i = int(head)
        child = REDACTED if not rest else _redact_path(node[i], rest)
        if child is None:
            return None
        return [*node[:i], child, *node[i + 1 :]]
    return None


def for_record(args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Arguments sized for the audit record: long strings cut and marked; True when anything was.

    The hash of the full arguments is taken before this, so it still covers every byte.
    """
    text = canonical_json(args)
    if len(text) <= MAX_RECORD_ARGS:
        return args, False
    cut = _cut(args)
    if len(canonical_json(cut)) <= MAX_RECORD_ARGS:
        return cut, True
    return {"$truncated": f"{len(text)} characters", "$preview": text[:MAX_STRING]}, True


def _cut(node: Any) -> Any:
    if isinstance(node, str) and len(node) > MAX_STRING:
        return f"{node[:MAX_STRING]}…[truncated, {len(node)} characters]"
    if isinstance(node, dict):
        return {k: _cut(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_cut(v) for v in node]
    return node
