"""A fake Anthropic Messages API on 127.0.0.1 (`POST /v1/messages`, not streaming), for the real client path.

It plays a scripted agent: asked anything, it uses `issue_refund(order_id="A-1", amount=...)`;
given a tool result, it answers with it. Usage includes cache reads.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from .fake_openai import FakeServer, send_json

MODEL = "claude-sonnet-4-6"
USAGE = {"input_tokens": 100, "output_tokens": 30, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0}


class FakeAnthropic(FakeServer):
    """Serves `/v1/messages` until `close()`; records the requests."""

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send_json(handler, self.reply(body.get("messages") or []))

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
