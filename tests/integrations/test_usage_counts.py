"""Token counts as frameworks hand them over — None, floats, NaN, text, huge — never fail the model call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import clearance
from clearance._guard._governor import Governor
from clearance.integrations._common import record_model_call

from ._shared import records


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ((None, 12.0, None), (0, 12, 0)),
        ((float("nan"), float("inf"), float("-inf")), (0, 0, 0)),
        (("12k", object(), True), (0, 0, 0)),
        ((10**40, -5, 10**40), (2**53, 0, 2**53)),
        ((100, 20, 500), (100, 20, 100)),  # the cached part stays within the input
    ],
    ids=["none-and-floats", "nan-and-inf", "text-object-bool", "huge-and-negative", "cached-over-input"],
)
def test_whatever_the_counts_the_call_is_recorded_readably(
    configure: Callable[..., Governor], given: tuple[Any, Any, Any], recorded: tuple[int, int, int]
) -> None:
    gov = configure()
    with clearance.session("ses-counts"):
        record_model_call("gpt-4o-mini", given[0], given[1], given[2])  # never raises
    clearance.flush()
    [call] = records(gov, "llm.call", "ses-counts")
    assert (call["input_tokens"], call["output_tokens"], call["cached_input_tokens"]) == recorded
