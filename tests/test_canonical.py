from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from clearance._canonical import (
    MAX_RECORD_ARGS,
    REDACTED,
    canonical_json,
    for_record,
    redact,
    sha256_hex,
    to_plain,
)


class Colour(Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    y: int


class Opaque:
    pass


def test_plain_values_cover_what_tools_receive() -> None:
    value = {
        "t": (1, 2),
        "s": {3, 1, 2},
        "d": Decimal("850.10"),
        "exact": Decimal("0.1234567890123456789"),
        "when": dt.datetime(2026, 1, 2, 3, 4, 5),
        "enum": Colour.RED,
        "pt": Point(1, 2),
        "u": uuid.UUID(int=1),
        "b": b"\x00\xff",
        "nan": float("nan"),
        7: "int key",
    }
    plain = to_plain(value)
    assert plain["t"] == [1, 2] and plain["s"] == [1, 2, 3] and plain["d"] == 850.1
    assert plain["exact"] == {"$decimal": "0.1234567890123456789"}
    assert plain["when"] == "2026-01-02T03:04:05" and plain["enum"] == "red" and plain["pt"] == {"x": 1, "y": 2}
    assert plain["b"] == {"$bytes": "AP8=", "$length": 2} and plain["nan"] == {"$float": "nan"}
    assert plain["7"] == "int key"
    canonical_json(plain)  # JSON-serialisable


def test_unserialisable_objects_get_a_deterministic_safe_form() -> None:
    a, b = to_plain(Opaque()), to_plain(Opaque())
    assert a == b == {"$type": "tests.test_canonical.Opaque", "$repr": "<tests.test_canonical.Opaque object>"}

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert to_plain(Hostile())["$repr"] == "<repr failed: RuntimeError>"


def test_cycles_and_depth_do_not_break() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert to_plain(loop) == [{"$cycle": "list"}]
    deep: dict[str, object] = {}
    node = deep
    for _ in range(100):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    canonical_json(to_plain(deep))


def test_hash_is_the_same_in_another_process() -> None:
    code = (
        "from clearance._canonical import *; import decimal\n"
        "class Opaque: pass\n"
        "print(sha256_hex(canonical_json(to_plain({'b': {3, 1}, 'a': decimal.Decimal('1.5'), 'o': Opaque()}))))"
    )
    out = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert out[0] == out[1] and len(out[0].strip()) == 64


def test_redaction_copies_only_what_it_changes() -> None:
    args = {"card": "4111", "nested": {"list": [{"ssn": "1"}, {"ssn": "2"}]}, "none": None, "keep": {"x": 1}}
    out, hit = redact(args, ["/card", "/nested/list/1/ssn", "/none", "/missing/deep"])
    assert out["card"] == REDACTED and out["nested"]["list"] == [{"ssn": "1"}, {"ssn": REDACTED}]
    assert out["none"] is None and hit == ["/card", "/nested/list/1/ssn"]
    assert args["card"] == "4111" and out["keep"] is args["keep"]


def test_a_huge_argument_is_recorded_cut_and_marked() -> None:
    huge = {"body": "x" * 10_000_000, "to": "a@acme.com"}
    full_hash = sha256_hex(canonical_json(huge))
    recorded, cut = for_record(huge)
    assert cut and recorded["to"] == "a@acme.com" and recorded["body"].endswith("[truncated, 10000000 characters]")
    assert len(canonical_json(recorded)) < MAX_RECORD_ARGS
    assert full_hash != sha256_hex(canonical_json(recorded))
    many = {f"k{i}": "y" * 4000 for i in range(200)}
    recorded, cut = for_record(many)
    assert cut and set(recorded) == {"$truncated", "$preview"}
