"""Raw `anthropic` tool-use loops: an executor and usage recording.

```python
from clearance.integrations.anthropic import record, run_tool_uses

message = record(client.messages.create(model=..., messages=messages, tools=schemas, max_tokens=1024))
messages.append({"role": "assistant", "content": message.content})
messages.append({"role": "user", "content": run_tool_uses(message.content, {"issue_refund": issue_refund})})
```

`run_tool_uses` governs each `tool_use` block (deciding, recording, waiting for approvals) and
returns the `tool_result` blocks to send back; a blocked or denied call's block has `is_error`
and carries the reason, so the model can tell the user. A function already guarded with
`@clearance.guard` is governed once. `record` records a message's model, tokens (cache reads
and writes included) and cost in the current session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._usage import record_usage
from ._loops import dispatch


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def run_tool_uses(content: Sequence[Any] | None, tools: Mapping[str, Callable[..., Any]]) -> list[dict[str, Any]]:
    """Run a message's `tool_use` blocks through Clearance; the `tool_result` blocks to send back."""
    out: list[dict[str, Any]] = []
    for block in content or ():
        if _get(block, "type") != "tool_use":
            continue
        args = _get(block, "input")
        if not isinstance(args, dict):
            text, error = f"Error: the input of {_get(block, 'name')} is not an object", True
        else:
            text, error = dispatch(str(_get(block, "name")), args, tools)
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": _get(block, "id"), "content": text}
        if error:
            result["is_error"] = True
        out.append(result)
    return out


def record(message: Any) -> Any:
    """Record a message's usage (model, tokens, cost) in the current session; return it.

    Anthropic counts cache reads and cache writes apart from `input_tokens`; all three are
    input, and the cache reads are recorded as its cached part.
    """
    usage = _get(message, "usage")
    if usage is not None:
        read = _int(_get(usage, "cache_read_input_tokens"))
        written = _int(_get(usage, "cache_creation_input_tokens"))
        record_usage(
            str(_get(message, "model") or "unknown"),
            _int(_get(usage, "input_tokens")) + read + written,
            _int(_get(usage, "output_tokens")),
            read,
            provider="anthropic",
        )
    return message


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
