"""Raw `anthropic` clients: usage recorded automatically, and a tool-use executor.

After `clearance.configure()`, every Messages API request an `anthropic` client makes (sync and
async, streamed or not, `messages.stream(...)` included) is recorded in the current session: one
`llm.call` with its model, tokens (cache reads and writes included) and cost; see
`docs/usage-capture.md`.

```python
from clearance.integrations.anthropic import run_tool_uses

message = client.messages.create(model=..., messages=messages, tools=schemas, max_tokens=1024)
messages.append({"role": "assistant", "content": message.content})
messages.append({"role": "user", "content": run_tool_uses(message.content, {"issue_refund": issue_refund})})
```

`run_tool_uses` governs each `tool_use` block (deciding, recording, waiting for approvals) and
returns the `tool_result` blocks to send back; a blocked or denied call's block has `is_error`
and carries the reason, so the model can tell the user. A function already guarded with
`@clearance.guard` is governed once. `record` records a message obtained another way; a message
recorded already is not counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _raw_usage
from ._loops import dispatch
from ._patching import check_version


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

    Not needed for messages an `anthropic` client returned after `clearance.configure()`: those
    are recorded already, and are not counted again here.
    """
    return _raw_usage.record_once(message, usage_of, "anthropic")


def usage_of(message: Any) -> _raw_usage.Counted | None:
    """A message's usage; None if it has none.

    Anthropic counts cache reads and cache writes apart from `input_tokens`; all three are
    input, and the cache reads are its cached part.
    """
    usage = _get(message, "usage")
    if usage is None:
        return None
    return _counted(str(_get(message, "model") or "unknown"), usage, {})


def _counted(model: str, usage: Any, later: dict[str, Any]) -> _raw_usage.Counted:
    def count(name: str) -> int:
        value = later.get(name)
        return _int(value if value is not None else _get(usage, name))

    read, written = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    return _raw_usage.Counted(model, count("input_tokens") + read + written, count("output_tokens"), read)


_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class _Tally:
    """A stream's usage: `message_start` carries the model and the input, each `message_delta` the counts so far."""

    __slots__ = ("later", "model", "usage")

    def __init__(self) -> None:
        self.model = "unknown"
        self.usage: Any = None
        self.later: dict[str, Any] = {}

    def seen(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = getattr(event, "message", None)
            self.model = str(_get(message, "model") or "unknown")
            self.usage = _get(message, "usage")
            return self.usage is not None
        if kind == "message_delta" and getattr(event, "usage", None) is not None:
            # cumulative counts; fields the delta leaves None keep message_start's
            self.later.update((n, v) for n in _COUNTS if (v := getattr(event.usage, n, None)) is not None)
            return True
        return False

    def counted(self) -> _raw_usage.Counted | None:
        if self.usage is None and not self.later:
            return None
        return _counted(self.model, self.usage, self.later)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def install() -> None:
    """Record the usage of every Messages API request an `anthropic` client makes, process-wide (idempotent).

    Raises:
        ConfigurationError: This `anthropic` version is not one Clearance was tested with.
    """
    import anthropic
    from anthropic._response import APIResponse, AsyncAPIResponse

    check_version("anthropic", anthropic.__version__, minimum=(0, 40), below=(3, 0))
    sdk = _raw_usage.Sdk(
        provider="anthropic",
        host="api.anthropic.com",
        endpoints=("/messages",),
        streams=(anthropic.Stream, anthropic.AsyncStream),
        counted=usage_of,
        tally=_Tally,
    )
    _raw_usage.install(
        sdk,
        responses=(APIResponse,),
        async_responses=(AsyncAPIResponse,),
        stream=anthropic.Stream,
        async_stream=anthropic.AsyncStream,
    )
