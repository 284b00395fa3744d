"""A scripted Anthropic Messages API on 127.0.0.1 that the Claude Code CLI can stream from.

The CLI asks `POST /v1/messages` with `"stream": true` and reads server-sent events. This fake
plays a scripted agent: while the last message has no `tool_result`, it uses `tool` with
`tool_input`; given one, it answers with the result's text (so a test can read what the tool, or
a refusal, said). Requests that are not the agent's (the CLI's own small side requests) are
answered with a plain text turn. Every request's body is kept, in order, in `requests`.
"""

from __future__ import annotations

import json
import queue
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..fake_anthropic import MODEL, USAGE
from ..fake_openai import FakeServer, send_json


class ScriptedClaude(FakeServer):
    """Serves `/v1/messages` (streaming and not) until `close()`; records each request's body."""

    def __init__(self, tool: str, tool_input: dict[str, Any] | str) -> None:
        self.tool = tool
        self.tool_input = tool_input  # a dict, or raw JSON text (for inputs JSON cannot otherwise carry)
        self.bodies: queue.Queue[dict[str, Any]] = queue.Queue()  # each agent request, as it arrives
        self.turns = 0
        super().__init__()

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if "/count_tokens" in handler.path:
            send_json(handler, {"input_tokens": 10})
            return
        content, stop = self.reply(body)
        self.turns += 1
        message_id = f"msg_{self.turns}"
        if body.get("stream"):
            _stream(handler, message_id, content, stop)
        else:
            send_json(handler, _message(message_id, content, stop, USAGE))

    def reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The scripted turn: use the tool, or answer with its result."""
        if not body.get("tools"):  # not the agent's request (a title, a summary): a short answer
            return [{"type": "text", "text": "ok"}], "end_turn"
        self.bodies.put(body)
        result = tool_result(body)
        if result is not None:
            return [{"type": "text", "text": f"Done. The tool said: {result}"}], "end_turn"
        return [
            {"type": "tool_use", "id": f"toolu_{self.turns}", "name": self.tool, "input": self.tool_input}
        ], "tool_use"


def tool_result(body: dict[str, Any]) -> str | None:
    """The text of the `tool_result` in a request's last message, or None."""
    messages = body.get("messages") or []
    last = messages[-1].get("content") if messages else None
    for block in last if isinstance(last, list) else ():
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            if isinstance(content, list):
                return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return str(content)
    return None


def _message(message_id: str, content: list[dict[str, Any]], stop: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _stream(handler: BaseHTTPRequestHandler, message_id: str, content: list[dict[str, Any]], stop: str) -> None:
    """The turn as the Messages API streams it: start, each block, the final usage, stop."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("connection", "close")
    handler.end_headers()
    start = {**USAGE, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {"type": "message_start", "message": _message(message_id, [], "", start) | {"stop_reason": None}},
        )
    ]
    for index, block in enumerate(content):
        if block["type"] == "text":
            events += [
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": block["text"]},
                    },
                ),
            ]
        else:
            raw = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
            empty = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events += [
                ("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": raw},
                    },
                ),
            ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": USAGE["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    for name, data in events:
        handler.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
    handler.wfile.flush()
    handler.close_connection = True
