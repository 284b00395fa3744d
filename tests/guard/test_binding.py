from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from clearance._guard._binding import Binder


def tool(order_id: str, amount: float = 1.0, *, note: str | None = None) -> None: ...


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        (("A",), {}, {"order_id": "A", "amount": 1.0, "note": None}),
        (("A", 2), {"note": "n"}, {"order_id": "A", "amount": 2, "note": "n"}),
        ((), {"amount": 3, "order_id": "B"}, {"order_id": "B", "amount": 3, "note": None}),
    ],
)
def test_binding_matches_the_signature(args: tuple[Any, ...], kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert Binder(tool).bind(args, kwargs) == expected


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((), {}, "missing a required argument: 'order_id'"),
        (("A", 1, 2), {}, "too many positional arguments"),
        (("A",), {"order_id": "B"}, "multiple values for argument 'order_id'"),
        (("A",), {"colour": "red"}, "got an unexpected keyword argument 'colour'"),
        (("A", 1, "n"), {}, "too many positional arguments"),
    ],
)
def test_malformed_calls_raise_what_the_function_would(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Binder(tool).bind(args, kwargs)


def test_one_unresolvable_hint_does_not_hide_the_others() -> None:
    def f(a: str, b: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    assert Binder(f).params == {"a": "string", "b": "any"}


def test_var_positional_and_keyword() -> None:
    def f(a: int, *rest: int, **extra: Any) -> None: ...

    assert Binder(f).bind((1, 2, 3), {"x": 4}) == {"a": 1, "rest": [2, 3], "x": 4}
    assert Binder(f).params is None  # **extra: parameters cannot be checked


def test_parameter_types_come_from_hints() -> None:
    def f(
        s: str, i: int, n: float, d: Decimal, b: bool, items: list[str], m: dict[str, int], o: str | None, x: Any
    ) -> None: ...

    assert Binder(f).params == {
        "s": "string",
        "i": "integer",
        "n": "number",
        "d": "number",
        "b": "boolean",
        "items": "list",
        "m": "map",
        "o": "any",
        "x": "any",
    }
