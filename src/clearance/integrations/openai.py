"""Raw `openai` clients: usage recorded automatically, and a tool-call executor.

After `clearance.configure()`, every model request an `openai` client makes (chat completions
and the Responses API, sync and async, streamed or not) is recorded in the current session: one
`llm.call` with its model, tokens and cost (see `docs/usage-capture.md`; a streamed chat
completion reports usage only with `stream_options={"include_usage": True}`). `record(response)`
records a response by hand — one that came another way; a response recorded already is not
counted twice. The executor runs the model's tool calls through the guard.

```python
from clearance.integrations.openai import record, run_tool_calls

response = client.chat.completions.create(model=..., messages=messages, tools=schemas)
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

from . import _raw_usage
from ._common import parse_json_args
from ._loops import dispatch
from ._patching import check_version


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
    """Record a chat completion's or a Responses API response's usage in the current session; return it.

    Not needed for responses an `openai` client returned after `clearance.configure()`: those are
    recorded already, and are not counted again here. Takes the SDK's object or its dict.
    """
    return _raw_usage.record_once(response, usage_of, "openai")


def usage_of(response: Any) -> _raw_usage.Counted | None:
    """A chat completion's (or chunk's, or completion's) or a Responses API response's usage; None if it has none."""
    usage = _get(response, "usage")
    if usage is None:
        return None
    model = str(_get(response, "model") or "unknown")
    if _get(usage, "prompt_tokens") is not None:  # chat completions and completions
        return _raw_usage.Counted(
            model,
            _int(_get(usage, "prompt_tokens")),
            _int(_get(usage, "completion_tokens")),
            _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens")),
            _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens")),
        )
    return _raw_usage.Counted(
        model,
        _int(_get(usage, "input_tokens")),
        _int(_get(usage, "output_tokens")),
        _int(_get(_get(usage, "input_tokens_details"), "cached_tokens")),
        _int(_get(_get(usage, "output_tokens_details"), "reasoning_tokens")),
    )


_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _Tally:
    """A stream's usage: a chat completion's last chunk (`include_usage`), or the Responses API's final event."""

    __slots__ = ("found",)

    def __init__(self) -> None:
        self.found: _raw_usage.Counted | None = None

    def seen(self, event: Any) -> bool:
        fields = getattr(event, "__dict__", {})  # not getattr: a field the model lacks costs pydantic an exception
        kind = fields.get("type")
        if kind is None:  # a chat completion chunk: usage on the last one only
            found = usage_of(event) if fields.get("usage") is not None else None
        elif kind in _FINAL:
            found = usage_of(fields.get("response"))
        else:
            return False
        self.found = found or self.found
        return found is not None

    def counted(self) -> _raw_usage.Counted | None:
        return self.found


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def install() -> None:
    """Record the usage of every model request an `openai` client makes, process-wide (idempotent).

    Raises:
        ConfigurationError: This `openai` version is not one Clearance was tested with.
    """
    import openai
    from openai._legacy_response import LegacyAPIResponse
    from openai._response import APIResponse, AsyncAPIResponse

    check_version("openai", openai.__version__, minimum=(1, 40), below=(4, 0))
    sdk = _raw_usage.Sdk(
        provider="openai",
        host="api.openai.com",
        endpoints=("/completions", "/responses"),
        streams=(openai.Stream, openai.AsyncStream),
        counted=usage_of,
        tally=_Tally,
    )
    _raw_usage.install(
        sdk,
        responses=(APIResponse, LegacyAPIResponse),
        async_responses=(AsyncAPIResponse,),
        stream=openai.Stream,
        async_stream=openai.AsyncStream,
    )
