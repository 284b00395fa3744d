"""A fake Anthropic Messages API on 127.0.0.1 (`POST /v1/messages`, not streaming), for the real client path.

It plays a scripted agent: asked anything, it uses `issue_refund(order_id="A-1", amount=...)`;
given a tool result, it answers with it. Usage includes cache reads.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-sonnet-4-6"
USAGE = {"input_tokens": 100, "output_tokens": 30, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0}


class FakeAnthropic:
    """Serves `/v1/messages` until `close()`; records the requests."""

    def __init__(self, amount: float = 850) -> None:
        self.amount = amount
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                fake.requests.append(body)
                raw = json.dumps(fake.reply(body.get("messages") or [])).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
