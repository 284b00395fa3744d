"""Who records a model request's usage: one `llm.call` per request, however many layers see it.

A framework integration that records usage itself (from the framework's own response objects)
runs the model request inside `owned("<framework>")`; the raw `openai`/`anthropic` client capture
underneath sees `owner()` set and records nothing for that request. Context variables follow
the request into the framework's async tasks and threads started with a copied context.

A framework that already marks its model calls in a context variable of its own (CrewAI's call
id) is asked through a probe instead (`add_probe`): no patch around each of its call sites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_owner: ContextVar[str | None] = ContextVar("clearance_usage_owner", default=None)
_probes: list[Callable[[], str | None]] = []


@contextmanager
def owned(by: str) -> Iterator[None]:
    """Model requests made inside are recorded by `by` (a framework integration), not by the raw client capture."""
    token = _owner.set(by)
    try:
        yield
    finally:
        _owner.reset(token)


def add_probe(probe: Callable[[], str | None]) -> None:
    """Also ask `probe` who owns the current model request (the integration's name, or None); once each."""
    if probe not in _probes:
        _probes.append(probe)


def owner() -> str | None:
    """The integration recording the current model request's usage, or None."""
    found = _owner.get()
    if found is None:
        for probe in _probes:
            found = probe()
            if found is not None:
                break
    return found
