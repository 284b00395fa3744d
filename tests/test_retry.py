"""The one retry policy: full-jitter backoff, stopped by an event or a predicate, never retrying the wrong error."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from typing import Any

import pytest

from clearance._retry import aretrying, retrying


class Flaky:
    """Fails `times` times with `error`, then returns "ok"; counts its calls."""

    def __init__(self, times: int, error: BaseException | None = None) -> None:
        self.times, self.error, self.calls = times, error or OSError("down"), 0
        self.called = threading.Event()

    def __call__(self) -> str:
        self.calls += 1
        self.called.set()
        if self.calls <= self.times:
            raise self.error
        return "ok"


def test_waits_are_full_jitter_below_a_doubling_bound_capped_at_most() -> None:
    sleeps: list[float] = []
    fn = Flaky(12)
    assert retrying(OSError, first=0.5, most=4.0).copy(sleep=sleeps.append)(fn) == "ok"
    assert len(sleeps) == 12
    bounds = [min(0.5 * 2**n, 4.0) for n in range(12)]
    assert all(0 <= s <= bound for s, bound in zip(sleeps, bounds, strict=True))
    assert len(set(sleeps)) == 12  # drawn at random, not one fixed schedule


def test_a_stop_event_ends_the_wait_at_once_and_reraises_the_last_error() -> None:
    stop = threading.Event()
    fn = Flaky(10**6)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            retrying(OSError, first=600, most=600, stop=stop)(fn)
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert fn.called.wait(10)
    stop.set()  # the retry is waiting up to 10 minutes: only the event can end it now
    thread.join(10)
    assert not thread.is_alive() and outcome["error"] is fn.error and fn.calls == 1


def test_an_event_set_before_the_first_failure_gives_up_after_one_attempt() -> None:
    stop = threading.Event()
    stop.set()
    fn = Flaky(1)
    with pytest.raises(OSError):
        retrying(OSError, stop=stop)(fn)
    assert fn.calls == 1


def test_give_up_stops_retrying_and_reraises() -> None:
    fn = Flaky(10**6)
    sleeps: list[float] = []
    with pytest.raises(OSError, match="down"):
        retrying(OSError, give_up=lambda: fn.calls >= 3).copy(sleep=sleeps.append)(fn)
    assert fn.calls == 3 and len(sleeps) == 2


def test_other_errors_are_raised_at_once() -> None:
    sleeps: list[float] = []
    fn = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        retrying((OSError, TimeoutError)).copy(sleep=sleeps.append)(fn)
    assert fn.calls == 1 and sleeps == []


def test_a_predicate_decides_what_is_retried() -> None:
    def transient(exc: BaseException) -> bool:
        return isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED

    sleeps: list[float] = []
    retry = retrying(transient).copy(sleep=sleeps.append)
    assert retry(Flaky(2, OSError(errno.ECONNREFUSED, "refused"))) == "ok" and len(sleeps) == 2
    fatal = Flaky(1, OSError(errno.EACCES, "denied"))
    with pytest.raises(OSError, match="denied"):
        retry(fatal)
    assert fatal.calls == 1 and len(sleeps) == 2


def test_the_attempt_loop_form_and_the_log(caplog: pytest.LogCaptureFixture) -> None:
    fn = Flaky(2)
    log = logging.getLogger("clearance.test")
    with caplog.at_level(logging.WARNING, logger="clearance.test"):
        for attempt in retrying(OSError, first=0.001, most=0.001, log=log, what="shipping"):
            with attempt:
                result = fn()
    assert result == "ok"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[0].startswith("shipping failed (attempt 1, retrying in 0.0s): down")


def test_async_retries_and_a_cancelled_task_stops_retrying() -> None:
    async def main() -> None:
        sleeps: list[float] = []

        async def record(seconds: float) -> None:
            sleeps.append(seconds)

        fn = Flaky(2)

        async def call() -> str:
            return fn()

        assert await aretrying(OSError).copy(sleep=record)(call) == "ok" and len(sleeps) == 2

        down = Flaky(10**6)

        async def failing() -> str:
            return down()

        task = asyncio.create_task(aretrying(OSError, first=600, most=600)(failing))
        while not down.called.is_set():
            await asyncio.sleep(0)  # let the task make its first attempt
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert down.calls == 1

    asyncio.run(main())
