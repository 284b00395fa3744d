"""Logic that does I/O, written once for blocking and for async callers.

The logic is a generator (`Steps`): it yields each `Step` it needs done and is sent the step's
result, or has the step's error raised where it yielded. `run` does the steps with blocking
calls, in the calling thread and with no event loop; `arun` awaits them, so the loop runs on.
A generator runs in the context of whoever drives it, so context variables it sets (the
approval of `current_approval()`) hold while its later steps run. `_backend.drive` and
`adrive` do the same for the wait alone, whose steps are polls.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Steps = Generator["Step[Any]", Any, R]


@dataclass(frozen=True, slots=True)
class Step(Generic[T]):
    """One thing to do: `blocking()` for the blocking driver, `awaiting()` for the async one."""

    blocking: Callable[[], T]
    awaiting: Callable[[], Awaitable[T]]


def off_loop(fn: Callable[..., T], *args: Any) -> Step[T]:
    """A blocking call: made in place, or on a worker thread from async code."""
    call = functools.partial(fn, *args)
    return Step(call, functools.partial(asyncio.to_thread, call))


def whole(steps: Steps[T]) -> Step[T]:
    """`steps` as one step, run by its own driver: a StopIteration it raises arrives as itself."""
    return Step(functools.partial(run, steps), functools.partial(arun, steps))


def run(steps: Steps[R]) -> R:
    """Do `steps` with blocking calls; return what they return."""
    driving = _Driving(steps)
    while (step := driving.next()) is not None:
        try:
            driving.sent(step.blocking())
        except BaseException as exc:  # raised where the logic yielded the step, to handle or pass on
            driving.thrown(exc)
    return driving.result


async def arun(steps: Steps[R]) -> R:
    """`run`, awaiting each step."""
    driving = _Driving(steps)
    while (step := driving.next()) is not None:
        try:
            driving.sent(await step.awaiting())
        except BaseException as exc:
            driving.thrown(exc)
    return driving.result


class _Driving(Generic[R]):
    """Where a driver is in `steps`: what to give them next, and what they returned."""

    def __init__(self, steps: Steps[R]) -> None:
        self.steps = steps
        self.give: Callable[[Any], Step[Any]] = steps.send
        self.value: Any = None

    def next(self) -> Step[Any] | None:
        """The next step, given the last one's outcome; None once the steps have returned (`result`)."""
        try:
            return self.give(self.value)
        except StopIteration as done:
            self.result: R = done.value
            return None
        except RuntimeError as error:
            # PEP 479 turns a step's StopIteration that leaves a generator into RuntimeError: undone here.
            if isinstance(self.value, StopIteration) and error.__cause__ is self.value:
                raise self.value from None
            raise

    def sent(self, value: Any) -> None:
        """The step returned `value`."""
        self.give, self.value = self.steps.send, value

    def thrown(self, error: BaseException) -> None:
        """The step raised `error`."""
        self.give, self.value = self.steps.throw, error
