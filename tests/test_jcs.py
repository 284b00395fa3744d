"""`args_hash` is RFC 8785: the fast path writes exactly what the `rfc8785` library writes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from clearance._canonical import args_hash, canonical_json, jcs, legacy_args_hash

SAFE_INT = 2**53 - 1
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-SAFE_INT, SAFE_INT),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-4, max_value=1e-4, allow_nan=False),  # where orjson writes exponents
    st.floats(min_value=2.0**52, max_value=2.0**80),  # whole floats beyond 2**53
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xE000)),  # BMP and astral keys sort differently
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(), st.text(alphabet=st.characters(min_codepoint=0xE000))), inner, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(st.dictionaries(st.text(), values, max_size=6))
def test_the_hash_text_is_rfc8785(args: dict[str, Any]) -> None:
    expected = rfc8785.dumps(args).decode()
    assert jcs(args) == expected
    assert args_hash(args) == args_hash(args, canonical_json(args)) == hashlib.sha256(expected.encode()).hexdigest()


@pytest.mark.parametrize(
    "args, text",
    [
        ({"b": 1.0, "a": -0.0}, '{"a":0,"b":1}'),
        ({"x": 1e21, "y": 1e-7, "z": 0.000001}, '{"x":1e+21,"y":1e-7,"z":0.000001}'),
        ({"\U0001f600": 1, "\uffff": 2}, '{"\U0001f600":1,"\uffff":2}'),
        ({"s": '\x00\x1f\u2028"\\/'}, '{"s":"\\u0000\\u001f\u2028\\"\\\\/"}'),
    ],
)
def test_known_canonical_forms(args: dict[str, Any], text: str) -> None:
    assert jcs(args) == text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**53, -(2**64), "\ud800"])
def test_values_outside_i_json_are_not_hashed(bad: Any) -> None:
    with pytest.raises(ValueError):
        jcs({"v": bad})


def test_a_record_from_before_keeps_its_hash() -> None:
    """Records without `args_hash_alg` were hashed over orjson's sorted JSON; that is still computable."""
    args = {"amount": 850.0, "to": "bob@acme.com"}
    old = hashlib.sha256(json.dumps(args, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert legacy_args_hash(args) == old != args_hash(args)  # 850.0 is written 850 by JCS


def test_a_record_from_before_with_a_huge_integer_keeps_its_hash() -> None:
    args = {"id": 2**70}
    old = hashlib.sha256(json.dumps(args, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert legacy_args_hash(args) == old
