r"""Arguments as a person must see them: every hidden, direction-changing or look-alike character named.

A model writes the arguments an approver reads, and a few characters make text read as
something it is not: a right-to-left override shows `refund\u202etxt.exe` as
"refundexe.txt" (and, left open, scrambles the rest of the line), a zero-width space makes
`pay\u200bpal.com` read "paypal.com", a Cyrillic "а" passes for a Latin "a". Wherever
arguments are shown (the CLI, Slack, and the dashboard, whose TypeScript twin is
`dashboard/src/visible.ts`) each such character is replaced by a token naming it,
`⟨U+202E RLO⟩`, and a call that holds one carries a warning naming where.

Three kinds of character, from explicit tables (not this Python's Unicode database, so the
dashboard's twin agrees with it exactly; `tests/visible_cases.json` holds what both must say):

- `bidi`: the direction controls U+202A–202E, U+2066–2069, U+200E/200F and U+061C;
- `invisible`: format characters (category Cf) and others that draw nothing: U+00AD,
  U+034F, the Hangul fillers, variation selectors, tag characters U+E0000–E007F, the line and
  paragraph separators U+2028/2029;
- `control`: C0 and C1 controls other than tab and newline, DEL, and lone surrogates.

A fourth, `mixed-script`, is a letter inside a word whose letters come from more than one of
Latin, Greek, Cyrillic, Armenian and Cherokee: the letters not of the word's main script
become tokens like `⟨U+0430 Cyrillic⟩`. A word is a run of letters and combining marks.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["bidi", "invisible", "control", "mixed-script"]

_C0 = (
    "NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US"
).split()
_C1 = (
    "PAD HOP BPH NBH IND NEL SSA ESA HTS HTJ VTS PLD PLU RI SS2 SS3 "
    "DCS PU1 PU2 STS CCH MW SPA EPA SOS SGCI SCI CSI ST OSC PM APC"
).split()

_NAMED: dict[int, tuple[Kind, str]] = {
    0x061C: ("bidi", "ALM"),
    0x200E: ("bidi", "LRM"),
    0x200F: ("bidi", "RLM"),
    0x202A: ("bidi", "LRE"),
    0x202B: ("bidi", "RLE"),
    0x202C: ("bidi", "PDF"),
    0x202D: ("bidi", "LRO"),
    0x202E: ("bidi", "RLO"),
    0x2066: ("bidi", "LRI"),
    0x2067: ("bidi", "RLI"),
    0x2068: ("bidi", "FSI"),
    0x2069: ("bidi", "PDI"),
    0x00AD: ("invisible", "SHY"),
    0x034F: ("invisible", "CGJ"),
    0x115F: ("invisible", "HANGUL CHOSEONG FILLER"),
    0x1160: ("invisible", "HANGUL JUNGSEONG FILLER"),
    0x17B4: ("invisible", "KHMER INHERENT AQ"),
    0x17B5: ("invisible", "KHMER INHERENT AA"),
    0x180E: ("invisible", "MVS"),
    0x200B: ("invisible", "ZWSP"),
    0x200C: ("invisible", "ZWNJ"),
    0x200D: ("invisible", "ZWJ"),
    0x2028: ("invisible", "LSEP"),
    0x2029: ("invisible", "PSEP"),
    0x2060: ("invisible", "WJ"),
    0x2061: ("invisible", "FUNCTION APPLICATION"),
    0x2062: ("invisible", "INVISIBLE TIMES"),
    0x2063: ("invisible", "INVISIBLE SEPARATOR"),
    0x2064: ("invisible", "INVISIBLE PLUS"),
    0x3164: ("invisible", "HANGUL FILLER"),
    0xFEFF: ("invisible", "ZWNBSP"),
    0xFFA0: ("invisible", "HALFWIDTH HANGUL FILLER"),
    0xFFF9: ("invisible", "IAA"),
    0xFFFA: ("invisible", "IAS"),
    0xFFFB: ("invisible", "IAT"),
    0xE0001: ("invisible", "LANGUAGE TAG"),
    0xE007F: ("invisible", "CANCEL TAG"),
}

# (first, last, kind, name) for the characters not named one by one above.
_RANGES: tuple[tuple[int, int, Kind, str], ...] = (
    (0x0600, 0x0605, "invisible", "FORMAT"),
    (0x06DD, 0x06DD, "invisible", "FORMAT"),
    (0x070F, 0x070F, "invisible", "FORMAT"),
    (0x0890, 0x0891, "invisible", "FORMAT"),
    (0x08E2, 0x08E2, "invisible", "FORMAT"),
    (0x180B, 0x180D, "invisible", "FVS"),
    (0x180F, 0x180F, "invisible", "FVS"),
    (0x206A, 0x206F, "invisible", "FORMAT"),
    (0xD800, 0xDFFF, "control", "SURROGATE"),
    (0xFE00, 0xFE0F, "invisible", "VS"),
    (0x110BD, 0x110BD, "invisible", "FORMAT"),
    (0x110CD, 0x110CD, "invisible", "FORMAT"),
    (0x13430, 0x1343F, "invisible", "FORMAT"),
    (0x1BCA0, 0x1BCA3, "invisible", "FORMAT"),
    (0x1D173, 0x1D17A, "invisible", "FORMAT"),
    (0xE0000, 0xE007F, "invisible", "TAG"),
    (0xE0100, 0xE01EF, "invisible", "VS"),
)

_SCRIPTS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    (
        "Latin",
        (
            (0x0041, 0x005A),
            (0x0061, 0x007A),
            (0x00AA, 0x00AA),
            (0x00BA, 0x00BA),
            (0x00C0, 0x00D6),
            (0x00D8, 0x00F6),
            (0x00F8, 0x02AF),
            (0x1E00, 0x1EFF),
            (0x2C60, 0x2C7F),
            (0xA720, 0xA7FF),
            (0xAB30, 0xAB5A),
            (0xFF21, 0xFF3A),
            (0xFF41, 0xFF5A),
        ),
    ),
    ("Greek", ((0x0370, 0x03FF), (0x1F00, 0x1FFF))),
    ("Cyrillic", ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F))),
    ("Armenian", ((0x0531, 0x058F), (0xFB13, 0xFB17))),
    ("Cherokee", ((0x13A0, 0x13FF), (0xAB70, 0xABBF))),
)


def _class(ranges: list[tuple[int, int]]) -> re.Pattern[str]:
    return re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges) + "]")


_HAZARD = _class(
    [(0x00, 0x08), (0x0B, 0x1F), (0x7F, 0x9F)]
    + [(cp, cp) for cp in _NAMED]
    + [(first, last) for first, last, _, _ in _RANGES]
)
# Only a string holding a letter of a script other than Latin can hold a mixed-script word.
_NOT_LATIN = _class([r for _, ranges in _SCRIPTS[1:] for r in ranges])


def describe(char: str) -> tuple[Kind, str] | None:
    """The kind and short name of a hidden, direction-changing or control character, else None.

    Mixed-script letters are not described here: a letter is only a hazard in its word.
    """
    cp = ord(char)
    if cp <= 0x1F and char not in "\t\n":
        return "control", _C0[cp]
    if cp == 0x7F:
        return "control", "DEL"
    if 0x80 <= cp <= 0x9F:
        return "control", _C1[cp - 0x80]
    if cp in _NAMED:
        return _NAMED[cp]
    for first, last, kind, name in _RANGES:
        if first <= cp <= last:
            if name == "VS":
                return kind, f"VS{cp - 0xFE00 + 1 if cp <= 0xFE0F else cp - 0xE0100 + 17}"
            if name == "FVS":
                return kind, f"FVS{4 if cp == 0x180F else cp - 0x180B + 1}"
            if name == "TAG" and 0xE0020 <= cp <= 0xE007E:
                return kind, "TAG SPACE" if cp == 0xE0020 else f"TAG {chr(cp - 0xE0000)}"
            return kind, name
    return None


def script(char: str) -> str | None:
    """Which of the scripts that look alike a letter belongs to (Latin, Greek, …), else None."""
    cp = ord(char)
    for name, ranges in _SCRIPTS:
        if any(first <= cp <= last for first, last in ranges):
            return name
    return None


@dataclass(frozen=True)
class Token:
    """One character shown by name: `⟨U+202E RLO⟩`, or `⟨U+0430 Cyrillic⟩` for a look-alike."""

    codepoint: int
    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"⟨U+{self.codepoint:04X} {self.name}⟩"


def _foreign_letters(text: str) -> set[int]:
    """Positions of the letters not of their word's main script, in words that mix scripts."""
    out: set[int] = set()
    start = 0
    n = len(text)
    while start < n:
        if unicodedata.category(text[start])[0] not in "LM":
            start += 1
            continue
        end = start
        while end < n and unicodedata.category(text[end])[0] in "LM":
            end += 1
        scripts = [script(c) for c in text[start:end]]
        counts = {s: scripts.count(s) for s, _ in _SCRIPTS if s in scripts}
        if len(counts) > 1:
            main = max(counts, key=lambda s: counts[s])  # ties: the first in _SCRIPTS
            out.update(start + i for i, s in enumerate(scripts) if s is not None and s != main)
        start = end
    return out


def segments(text: str) -> list[str | Token]:
    """`text` cut into plain runs and tokens, in order; joined with str() it is `visible(text)`."""
    foreign = _foreign_letters(text) if _NOT_LATIN.search(text) else set()
    at = sorted(foreign.union(m.start() for m in _HAZARD.finditer(text)))
    if not at:
        return [text] if text else []
    out: list[str | Token] = []
    plain = 0
    for i in at:
        described = describe(text[i])
        kind, name = described if described is not None else ("mixed-script", script(text[i]) or "")
        if plain < i:
            out.append(text[plain:i])
        out.append(Token(ord(text[i]), kind, name))
        plain = i + 1
    if plain < len(text):
        out.append(text[plain:])
    return out


def visible(text: str) -> str:
    """`text` with every hazard replaced by its token: `refund⟨U+202E RLO⟩txt.exe`."""
    if text.isascii() and text.isprintable():  # every hazard is a control or not ASCII
        return text
    return "".join(str(s) for s in segments(text))


@dataclass(frozen=True)
class Hazard:
    """A hazardous character in a JSON value: where (a JSON pointer) and which."""

    path: str  # "/to", "/items/0/name"; "" is the value itself; of the member when in_key
    in_key: bool
    token: Token


def pointer(parts: list[str | int]) -> str:
    """The JSON pointer (RFC 6901) of a path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _walk(value: Any, parts: list[str | int]) -> Iterator[Hazard]:
    if isinstance(value, str):
        for s in segments(value):
            if isinstance(s, Token):
                yield Hazard(pointer(parts), False, s)
    elif isinstance(value, dict):
        for key, item in value.items():
            for s in segments(str(key)):
                if isinstance(s, Token):
                    yield Hazard(pointer([*parts, key]), True, s)
            yield from _walk(item, [*parts, key])
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, [*parts, i])


def hazards(value: Any) -> list[Hazard]:
    """Every hazardous character in a JSON value's strings and keys, in document order."""
    return list(_walk(value, []))


def shown(value: Any) -> Any:
    """A copy of a JSON value with every string and key made `visible`, for printing."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible(str(k)): shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown(v) for v in value]
    return value


def shown_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text of a value for a terminal or a chat: controls as JSON escapes, other hazards as tokens."""
    return visible(json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent, default=str))


def escaped_json(value: Any) -> str:
    """JSON text of a value with every hazard written as its JSON escape.

    It parses back to the same value, and shows every hidden character in an input someone edits.
    """
    out = []
    for s in segments(json.dumps(value, ensure_ascii=False)):
        if isinstance(s, str):
            out.append(s)
            continue
        units = chr(s.codepoint).encode("utf-16-be", "surrogatepass")
        out.append("".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2)))
    return "".join(out)


def warning(found: list[Hazard], *, limit: int = 8) -> str | None:
    """The sentence an approver reads above a call that holds hazards (None when none).

    It names each affected place once, with the characters found there, e.g. `this call holds
    invisible or direction-changing characters: /file_name (U+202E RLO)`.
    """
    if not found:
        return None
    places: dict[tuple[str, bool], list[str]] = {}
    for h in found:
        names = places.setdefault((h.path, h.in_key), [])
        label = f"U+{h.token.codepoint:04X} {h.token.name}"
        if label not in names:
            names.append(label)
    kinds = {h.token.kind for h in found}
    what = []
    if kinds - {"mixed-script"}:
        what.append("invisible or direction-changing characters")
    if "mixed-script" in kinds:
        what.append("letters from another script inside a word")
    listed = []
    for (path, in_key), names in list(places.items())[:limit]:
        where = ("the key " if in_key else "") + (visible(path) if path else "the value")
        more = f", +{len(names) - 3} more" if len(names) > 3 else ""
        listed.append(f"{where} ({', '.join(names[:3])}{more})")
    if len(places) > limit:
        listed.append(f"and {len(places) - limit} more places")
    return f"this call holds {' and '.join(what)}: {', '.join(listed)}"
