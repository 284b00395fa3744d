"""What the budget tests share: a store on SQLite or PostgreSQL, prices, approvers, waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import clearance
from clearance._decisions import Decider
from clearance._guard import _runtime
from clearance._guard._governor import Governor
from clearance._store import Approval
from clearance._store import _approvals as approvals
from tests._wait import until

# One input token of `scripted` costs $0.000001: a million cost $1.
PRICES = {"scripted": {"input_per_mtok": 1, "output_per_mtok": 1}}
FINANCE = Decider("user:fay", frozenset({"approver", "finance"}))
LEAD = Decider("user:lee", frozenset({"approver", "lead"}))


def spend(usd: float, session: str | None = None) -> None:
    """Record model usage that costs `usd` (in `session`, default the current one)."""
    clearance.record_usage("scripted", round(usd * 1_000_000), 0, session=session)


def governor() -> Governor:
    current = _runtime.current()
    assert isinstance(current, Governor)
    return current


def pending(count: int = 1) -> list[Approval]:
    """Wait until `count` approvals are pending; return them."""
    db = governor().db
    until(lambda: len(approvals.listing(db)) >= count, f"{count} pending approval(s)")
    found = approvals.listing(db)
    assert len(found) == count, found
    return found


class InThread:
    """Run `fn` in a thread (in `session`); its result or error once it ends."""

    def __init__(self, fn: Callable[[], Any], session: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            with clearance.session(session):
                try:
                    self.result = fn()
                except BaseException as exc:
                    self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def outcome(self, timeout: float = 15) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call is still waiting"
        if self.error is not None:
            raise self.error
        return self.result
