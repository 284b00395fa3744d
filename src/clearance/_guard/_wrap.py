"""`guard_tool` and `@guard`: wrapping a function so every call goes through the governor."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .._context import get_session
from .._names import MODEL_CALL, fold_tool, tool_name, tool_problem
from ..errors import ConfigurationError, ToolCallBlocked
from ..policy import Effect
from . import _modes, _runtime
from ._backend import Backend
from ._binding import Binder
from ._modes import Mode
from ._recording import Recording
from ._resume import Callbacks, OnApproval, OnDenial, set_callbacks
from ._steps import Step, Steps, arun, run
from ._tickets import Approved, PendingApproval, Ticket

F = TypeVar("F", bound=Callable[..., Any])


OnPending = Callable[[PendingApproval], None]


def _begin(
    name: str,
    binder: Binder,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    on_pending: OnPending | None,
    mode: Mode,
    webhook_url: str | None,
) -> tuple[Backend, Ticket]:
    """Decide and record the call; raise if blocked; announce an approval it must wait for.

    Raises:
        ConfigurationError: Webhook mode with no webhook URL (nothing would hear the decision).
    """
    governor = _runtime.current()
    url = None
    if mode == "webhook":
        url = webhook_url or governor.settings.webhook_url
        if url is None:
            raise ConfigurationError(
                f"{name}: webhook mode needs a URL: guard(..., webhook_url=...) or CLEARANCE_WEBHOOK_URL"
            )
    ticket = governor.begin(name, binder.bind(args, kwargs), get_session(), mode, url)
    decision = ticket.decision
    if decision.effect is Effect.BLOCK:
        raise ToolCallBlocked(ticket.tool, decision.reason, decision.rule_ids, ticket.call_id)
    if on_pending is not None and ticket.pending is not None:
        on_pending(ticket.pending)
    return governor, ticket


def _as_approved(
    binder: Binder, args: tuple[Any, ...], kwargs: dict[str, Any], approved: Approved | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments to run with: the call's own, or the approver's edit of them."""
    if approved is None or approved.args is None:
        return args, kwargs
    return binder.rebuild(args, kwargs, binder.bind(args, kwargs), approved.args)


def guard_tool(
    name: str,
    fn: F,
    *,
    on_pending: OnPending | None = None,
    approval_mode: Mode = "wait",
    on_approval: OnApproval | None = None,
    on_denial: OnDenial | None = None,
    webhook_url: str | None = None,
) -> F:
    """Govern `fn` as the tool `name`: every call is decided by policy and recorded first.

    The returned function has `fn`'s signature, docstring and type hints, so frameworks still
    derive the same tool schema. Sync functions stay sync; async functions are awaited and
    wait for approvals without blocking the event loop.

    Args:
        name: The tool name policies refer to (compared in lower case).
        fn: The function that does the work.
        on_pending: Called with a `PendingApproval` when a call needs a human, after the
            approval is recorded and before the call waits (to tell someone where to decide).
        approval_mode: `wait` (the call waits for the decision) or `async` (the call returns
            its `PendingApproval` at once; once decided, the tool runs and `on_approval` gets
            its result, or `on_denial` gets the denial, the timeout or the tool's error). A
            `with clearance.approval_mode(...)` block overrides it per call.
            `webhook` returns the `PendingApproval` too, and the decision is POSTed, signed, to
            `webhook_url`, whose handler (`clearance.handle_webhook`) finishes the call.
        on_approval: Async and webhook modes: called with the result of an approved call, once.
        on_denial: Async and webhook modes: called with why a call did not complete, once.
        webhook_url: Webhook mode: where the decision is POSTed (default: the configured
            `webhook_url`).

    Returns:
        The governed function.

    Raises:
        ConfigurationError: `name` is not a tool name (ASCII letters, digits, `_ . : / ' -`; see
            the README's security notes) or is taken by another function, `fn` is not callable,
            or the mode is unknown.
    """
    problem = tool_problem(name)
    if problem is None and fold_tool(name) == MODEL_CALL:
        problem = f"{MODEL_CALL!r} is reserved for Clearance's model-call gate"
    if problem is not None:
        raise ConfigurationError(f"cannot guard {fn!r}: {problem}")
    name = tool_name(name)  # policies, records and approvals know it in lower case
    if not callable(fn):
        raise ConfigurationError(f"cannot guard {fn!r} as {name!r}: it is not callable")
    default_mode = _modes.checked(approval_mode)
    binder = Binder(fn)
    _runtime.register(name, fn, binder)
    if on_approval is not None or on_denial is not None:
        set_callbacks(name, Callbacks(on_approval, on_denial))

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def governed_async(*args: Any, **kwargs: Any) -> Any:
            mode = _modes.mode_for(default_mode)
            governor, ticket = _begin(name, binder, args, kwargs, on_pending, mode, webhook_url)
            if ticket.approval_id is None:  # the hot path: no approval, no driver
                with Recording(governor, ticket, None) as recording:
                    return recording.done(await fn(*args, **kwargs))
            call = _Call(governor, ticket, fn, binder, args, kwargs)
            return await arun(_put_to_approval(call, mode, _modes.finish_later_async))

        governed_async.__clearance_tool__ = name  # type: ignore[attr-defined]
        return governed_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def governed(*args: Any, **kwargs: Any) -> Any:
        mode = _modes.mode_for(default_mode)
        governor, ticket = _begin(name, binder, args, kwargs, on_pending, mode, webhook_url)
        if ticket.approval_id is None:  # the hot path: no approval, nothing to set up
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                governor.finish(ticket, error=exc, duration_s=time.perf_counter() - started)
                raise
            governor.finish(ticket, error=None, duration_s=time.perf_counter() - started)
            return result
        return run(_put_to_approval(_Call(governor, ticket, fn, binder, args, kwargs), mode, _modes.finish_later))

    governed.__clearance_tool__ = name  # type: ignore[attr-defined]
    return governed  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Call:
    """A decided call of a governed function, as it was made."""

    governor: Backend
    ticket: Ticket
    fn: Callable[..., Any]
    binder: Binder
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def body(self, approved: Approved) -> Steps[Any]:
        """Run the call (as the approver edited it) with `current_approval()` set, and record its outcome.

        An edit that does not fit the function fails the call, recorded like any other failure.
        An async function's call is a coroutine, awaited by the async driver.
        """
        with Recording(self.governor, self.ticket, approved) as recording:
            call_args, call_kwargs = _as_approved(self.binder, self.args, self.kwargs, approved)
            call = functools.partial(self.fn, *call_args, **call_kwargs)
            return recording.done((yield Step(call, call)))


def _put_to_approval(call: _Call, mode: Mode, later: Callable[[Backend, Ticket, _modes.Body], None]) -> Steps[Any]:
    """A call put to approval, from here on: return its `PendingApproval`, or wait and run it.

    In webhook mode the webhook's handler finishes the call, in async mode `later` does; in wait
    mode the call waits for the decision and then runs.
    """
    ticket = call.ticket
    if mode == "webhook":
        return ticket.pending  # the webhook's handler finishes it
    if mode == "async":
        later(call.governor, ticket, call.body)
        return ticket.pending
    approved = yield _modes.decision(call.governor, ticket)
    return (yield from call.body(approved))


@overload
def guard(fn: F, /) -> F: ...
@overload
def guard(
    *,
    name: str | None = None,
    on_pending: OnPending | None = None,
    approval_mode: Mode = "wait",
    on_approval: OnApproval | None = None,
    on_denial: OnDenial | None = None,
    webhook_url: str | None = None,
) -> Callable[[F], F]: ...


def guard(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    on_pending: OnPending | None = None,
    approval_mode: Mode = "wait",
    on_approval: OnApproval | None = None,
    on_denial: OnDenial | None = None,
    webhook_url: str | None = None,
) -> F | Callable[[F], F]:
    """Decorator form of `guard_tool`; bare (`@guard`) or with options (`@guard(name="refund")`).

    The tool name defaults to the function's `__name__`.
    """

    def decorate(f: F) -> F:
        return guard_tool(
            name or str(getattr(f, "__name__", "")),
            f,
            on_pending=on_pending,
            approval_mode=approval_mode,
            on_approval=on_approval,
            on_denial=on_denial,
            webhook_url=webhook_url,
        )

    return decorate(fn) if fn is not None else decorate
