"""A fake Anthropic Messages API on 127.0.0.1 (`POST /v1/messages`), for the real client path.

It plays a scripted agent: asked anything, it uses `issue_refund(order_id="A-1", amount=...)`;
given a tool result, it answers with it. Usage includes cache reads. Streamed (`stream: true`)
as the API does: `message_start` with the input usage, the content blocks, then `message_delta`
with the final output count.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from .fake_openai import FakeServer, send_events, send_json

MODEL = "claude-sonnet-4-6"
USAGE = {"input_tokens": 100, "output_tokens": 30, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0}


class FakeAnthropic(FakeServer):
    """Serves `/v1/messages` until `close()`; records the requests."""

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        message = self.reply(body.get("messages") or [])
        if body.get("stream"):
            send_events(handler, [(e["type"], e) for e in stream_events(message)])
        else:
            send_json(handler, message)

    def reply(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The scripted turn: use the tool, or answer with its result."""
        last = messages[-1]["content"] if messages else ""
        results = (
            [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(last, list)
            else []
        )
        if results:
            content: list[dict[str, Any]] = [{"type": "text", "text": f"Done. The tool said: {results[0]['content']}"}]
            stop = "end_turn"
        else:
            use = {"order_id": "A-1", "amount": self.amount}
            content = [{"type": "tool_use", "id": "toolu_1", "name": "issue_refund", "input": use}]
            stop = "tool_use"
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": USAGE,
        }


def stream_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message as the streaming API sends it."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened, delta = {**block, "text": ""}, {"type": "text_delta", "text": block["text"]}
        else:
            opened, delta = (
                {**block, "input": {}},
                {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
            )
        events += [
            {"type": "content_block_start", "index": index, "content_block": opened},
            {"type": "content_block_delta", "index": index, "delta": delta},
            {"type": "content_block_stop", "index": index},
        ]
    final = {"output_tokens": USAGE["output_tokens"]}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    return [*events, {"type": "message_delta", "delta": delta, "usage": final}, {"type": "message_stop"}]
