"""Hidden, direction-changing and look-alike characters are named wherever arguments are shown."""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from clearance._visible import (
    Hazard,
    Token,
    describe,
    escaped_json,
    hazards,
    segments,
    shown,
    shown_json,
    visible,
    warning,
)

CASES = json.loads((Path(__file__).parent / "visible_cases.json").read_text())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refund\u202etxt.exe", "refund⟨U+202E RLO⟩txt.exe"),
        ("\u202a\u202b\u202c\u202d", "⟨U+202A LRE⟩⟨U+202B RLE⟩⟨U+202C PDF⟩⟨U+202D LRO⟩"),
        ("\u2066a\u2067b\u2068c\u2069", "⟨U+2066 LRI⟩a⟨U+2067 RLI⟩b⟨U+2068 FSI⟩c⟨U+2069 PDI⟩"),
        ("\u200e\u200f\u061c", "⟨U+200E LRM⟩⟨U+200F RLM⟩⟨U+061C ALM⟩"),
        ("pay\u200bpal.com", "pay⟨U+200B ZWSP⟩pal.com"),
        ("\u200c\u200d\u2060\ufeff", "⟨U+200C ZWNJ⟩⟨U+200D ZWJ⟩⟨U+2060 WJ⟩⟨U+FEFF ZWNBSP⟩"),
        ("soft\u00adhyphen", "soft⟨U+00AD SHY⟩hyphen"),
        ("\u034f", "⟨U+034F CGJ⟩"),
        ("\u115f\u1160", "⟨U+115F HANGUL CHOSEONG FILLER⟩⟨U+1160 HANGUL JUNGSEONG FILLER⟩"),
        ("\u3164\uffa0", "⟨U+3164 HANGUL FILLER⟩⟨U+FFA0 HALFWIDTH HANGUL FILLER⟩"),
        ("\ufe00\ufe0f\U000e0100\U000e01ef", "⟨U+FE00 VS1⟩⟨U+FE0F VS16⟩⟨U+E0100 VS17⟩⟨U+E01EF VS256⟩"),
        ("\U000e0001\U000e0041\U000e007f", "⟨U+E0001 LANGUAGE TAG⟩⟨U+E0041 TAG A⟩⟨U+E007F CANCEL TAG⟩"),
        ("a\u2028b\u2029", "a⟨U+2028 LSEP⟩b⟨U+2029 PSEP⟩"),
        ("\x00\x1b[2J\r", "⟨U+0000 NUL⟩⟨U+001B ESC⟩[2J⟨U+000D CR⟩"),
        ("\x7f\x85\x9b", "⟨U+007F DEL⟩⟨U+0085 NEL⟩⟨U+009B CSI⟩"),
        ("\u180e\u2062\ufff9", "⟨U+180E MVS⟩⟨U+2062 INVISIBLE TIMES⟩⟨U+FFF9 IAA⟩"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("p\u0430ypal.com", "p⟨U+0430 Cyrillic⟩ypal.com"),
        ("\u0391pple", "⟨U+0391 Greek⟩pple"),
        ("\u0561pple", "⟨U+0561 Armenian⟩pple"),
        ("Москва city, Ελλάδα, שלום, café", "Москва city, Ελλάδα, שלום, café"),
        ("", ""),
    ],
)
def test_every_class_of_character_is_named(text: str, expected: str) -> None:
    assert visible(text) == expected
    assert "".join(str(s) for s in segments(text)) == expected


def test_a_visible_text_holds_no_hazard_and_reads_left_to_right() -> None:
    every = "".join(chr(cp) for cp in range(0x110000) if describe(chr(cp)) is not None)
    out = visible(every)
    assert all(describe(c) is None or c in "\t\n" for c in out)
    assert len(hazards(every)) == len(every)


def test_the_tables_hold_every_format_character_this_python_knows() -> None:
    # The tables are explicit so the dashboard's twin agrees; this catches a Unicode that adds one.
    missing = [
        f"U+{cp:04X}"
        for cp in range(0x110000)
        if unicodedata.category(chr(cp)) in ("Cf", "Cc", "Zl", "Zp") and chr(cp) not in "\t\n"
        if describe(chr(cp)) is None
    ]
    assert missing == [], f"Unicode {unicodedata.unidata_version} ({sys.version_info[:2]})"


def test_hazards_name_their_place_in_keys_values_and_nested_values() -> None:
    args = {
        "file": "refund\u202etxt.exe",
        "pay\u200bpal": {"hosts": ["ok.com", "p\u0430ypal.com"]},
        "a/b~c": "\x1b",
        "amount": 5,
    }
    assert [(h.path, h.in_key, str(h.token), h.token.kind) for h in hazards(args)] == [
        ("/file", False, "⟨U+202E RLO⟩", "bidi"),
        ("/pay\u200bpal", True, "⟨U+200B ZWSP⟩", "invisible"),
        ("/pay\u200bpal/hosts/1", False, "⟨U+0430 Cyrillic⟩", "mixed-script"),
        ("/a~1b~0c", False, "⟨U+001B ESC⟩", "control"),
    ]
    assert hazards("root\u200b") == [Hazard("", False, Token(0x200B, "invisible", "ZWSP"))]
    assert hazards({"clean": ["text", 1, None, True, {"k": "v"}]}) == []


def test_the_warning_names_each_place_once_and_keeps_its_own_text_safe() -> None:
    text = warning(hazards({"pay\u200bpal": "x\u202ey\u202e", "host": "p\u0430ypal"}))
    assert text == (
        "this call holds invisible or direction-changing characters and letters from another script"
        " inside a word: the key /pay⟨U+200B ZWSP⟩pal (U+200B ZWSP), /pay⟨U+200B ZWSP⟩pal (U+202E RLO),"
        " /host (U+0430 Cyrillic)"
    )
    assert warning([]) is None
    many = warning(hazards({f"k{i}": "\u200b" for i in range(12)}))
    assert many is not None and many.endswith("/k7 (U+200B ZWSP), and 4 more places")


def test_shown_makes_every_string_and_key_visible_and_keeps_the_rest() -> None:
    assert shown({"pay\u200bpal": ["\u202e", 1, None, {"k": True}]}) == {
        "pay⟨U+200B ZWSP⟩pal": ["⟨U+202E RLO⟩", 1, None, {"k": True}]
    }


@pytest.mark.parametrize(
    "value", ["refund\u202etxt.exe", {"k\U000e0041": ["\x1b", 1, "p\u0430y"]}, "\ud800", "plain", 5]
)
def test_escaped_json_shows_every_hazard_as_an_escape_and_parses_back_exactly(value: Any) -> None:
    text = escaped_json(value)
    assert json.loads(text) == value
    assert not any(describe(c) or c in "\u0430\U000e0041" for c in text)


def test_shown_json_keeps_json_escapes_for_controls_and_names_the_rest() -> None:
    text = shown_json({"b": "\x1b[2J\u202e", "a\u200b": 1}, indent=None)
    assert text == '{"a⟨U+200B ZWSP⟩": 1, "b": "\\u001b[2J⟨U+202E RLO⟩"}'


def test_a_large_string_with_one_hazard_is_cut_once() -> None:
    big = "a" * 2_000_000 + "\u200b" + "b" * 10
    assert segments(big) == ["a" * 2_000_000, Token(0x200B, "invisible", "ZWSP"), "b" * 10]


@pytest.mark.parametrize("case", CASES["strings"], ids=lambda c: c["visible"][:40] or "empty")
def test_shared_string_cases(case: dict[str, str]) -> None:
    """The cases the dashboard's visible.ts answers too (tests/e2e/test_showing_arguments.py)."""
    assert visible(case["text"]) == case["visible"]


@pytest.mark.parametrize("case", CASES["values"], ids=lambda c: str(c["warning"])[:40])
def test_shared_value_cases(case: dict[str, Any]) -> None:
    found = hazards(case["value"])
    got = [{"path": h.path, "in_key": h.in_key, "kind": h.token.kind, "token": str(h.token)} for h in found]
    assert got == case["hazards"]
    assert warning(found) == case["warning"]
