"""Who records a model request's usage: one `llm.call` per request, however many layers see it.

A framework integration that records usage itself (from the framework's own response objects)
runs the model request inside `owned("<framework>")`; the raw `openai`/`anthropic` client capture
underneath sees `owner()` set and records nothing for that request. Context variables follow
the request into the framework's async tasks and threads started with a copied context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_owner: ContextVar[str | None] = ContextVar("clearance_usage_owner", default=None)


@contextmanager
def owned(by: str) -> Iterator[None]:
    """Model requests made inside are recorded by `by` (a framework integration), not by the raw client capture."""
    token = _owner.set(by)
    try:
        yield
    finally:
        _owner.reset(token)


def owner() -> str | None:
    """The integration recording the current model request's usage, or None."""
    return _owner.get()
