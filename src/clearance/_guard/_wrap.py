"""`guard_tool` and `@guard`: wrapping a function so every call goes through the governor."""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .._context import get_session
from ..errors import ConfigurationError, ToolCallBlocked
from ..policy import Effect
from . import _runtime
from ._backend import Backend
from ._binding import Binder
from ._governor import Approved, PendingApproval, Ticket

F = TypeVar("F", bound=Callable[..., Any])


OnPending = Callable[[PendingApproval], None]


def _begin(
    name: str, binder: Binder, args: tuple[Any, ...], kwargs: dict[str, Any], on_pending: OnPending | None
) -> tuple[Backend, Ticket]:
    """Decide and record the call; raise if blocked; announce an approval it must wait for."""
    governor = _runtime.current()
    ticket = governor.begin(name, binder.bind(args, kwargs), get_session())
    decision = ticket.decision
    if decision.effect is Effect.BLOCK:
        raise ToolCallBlocked(ticket.tool, decision.reason, decision.rule_ids, ticket.call_id)
    if on_pending is not None and ticket.pending is not None:
        on_pending(ticket.pending)
    return governor, ticket


_current_approval: contextvars.ContextVar[Approved | None] = contextvars.ContextVar("clearance_approval", default=None)


def current_approval() -> Approved | None:
    """The approval the running tool call was approved under: who, their note, edited arguments.

    None outside a guarded tool's body, and in calls that needed no approval.
    """
    return _current_approval.get()


def _as_approved(
    binder: Binder, ticket: Ticket, args: tuple[Any, ...], kwargs: dict[str, Any], approved: Approved | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments to run with: the call's own, or the approver's edit of them."""
    if approved is None or approved.args is None:
        return args, kwargs
    return binder.rebuild(args, kwargs, binder.bind(args, kwargs), approved.args)


def guard_tool(name: str, fn: F, *, on_pending: OnPending | None = None) -> F:
    """Govern `fn` as the tool `name`: every call is decided by policy and recorded first.

    The returned function has `fn`'s signature, docstring and type hints, so frameworks still
    derive the same tool schema. Sync functions stay sync; async functions are awaited and
    wait for approvals without blocking the event loop.

    Args:
        name: The tool name policies refer to.
        fn: The function that does the work.
        on_pending: Called with a `PendingApproval` when a call needs a human, after the
            approval is recorded and before the call waits (to tell someone where to decide).

    Returns:
        The governed function.

    Raises:
        ConfigurationError: `name` is empty or taken by another function, or `fn` is not callable.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("a guarded tool needs a non-empty name")
    if not callable(fn):
        raise ConfigurationError(f"cannot guard {fn!r} as {name!r}: it is not callable")
    binder = Binder(fn)
    _runtime.register(name, fn, binder)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def governed_async(*args: Any, **kwargs: Any) -> Any:
            governor, ticket = _begin(name, binder, args, kwargs, on_pending)
            approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
            started = time.perf_counter()
            token = _current_approval.set(approved)
            try:
                call_args, call_kwargs = _as_approved(binder, ticket, args, kwargs, approved)
                result = await fn(*call_args, **call_kwargs)
            except BaseException as exc:
                governor.finish(ticket, error=exc, duration_s=time.perf_counter() - started)
                raise
            finally:
                _current_approval.reset(token)
            governor.finish(ticket, error=None, duration_s=time.perf_counter() - started, result=result)
            return result

        governed_async.__clearance_tool__ = name  # type: ignore[attr-defined]
        return governed_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def governed(*args: Any, **kwargs: Any) -> Any:
        governor, ticket = _begin(name, binder, args, kwargs, on_pending)
        if ticket.approval_id is None:  # the hot path: no approval, nothing to set up
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                governor.finish(ticket, error=exc, duration_s=time.perf_counter() - started)
                raise
            governor.finish(ticket, error=None, duration_s=time.perf_counter() - started)
            return result
        approved = governor.wait(ticket)
        started = time.perf_counter()
        token = _current_approval.set(approved)
        try:
            call_args, call_kwargs = _as_approved(binder, ticket, args, kwargs, approved)
            result = fn(*call_args, **call_kwargs)
        except BaseException as exc:
            governor.finish(ticket, error=exc, duration_s=time.perf_counter() - started)
            raise
        finally:
            _current_approval.reset(token)
        governor.finish(ticket, error=None, duration_s=time.perf_counter() - started, result=result)
        return result

    governed.__clearance_tool__ = name  # type: ignore[attr-defined]
    return governed  # type: ignore[return-value]


@overload
def guard(fn: F, /) -> F: ...
@overload
def guard(*, name: str | None = None, on_pending: OnPending | None = None) -> Callable[[F], F]: ...


def guard(
    fn: F | None = None, /, *, name: str | None = None, on_pending: OnPending | None = None
) -> F | Callable[[F], F]:
    """Decorator form of `guard_tool`; bare (`@guard`) or with options (`@guard(name="refund")`).

    The tool name defaults to the function's `__name__`.
    """

    def decorate(f: F) -> F:
        return guard_tool(name or str(getattr(f, "__name__", "")), f, on_pending=on_pending)

    return decorate(fn) if fn is not None else decorate
