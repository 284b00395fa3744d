"""Stored JSON as readers show it: decoded without ever failing, and never differing silently.

Records written by older versions (or put in the database by hand) may hold values no encoder
returns: nested hundreds of levels deep, lone surrogates, numbers beyond a double, text that is
not JSON. `shown` returns them in a marked form, and a record lists under `$degraded` how what is
shown differs from what is stored. Every reader — API, exports, the CLI — decodes through here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .._text import LONE_SURROGATE
from ._events import StoredEvent

SHOWN_DEPTH = 100  # levels of a recorded value returned whole (what the API can encode is ~250)
PREVIEW = 4096  # characters of a record that is not JSON
DEGRADED = "$degraded"  # the key under which a record lists how it is shown differently
_TOO_DEEP = {"$truncated": f"nested deeper than {SHOWN_DEPTH} levels"}
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NOTE_DEEP = f'values nested deeper than {SHOWN_DEPTH} levels are cut there, marked {{"$truncated": …}}'
_NOTE_NUMBER = 'numbers beyond the range of a double are shown as their text, marked {"$number": …}'
_NOTE_SURROGATE = "lone surrogates (not Unicode text) are shown as their \\uXXXX escape"


@dataclass(frozen=True, slots=True)
class Shown:
    """A stored value as readers return it, and how that differs from what is stored.

    Attributes:
        value: What to return: plain JSON any encoder writes.
        notes: Each way it differs from the stored value (empty: it is the stored value).
    """

    value: Any
    notes: tuple[str, ...] = ()


def shown(text: str, *, record: bool = False) -> Shown:
    """Decode a stored JSON text for a reader; never fails.

    With `record`, the text is an audit record: each of its fields keeps `SHOWN_DEPTH` levels,
    and a record that is not a JSON object is returned as one that says so.
    """
    notes: dict[str, None] = {}

    def number(text: str) -> Any:
        value = float(text)
        if math.isfinite(value):
            return value
        notes[_NOTE_NUMBER] = None
        return {"$number": text}

    levels = SHOWN_DEPTH + 1 if record else SHOWN_DEPTH
    try:
        try:
            value = json.loads(text, parse_float=number, parse_constant=number)
        except RecursionError:  # deeper than the decoder goes: cut the text first
            value = json.loads(_cut(text, levels), parse_float=number, parse_constant=number)
    except ValueError as exc:
        note = f"the stored text is not JSON ({exc}); its first {PREVIEW} characters are shown"
        unreadable = {"$unreadable": note, "$preview": text[:PREVIEW], "$length": len(text)}
        return Shown(unreadable, (note,))
    if record and not isinstance(value, dict):
        note = "the stored record is not a JSON object"
        return Shown({"$unreadable": note, "$value": _plain(value, SHOWN_DEPTH, notes)}, (note, *notes))
    if text.count("[") + text.count("{") <= levels and _SURROGATE_ESCAPE.search(text) is None:
        return Shown(value, tuple(notes))  # it cannot be too deep nor hold a lone surrogate: as decoded
    return Shown(_plain(value, levels, notes), tuple(notes))


def show(value: Any, *, record: bool = False) -> Shown:
    """`shown` for a value decoded elsewhere (by `json.loads`): the same marks, the same notes."""
    notes: dict[str, None] = {}
    return Shown(_plain(value, SHOWN_DEPTH + 1 if record else SHOWN_DEPTH, notes), tuple(notes))


def _plain(value: Any, levels: int, notes: dict[str, None]) -> Any:
    """`value` with containers below `levels` cut, lone surrogates escaped, non-finite floats marked."""
    if isinstance(value, str):
        return _text(value, notes)
    if isinstance(value, dict | list):
        if levels <= 0:
            notes[_NOTE_DEEP] = None
            return dict(_TOO_DEEP)
        if isinstance(value, list):
            return [_plain(v, levels - 1, notes) for v in value]
        return {_text(k, notes): _plain(v, levels - 1, notes) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        notes[_NOTE_NUMBER] = None
        return {"$number": repr(value)}
    return value


def _text(text: str, notes: dict[str, None]) -> str:
    if LONE_SURROGATE.search(text) is None:
        return text
    notes[_NOTE_SURROGATE] = None
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cut(text: str, levels: int) -> str:
    """JSON text with every container below `levels` replaced by the marker (strings skipped whole)."""
    out, level, kept_to = [], 0, 0
    marker = json.dumps(_TOO_DEEP)
    for token in _STRING_OR_BRACKET.finditer(text):
        char = token.group()
        if char in ("[", "{"):
            level += 1
            if level == levels + 1:
                out.append(text[kept_to : token.start()])
        elif char in ("]", "}"):
            if level == levels + 1:
                out.append(marker)
                kept_to = token.end()
            level -= 1
    out.append(text[kept_to:])
    return "".join(out)


def stored_event(seq: int, chain_hash: str, body: str) -> StoredEvent:
    """A stored record as readers return it: marked where it differs, with the reasons under `$degraded`."""
    found = shown(body, record=True)
    value = found.value
    if found.notes:
        value = {**value, DEGRADED: list(found.notes)}
    return StoredEvent(seq, chain_hash, value)
