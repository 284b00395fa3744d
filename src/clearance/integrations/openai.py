"""Raw `openai` tool-call loops: an executor and usage recording.

The executor runs the model's tool calls through the guard; `record` records a chat
completion's usage.

```python
from clearance.integrations.openai import record, run_tool_calls

response = record(client.chat.completions.create(model=..., messages=messages, tools=schemas))
message = response.choices[0].message
messages.append(message)
messages += run_tool_calls(message.tool_calls, {"issue_refund": issue_refund})
```

`run_tool_calls` governs each call (deciding, recording, waiting for approvals) and returns the
`{"role": "tool", ...}` messages to send back: a blocked or denied call's message carries the
reason, so the model can tell the user. Tools are called with the model's JSON arguments; a
function already guarded with `@clearance.guard` is governed once, not twice.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._guard._wrap import guard_tool
from .._usage import record_response_usage
from ..errors import ApprovalError, ToolCallBlocked

_wrapped: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Any]] = weakref.WeakKeyDictionary()


def _governed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` governed as `name`: as it is when already guarded, else wrapped once and kept."""
    if getattr(fn, "__clearance_tool__", None):
        return fn
    governed = _wrapped.get(fn)
    if governed is None:
        governed = _wrapped[fn] = guard_tool(name, fn)
    return governed


def run_tool_calls(tool_calls: Sequence[Any] | None, tools: Mapping[str, Callable[..., Any]]) -> list[dict[str, Any]]:
    """Run a chat completion's tool calls through Clearance; the tool messages to send back."""
    out: list[dict[str, Any]] = []
    for call in tool_calls or ():
        function = call.function if hasattr(call, "function") else call["function"]
        call_id = call.id if hasattr(call, "id") else call["id"]
        name = function.name if hasattr(function, "name") else function["name"]
        raw = function.arguments if hasattr(function, "arguments") else function["arguments"]
        fn = tools.get(name)
        if fn is None:
            content = f"Error: there is no tool called {name!r}"
        else:
            try:
                args = json.loads(raw or "{}")
                if not isinstance(args, dict):
                    raise ValueError("the arguments are not a JSON object")
                content = _text(_governed(name, fn)(**args))
            except ToolCallBlocked as exc:
                content = f"Blocked by policy: {exc.reason}"
            except ApprovalError as exc:
                content = f"Not approved: {exc}"
            except (ValueError, TypeError) as exc:
                content = f"Error: {name} could not be called with {raw!r}: {exc}"
        out.append({"role": "tool", "tool_call_id": call_id, "content": content})
    return out


def _text(result: Any) -> str:
    return result if isinstance(result, str) else json.dumps(result, default=str)


def record(response: Any) -> Any:
    """Record a chat completion's usage (model, tokens, cost) in the current session; return it."""
    record_response_usage(response)
    return response
