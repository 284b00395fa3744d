"""Usage of the raw `openai` and `anthropic` clients, recorded without a call to `record`.

Both SDKs turn every HTTP response into its Python value in one method, the response's `parse()`
(`APIResponse`, `AsyncAPIResponse`, and `LegacyAPIResponse` behind openai's `with_raw_response`):
`client.chat.completions.create(...)` calls it, and so does a `with_raw_response` or
`with_streaming_response` caller. For a model request (a POST to one of the SDK's model endpoints)
the parsed response's usage is recorded there, one `llm.call`; a stream is observed instead — its
iterator wrapped, every event passed on untouched — and recorded when it ends, fails, is closed
(`Stream.close`, which `with` and the SDKs' stream helpers call) or is dropped, with what it
carried by then.

Nothing is recorded for a request made inside `owned(...)` (a framework records it), when
Clearance is not configured or `capture_usage` is off, or twice for one parsed object (`recorded(obj)`: the explicit
`record` helpers skip what was recorded here). A failure to record is logged, never raised.
"""

from __future__ import annotations

import contextvars
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from .._guard import _runtime
from .._usage import record_usage
from ._common import record_model_call
from ._patching import wrap_method
from ._usage_owner import owner

log = logging.getLogger("clearance")


@dataclass(frozen=True, slots=True)
class Counted:
    """One model request's usage, as Clearance records it (cached and reasoning tokens are parts of their totals)."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


class Tally(Protocol):
    """What a stream's events said about its usage so far."""

    def seen(self, event: Any) -> bool:
        """Take in one event; whether it carried usage."""
        ...

    def counted(self) -> Counted | None:
        """The usage seen, or None when no event carried any."""
        ...


@dataclass(frozen=True, slots=True)
class Sdk:
    """What the capture needs to know about one client SDK."""

    provider: str  # named only for requests to `host`: other hosts serve other providers' models
    host: str
    endpoints: tuple[str, ...]  # path endings of the POSTs that are model requests
    streams: tuple[type, ...]  # the SDK's Stream classes
    counted: Callable[[Any], Counted | None]  # a parsed response's usage
    tally: Callable[[], Tally]  # a fresh tally for one stream


# -- what was recorded -----------------------------------------------------------------------------

_marks: dict[int, weakref.ref[Any]] = {}  # id → the object recorded, while it lives
_MARKS_KEEP = 10_000


def mark(obj: Any) -> None:
    """Remember that `obj`'s usage was recorded (objects that take no weak reference, like dicts, are not)."""
    key = id(obj)
    try:
        _marks[key] = weakref.ref(obj, partial(_forget, key))
    except TypeError:
        return
    if len(_marks) > _MARKS_KEEP:  # objects an application keeps alive: forget the oldest
        try:
            del _marks[next(iter(_marks))]
        except (StopIteration, RuntimeError, KeyError):  # another thread changed it meanwhile
            pass


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    if _marks.get(key) is ref:
        _marks.pop(key, None)


def recorded(obj: Any) -> bool:
    """Whether the usage `obj` carries was recorded already (by the capture or an explicit `record`)."""
    ref = _marks.get(id(obj))
    return ref is not None and ref() is obj


def record_once(obj: Any, usage_of: Callable[[Any], Counted | None], provider: str) -> Any:
    """An explicit `record(response)`: record `obj`'s usage unless the capture (or a `record`) did; return it."""
    if not recorded(obj):
        counted = usage_of(obj)
        if counted is not None:
            record_usage(
                counted.model,
                counted.input_tokens,
                counted.output_tokens,
                counted.cached_input_tokens,
                counted.reasoning_tokens,
                provider=provider,
            )
            mark(obj)
    return obj


def _record(counted: Counted, provider: str | None, started: float | None) -> None:
    record_model_call(
        counted.model,
        counted.input_tokens,
        counted.output_tokens,
        counted.cached_input_tokens,
        counted.reasoning_tokens,
        provider=provider,
        started=started,
    )


def _started(http_response: Any, fallback: float | None) -> float | None:
    """The request's start on the `time.perf_counter()` clock: now less what httpx measured, once the body is read."""
    try:
        return time.perf_counter() - float(http_response.elapsed.total_seconds())
    except Exception:  # not read or closed yet
        return fallback


# -- the hooks -------------------------------------------------------------------------------------


def _parsed(sdk: Sdk, response: Any, result: Any) -> None:
    """A response was parsed: record a model request's usage, or watch its stream."""
    governor = _runtime._current
    if governor is None or not governor.settings.capture_usage or owner() is not None or recorded(result):
        return
    options = response._options
    if options.method.lower() != "post" or not options.url.partition("?")[0].endswith(sdk.endpoints):
        return
    mark(result)
    provider = sdk.provider if response._client.base_url.host == sdk.host else None
    if isinstance(result, sdk.streams):
        _watch(result, sdk.tally(), provider)
        return
    counted = sdk.counted(result)
    if counted is not None:
        _record(counted, provider, _started(response.http_response, None))


def _parse_hook(sdk: Sdk) -> Callable[..., Any]:
    def parse(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            _parsed(sdk, instance, result)
        except Exception:
            log.exception("Clearance could not capture a %s request's usage", sdk.provider)
        return result

    return parse


def _aparse_hook(sdk: Sdk) -> Callable[..., Any]:
    async def parse(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = await wrapped(*args, **kwargs)
        try:
            _parsed(sdk, instance, result)
        except Exception:
            log.exception("Clearance could not capture a %s request's usage", sdk.provider)
        return result

    return parse


# -- streams ---------------------------------------------------------------------------------------

_WATCH = "_clearance_usage_watch"


class _Watch:
    """One stream's usage: the events seen, recorded once when the stream ends or closes.

    It holds the HTTP response, never the stream (whose iterator holds it: no reference cycle),
    and records in a copy of the context the request was made in (its session), wherever the
    stream ends.
    """

    __slots__ = ("context", "done", "http_response", "parsed_at", "provider", "tally")

    def __init__(self, tally: Tally, provider: str | None, http_response: Any) -> None:
        self.tally, self.provider, self.http_response = tally, provider, http_response
        self.context = contextvars.copy_context()
        self.parsed_at = time.perf_counter()
        self.done = False

    def seen(self, event: Any) -> None:
        try:
            if self.tally.seen(event):
                mark(event)  # an integration given this event (LlamaIndex's raw chunk) records nothing more
        except Exception:
            log.exception("Clearance could not read a streamed event's usage")

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            counted = self.tally.counted()
            if counted is not None:
                started = _started(self.http_response, self.parsed_at)
                self.context.run(_record, counted, self.provider, started)
        except Exception:
            log.exception("Clearance could not record a streamed request's usage")


def _watch(stream: Any, tally: Tally, provider: str | None) -> None:
    watch = _Watch(tally, provider, stream.response)
    events = stream._iterator  # (anthropic makes it on first use)
    stream._iterator = _awatching(events, watch) if hasattr(events, "__anext__") else _watching(events, watch)
    stream.__dict__[_WATCH] = watch


def _watching(events: Iterator[Any], watch: _Watch) -> Iterator[Any]:
    try:
        for event in events:
            watch.seen(event)
            yield event
    finally:
        watch.end()


async def _awatching(events: AsyncIterator[Any], watch: _Watch) -> AsyncIterator[Any]:
    try:
        async for event in events:
            watch.seen(event)
            yield event
    finally:
        watch.end()


def _closing(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        _closed(instance)


async def _aclosing(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _closed(instance)


def _closed(stream: Any) -> None:
    watch = getattr(stream, "__dict__", {}).get(_WATCH)
    if watch is not None:
        watch.end()


def install(
    sdk: Sdk, *, responses: tuple[type, ...], async_responses: tuple[type, ...], stream: type, async_stream: type
) -> None:
    """Capture `sdk`'s usage: hook its responses' `parse` and its streams' `close` (idempotent)."""
    for cls in responses:
        wrap_method(cls, "parse", _parse_hook(sdk))
    for cls in async_responses:
        wrap_method(cls, "parse", _aparse_hook(sdk))
    wrap_method(stream, "close", _closing)
    wrap_method(async_stream, "close", _aclosing)
