"""Retrying: one policy, tenacity's exponential backoff with full jitter.

Every loop that talks to something that can fail (the server, the change feed, a sink, a
channel) retries through it.

Full jitter spreads the retries of many agents that lost the same server at the same moment,
instead of bringing them back together. A loop that runs until it is stopped passes its stop
event: the wait between attempts ends as soon as it is set.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import tenacity

Retryable = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def _options(
    on: Retryable,
    *,
    first: float,
    most: float,
    stop: threading.Event | None,
    give_up: Callable[[], bool] | None,
    log: logging.Logger | None,
    what: str,
) -> dict[str, object]:
    retry = tenacity.retry_if_exception(on) if _is_predicate(on) else tenacity.retry_if_exception_type(on)  # type: ignore[arg-type]
    stops: list[tenacity.stop.stop_base] = []
    hooks: list[Callable[[tenacity.RetryCallState], None]] = []
    if stop is not None:
        stops.append(tenacity.stop_when_event_set(stop))
    if give_up is not None:
        stops.append(_GiveUp(give_up))
    if log is not None:
        hooks.append(_logger(log, what))
    options: dict[str, object] = {
        "retry": retry,
        "wait": tenacity.wait_random_exponential(multiplier=first, max=most),
        "stop": tenacity.stop_any(*stops) if stops else tenacity.stop_never,
        "reraise": True,
    }
    if stop is not None:
        sleep = _Interruptible(stop)
        hooks.append(sleep.remember)
        options["sleep"] = sleep
    if hooks:
        options["before_sleep"] = _each(hooks)
    return options


def _each(hooks: list[Callable[[tenacity.RetryCallState], None]]) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        for hook in hooks:
            hook(state)

    return before_sleep


def _is_predicate(on: Retryable) -> bool:
    return not isinstance(on, tuple) and not (isinstance(on, type) and issubclass(on, BaseException))


class _GiveUp(tenacity.stop.stop_base):
    """Stop when `give_up()` says so (e.g. past an approval's expiry)."""

    def __init__(self, give_up: Callable[[], bool]) -> None:
        self.give_up = give_up

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.give_up()


class _Interruptible:
    """A wait that ends when `stop` is set, raising the error retried instead of trying again."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.error: BaseException | None = None

    def remember(self, state: tenacity.RetryCallState) -> None:
        self.error = state.outcome.exception() if state.outcome is not None else None

    def __call__(self, seconds: float) -> None:
        if self.stop.wait(seconds) and self.error is not None:
            raise self.error


def _logger(log: logging.Logger, what: str) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, state.attempt_number, wait, error)

    return before_sleep


def retrying(
    on: Retryable,
    *,
    first: float = 0.5,
    most: float = 10.0,
    stop: threading.Event | None = None,
    give_up: Callable[[], bool] | None = None,
    log: logging.Logger | None = None,
    what: str = "",
) -> tenacity.Retrying:
    """Retry what raises `on` (an exception type, a tuple of them, or a predicate).

    Waits grow from about `first` seconds up to `most`, each drawn at random below the bound
    (full jitter). Gives up — re-raising the last error — when `stop` is set (ending a wait at
    once, without another attempt) or `give_up()` is true; otherwise retries forever. Any other
    exception is raised at once.

    Use as `for attempt in retrying(...): with attempt: ...`, or `retrying(...)(fn, *args)`.
    """
    options = _options(on, first=first, most=most, stop=stop, give_up=give_up, log=log, what=what)
    return tenacity.Retrying(**options)  # type: ignore[arg-type]


def aretrying(
    on: Retryable,
    *,
    first: float = 0.5,
    most: float = 10.0,
    give_up: Callable[[], bool] | None = None,
    log: logging.Logger | None = None,
    what: str = "",
) -> tenacity.AsyncRetrying:
    """`retrying` for async code: the waits are awaited (a cancelled task stops retrying)."""
    options = _options(on, first=first, most=most, stop=None, give_up=give_up, log=log, what=what)
    return tenacity.AsyncRetrying(sleep=asyncio.sleep, **options)  # type: ignore[arg-type]
