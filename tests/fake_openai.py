"""A fake OpenAI-compatible chat completions server on 127.0.0.1, for real HTTP client paths.

It plays a scripted agent: asked anything, it calls `issue_refund(order_id="A-1", amount=...)`;
given a tool result, it answers with it. Streaming and not, with usage (in the last chunk when
the client asks for it with `stream_options.include_usage`). `/v1/responses` (the Responses API)
plays the same agent when the request offers `issue_refund` (not streamed), and otherwise answers
with text, streaming (usage in `response.completed`) and not.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-4o-mini"
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


class FakeServer:
    """A scripted model's HTTP server on 127.0.0.1: records each POSTed body; subclasses `answer` it."""

    path = ""  # what `url` ends with

    def __init__(self, amount: float = 850) -> None:
        self.amount = amount
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                fake.requests.append(body)
                fake.answer(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(handler: BaseHTTPRequestHandler, data: dict[str, Any]) -> None:
    raw = json.dumps(data).encode()
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


class FakeOpenAI(FakeServer):
    """Serves `/v1/chat/completions` until `close()`; records the requests."""

    path = "/v1"

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if handler.path.endswith("/responses"):
            if not body.get("stream") and any(t.get("name") == "issue_refund" for t in body.get("tools") or []):
                send_json(handler, self.turn(body.get("input") or []))
            else:
                _respond(handler, bool(body.get("stream")))
            return
        message = self.reply(body.get("messages") or [])
        if body.get("stream"):
            _stream(handler, message, bool((body.get("stream_options") or {}).get("include_usage")))
            return
        send_json(
            handler,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [{"index": 0, "message": message, "finish_reason": _finish(message)}],
                "usage": USAGE,
            },
        )

    def reply(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The scripted turn: call the tool, or answer with its result."""
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return {"role": "assistant", "content": f"Done. The tool said: {last.get('content')}"}
        arguments = json.dumps({"order_id": "A-1", "amount": self.amount})
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "issue_refund", "arguments": arguments}}
            ],
        }

    def turn(self, items: list[dict[str, Any]] | str) -> dict[str, Any]:
        """The scripted turn over the Responses API: call the tool, or answer with its output."""
        last = items[-1] if isinstance(items, list) and items else {}
        if last.get("type") == "function_call_output":
            text = {"type": "output_text", "text": f"Done. The tool said: {last.get('output')}", "annotations": []}
            item = {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant", "content": [text]}
        else:
            arguments = json.dumps({"order_id": "A-1", "amount": self.amount})
            item = {
                "type": "function_call",
                "id": "fc_fake",
                "call_id": "call_1",
                "name": "issue_refund",
                "arguments": arguments,
                "status": "completed",
            }
        return {**_response(), "output": [item]}


def _stream(handler: BaseHTTPRequestHandler, message: dict[str, Any], usage: bool) -> None:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": 0, **call} for call in message["tool_calls"]]
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(message)}]},
    ]
    if usage:
        chunks.append({**base, "choices": [], "usage": USAGE})
    send_events(handler, [(None, chunk) for chunk in chunks], done=True)


RESPONSES_USAGE = {
    "input_tokens": 200,
    "input_tokens_details": {"cached_tokens": 50},
    "output_tokens": 40,
    "output_tokens_details": {"reasoning_tokens": 10},
    "total_tokens": 240,
}


def _response() -> dict[str, Any]:
    """A completed Responses API answer without its output."""
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "model": MODEL,
        "status": "completed",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": RESPONSES_USAGE,
    }


def _respond(handler: BaseHTTPRequestHandler, stream: bool) -> None:
    """A Responses API answer: one text message, with usage (in `response.completed` when streamed)."""
    text = {"type": "output_text", "text": "Done.", "annotations": []}
    item = {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant", "content": [text]}
    response = {**_response(), "output": [item]}
    if not stream:
        send_json(handler, response)
        return
    at = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
    events = [
        {"type": "response.created", "response": {**response, "status": "in_progress", "output": [], "usage": None}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **at, "part": {**text, "text": ""}},
        {"type": "response.output_text.delta", **at, "delta": "Done.", "logprobs": []},
        {"type": "response.output_text.done", **at, "text": "Done.", "logprobs": []},
        {"type": "response.content_part.done", **at, "part": text},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    send_events(handler, [(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)])


def send_events(
    handler: BaseHTTPRequestHandler, events: list[tuple[str | None, dict[str, Any]]], *, done: bool = False
) -> None:
    """Server-sent events (`event:` lines where named; `data: [DONE]` last if `done`), then the connection closes."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("connection", "close")
    handler.end_headers()
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        handler.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
    if done:
        handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()
    handler.close_connection = True


def _finish(message: dict[str, Any]) -> str:
    return "tool_calls" if message.get("tool_calls") else "stop"
