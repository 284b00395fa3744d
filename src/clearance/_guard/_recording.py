"""Running a governed call's body: `current_approval()` set while it runs, its outcome recorded once."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from .._context import APPROVAL
from ._backend import Backend
from ._tickets import Approved, Ticket

# The tool whose governed body is running here. A layer below the one that governed the call
# (an MCP client under a governed tool, a LangChain callback under the middleware) sees the
# same tool name and stands aside, so a call is decided and recorded once.
RUNNING: ContextVar[str | None] = ContextVar("clearance_running_tool", default=None)


class Recording:
    """`with Recording(...) as r: return r.done(body())` — the outcome is recorded exactly once.

    A body that raises is recorded as failed; `done(result)` records the result. Subclasses
    say what counts as a failure in a result (`outcome`).
    """

    def __init__(
        self, governor: Backend, ticket: Ticket, approved: Approved | None, *, running: str | None = None
    ) -> None:
        self.governor, self.ticket, self.approved = governor, ticket, approved
        self.running = running or ticket.tool  # the name the layers below know the tool by
        self.recorded = False

    def __enter__(self) -> Recording:
        self.started = time.perf_counter()
        self.token = APPROVAL.set(self.approved)
        self.running_token = RUNNING.set(self.running)
        return self

    def outcome(self, result: Any) -> tuple[BaseException | None, Any]:
        """The error a result stands for (None: it succeeded), and the result to record."""
        return None, result

    def done(self, result: Any) -> Any:
        """Record the body's result; return it."""
        self.recorded = True
        error, recorded = self.outcome(result)
        self.governor.finish(self.ticket, error=error, duration_s=time.perf_counter() - self.started, result=recorded)
        return result

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        APPROVAL.reset(self.token)
        RUNNING.reset(self.running_token)
        if error is not None and not self.recorded:
            self.recorded = True
            self.governor.finish(self.ticket, error=error, duration_s=time.perf_counter() - self.started)
