"""Approval modes: `wait` and `async`.

In `wait` mode the call blocks (or awaits) until the decision. In `async` mode it returns a
`PendingApproval` at once; the decision finishes it later and reports to callbacks.

An async-mode call is finished by whichever process gets there first: the agent's own background
waiter (woken by push, like `wait`), or — if that process died — `clearance worker` /
`run_due()` in any process that guards the same tool. Claims make each outcome happen once: the
tool runs once, `on_approval` or `on_denial` is called once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Literal

from ..errors import ApprovalAlreadyExecuted, ApprovalError, ClearanceError, ConfigurationError
from . import _runtime
from ._backend import Backend
from ._resume import callbacks_of, resume
from ._steps import Step, Steps, arun, off_loop, run, whole
from ._tickets import Approved, Ticket

Mode = Literal["wait", "async", "webhook"]
MODES = ("wait", "async", "webhook")
log = logging.getLogger("clearance")
_MODE: ContextVar[Mode | None] = ContextVar("clearance_approval_mode", default=None)
Body = Callable[[Approved], Steps[Any]]  # runs the approved call and records it
_tasks: set[asyncio.Task[Any]] = set()  # async-mode completions in flight (kept from the collector)


@contextlib.contextmanager
def approval_mode(mode: Mode) -> Iterator[None]:
    """Use `mode` for the approvals of the calls made inside the block (overrides the tool's).

    Raises:
        ConfigurationError: An unknown mode.
    """
    token = _MODE.set(checked(mode))
    try:
        yield
    finally:
        _MODE.reset(token)


def checked(mode: str) -> Mode:
    """`mode`, if it is one.

    Raises:
        ConfigurationError: An unknown mode.
    """
    if mode not in MODES:
        raise ConfigurationError(f"unknown approval mode {mode!r}: use {' or '.join(MODES)}")
    return mode  # type: ignore[return-value]


def mode_for(default: Mode) -> Mode:
    """The mode of a call now: the enclosing `approval_mode`, else the tool's."""
    return _MODE.get() or default


def report(tool: str, result: Any = None, error: BaseException | None = None) -> None:
    callbacks = callbacks_of(tool)
    target = callbacks.on_denial if error is not None else callbacks.on_approval
    if target is None:
        if error is not None:
            log.warning("async-mode %s call did not complete: %s", tool, error)
        return
    try:
        target(error if error is not None else result)
    except Exception:
        log.exception("the %s callback of %s raised", "on_denial" if error is not None else "on_approval", tool)


def decision(backend: Backend, ticket: Ticket) -> Step[Approved]:
    """The wait for the decision on `ticket`: its approval once the call may run (and is claimed here)."""
    return Step(functools.partial(backend.wait, ticket), functools.partial(backend.wait_async, ticket))


def finish_later(backend: Backend, ticket: Ticket, body: Body) -> None:
    """Wait for the decision on a background thread, then run the call (`body(approved)`) and report."""
    threading.Thread(
        target=run,
        args=(_finishing(backend, ticket, body),),
        name=f"clearance-approval-{ticket.approval_id}",
        daemon=True,
    ).start()


def finish_later_async(backend: Backend, ticket: Ticket, body: Body) -> None:
    """`finish_later` as a task on the running event loop (for async tools)."""
    task = asyncio.get_running_loop().create_task(arun(_finishing(backend, ticket, body)))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _finishing(backend: Backend, ticket: Ticket, body: Body) -> Steps[None]:
    """The background completion of an async-mode call: wait, claim, run, report; or report the denial."""
    assert ticket.approval_id is not None
    try:
        approved = yield decision(backend, ticket)
    except ApprovalAlreadyExecuted:
        return
    except ApprovalError as exc:  # denied, timed out, cancelled
        if (yield off_loop(backend.claim_denial, ticket.approval_id)):
            report(ticket.tool, error=exc)
        return
    except ClearanceError as exc:  # the store or server: left for a worker to finish
        log.warning("async-mode %s call left for a worker: %s", ticket.tool, exc)
        return
    try:
        result = yield whole(body(approved))
    except Exception as exc:
        report(ticket.tool, error=exc)
        return
    report(ticket.tool, result=result)


def run_due() -> int:
    """Finish every decided async-mode call of the tools guarded in this process; returns how many.

    Approved calls run (once, across processes) and go to `on_approval`; denied or timed-out
    ones go to `on_denial`. For `clearance worker`, or to call from your own scheduler.
    """
    backend = _runtime.current()
    handled = 0
    for approval_id, tool in backend.due(sorted(_runtime._tools)):
        try:
            outcome, _, _ = finish_decided(approval_id, tool)
        except ClearanceError as exc:  # the store or server: left for the next pass
            log.warning("cannot finish %s now: %s", approval_id, exc)
            continue
        handled += outcome != "duplicate"
    return handled


Finished = Literal["executed", "denied", "failed", "duplicate"]


def finish_decided(approval_id: str, tool: str) -> tuple[Finished, Any, BaseException | None]:
    """Finish a decided call here, once: run it if approved, else report the denial.

    Returns what happened, with the call's result or the error reported to the tool's
    callbacks: `executed`, `denied` (or timed out, or cancelled), `failed` (the tool raised;
    recorded as failed), or `duplicate` (another process or delivery finished it).

    Raises:
        ClearanceError: The store or server could not be used, or the tool is not guarded here.
    """
    try:
        result = resume(approval_id)
    except ApprovalAlreadyExecuted:
        return "duplicate", None, None
    except ApprovalError as exc:  # denied, timed out or cancelled
        if not _runtime.current().claim_denial(approval_id):
            return "duplicate", None, None
        report(tool, error=exc)
        return "denied", None, exc
    except ClearanceError:
        raise
    except Exception as exc:  # the tool raised: recorded as failed, reported once
        report(tool, error=exc)
        return "failed", None, exc
    report(tool, result=result)
    return "executed", result, None
