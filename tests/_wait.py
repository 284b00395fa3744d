"""Waiting in tests for what another process or thread makes true, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(condition: Callable[[], object], what: str = "the condition", timeout: float = 15) -> None:
    """Poll `condition()` every 20 ms until it holds; fail naming `what` after `timeout` seconds.

    For conditions held elsewhere (another process's state, a sink's thread) that offer no event
    to wait on. The condition is the thing under test, so this passes only once it holds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)
