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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._usage import record_response_usage
from ._common import parse_json_args
from ._loops import dispatch


def run_tool_calls(tool_calls: Sequence[Any] | None, tools: Mapping[str, Callable[..., Any]]) -> list[dict[str, Any]]:
    """Run a chat completion's tool calls through Clearance; the tool messages to send back."""
    out: list[dict[str, Any]] = []
    for call in tool_calls or ():
        function = call.function if hasattr(call, "function") else call["function"]
        call_id = call.id if hasattr(call, "id") else call["id"]
        name = function.name if hasattr(function, "name") else function["name"]
        raw = function.arguments if hasattr(function, "arguments") else function["arguments"]
        try:
            args = parse_json_args(raw)
        except ValueError as exc:
            content = f"Error: {name} could not be called with {raw!r}: {exc}"
        else:
            content, _ = dispatch(name, args, tools)
        out.append({"role": "tool", "tool_call_id": call_id, "content": content})
    return out


def record(response: Any) -> Any:
    """Record a chat completion's usage (model, tokens, cost) in the current session; return it."""
    record_response_usage(response)
    return response
