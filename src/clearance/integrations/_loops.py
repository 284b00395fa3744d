"""Running a model's tool calls through the guard, for hand-written `openai` / `anthropic` loops."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .._guard._wrap import guard_tool
from ..errors import ApprovalError, ToolCallBlocked
from ._common import refusal_text

_wrapped: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Any]] = weakref.WeakKeyDictionary()


def _governed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` governed as `name`: as it is when already guarded, else wrapped once and kept."""
    if getattr(fn, "__clearance_tool__", None):
        return fn
    governed = _wrapped.get(fn)
    if governed is None:
        governed = _wrapped[fn] = guard_tool(name, fn)
    return governed


def dispatch(name: str, args: dict[str, Any], tools: Mapping[str, Callable[..., Any]]) -> tuple[str, bool]:
    """Call tool `name` with `args` through the guard: its result as text, and whether it is an error.

    Never raises for the model's mistakes or a refusal: an unknown tool, arguments the function
    does not take, a block and a denial all come back as text the model can read.
    """
    fn = tools.get(name)
    if fn is None:
        return f"Error: there is no tool called {name!r}", True
    try:
        return _text(_governed(name, fn)(**args)), False
    except (ToolCallBlocked, ApprovalError) as exc:
        return refusal_text(exc), True
    except (ValueError, TypeError) as exc:
        return f"Error: {name} could not be called with {json.dumps(args, default=str)}: {exc}", True


def _text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, default=str)
