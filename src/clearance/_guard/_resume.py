"""Running an approved call after the fact, in any process, exactly once.

The call's tool must be registered here (guarded under the same name, so importing the module
that guards it is enough). The approval id is the idempotency key: whoever claims it first runs
it; every other attempt — a second `resume`, a worker, the original agent waking late — gets
`ApprovalAlreadyExecuted`. The tool runs with the approved arguments as recorded (JSON values,
turned into the parameter's number type), and its result or error is recorded on the approval.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from . import _runtime
from ._binding import Binder
from ._recording import Recording
from ._steps import Step, Steps, arun, off_loop, run
from ._tickets import Approved, Ticket

OnApproval = Callable[[Any], Any]
OnDenial = Callable[[BaseException], Any]


@dataclass(frozen=True)
class Callbacks:
    """What a tool's async-mode calls report to, in whichever process finishes them."""

    on_approval: OnApproval | None = None
    on_denial: OnDenial | None = None


_callbacks: dict[str, Callbacks] = {}


def set_callbacks(tool: str, callbacks: Callbacks) -> None:
    """Remember a tool's callbacks by name (registered with the tool, at import)."""
    _callbacks[tool] = callbacks


def callbacks_of(tool: str) -> Callbacks:
    """A tool's callbacks (none registered: both None)."""
    return _callbacks.get(tool, Callbacks())


def resumable(tool: str) -> bool:
    """Whether `clearance worker` can finish a call of `tool` whose waiter died.

    It can when the tool is guarded with callbacks (so a worker imports its module to hear the
    outcome) and is a plain function (a method's object is not there to call it on).
    """
    found = _runtime._tools.get(tool)
    callbacks = _callbacks.get(tool)
    return found is not None and not found[1].takes_self and callbacks is not None


def _tool(name: str) -> tuple[Callable[..., Any], Binder]:
    found = _runtime._tools.get(name)
    if found is None:
        raise ConfigurationError(
            f"the tool {name!r} is not guarded in this process: import the module that guards it, then resume"
        )
    fn, binder = found
    if binder.takes_self:
        raise ConfigurationError(f"the tool {name!r} is a method: an approved call of it cannot be resumed here")
    return fn, binder


def prepare(approval_id: str) -> tuple[Ticket, Approved, dict[str, Any], Callable[..., Any], Binder]:
    """Check the approval lets its call run here, then claim it (exactly once).

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalError: Still pending, cancelled, or for other arguments; `ApprovalDenied` and
            `ApprovalTimeout` when it may not run.
        ApprovalAlreadyExecuted: It ran, or another process is running it.
        ConfigurationError: Its tool is not guarded in this process.
    """
    backend = _runtime.current()
    ticket, approved, args = backend.approved_call(approval_id)
    fn, binder = _tool(ticket.tool)  # before claiming: a claim nobody can run would strand the call
    backend.claim(ticket)
    return ticket, approved, args, fn, binder


def resume(approval_id: str) -> Any:
    """Run the approved call of `approval_id` now, in this process, and return its result.

    Works after the requesting process died; concurrent resumes run it once. For an async
    tool from synchronous code, the coroutine is run to completion here.

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalDenied: It was denied (the note says why).
        ApprovalTimeout: It expired undecided and its rule denies on timeout.
        ApprovalAlreadyExecuted: It ran, or another process is running it.
        ApprovalError: It is still pending or was cancelled.
        ConfigurationError: Its tool is not guarded in this process.
        Exception: Whatever the tool raised (recorded as the call's error).
    """
    return run(_resuming(approval_id))


async def resume_async(approval_id: str) -> Any:
    """`resume` for async code: the claim happens on a worker thread."""
    return await arun(_resuming(approval_id))


def _resuming(approval_id: str) -> Steps[Any]:
    """Claim the approved call, run it with `current_approval()` set, record its outcome."""
    ticket, approved, args, fn, binder = yield off_loop(prepare, approval_id)
    backend = _runtime.current()
    with Recording(backend, ticket, approved) as recording:
        call_args, call_kwargs = binder.call_from(args)
        call = functools.partial(fn, *call_args, **call_kwargs)
        result = recording.done((yield Step(functools.partial(_finished, call), functools.partial(_awaited, call))))
    yield off_loop(backend.flush)
    return result


def _finished(call: Callable[[], Any]) -> Any:
    """`call()`, an awaitable it returns run to completion (on an event loop of its own)."""
    result = call()
    return asyncio.run(_awaited(lambda: result)) if inspect.isawaitable(result) else result


async def _awaited(call: Callable[[], Any]) -> Any:
    """`call()`, an awaitable it returns awaited."""
    result = call()
    return await result if inspect.isawaitable(result) else result
