"""JSON-RPC as `clearance mcp-proxy` relays it: messages parsed once, answered and forwarded as JSON.

The proxy does not run the MCP SDK's session layers per call: it reads each message, takes what
it decides on (method, id, the tool's name and arguments), and writes the message it forwards
from those decided values — never the bytes it was sent, which could differ from what was parsed
(duplicate keys in an object, say). Everything written is ASCII JSON (`ensure_ascii`), so lone
surrogates and control characters travel escaped.
"""

from __future__ import annotations

import json
from typing import Any

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
MAX_MESSAGE = 64 * 1024 * 1024  # the longest message read from a client or an upstream

_encode = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


class RpcError(Exception):
    """A JSON-RPC error to answer with (or one an upstream answered)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def parse(raw: bytes | str) -> Any:
    """One JSON value, or RpcError(PARSE_ERROR) for anything that is not (bad UTF-8, too deep)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RpcError(PARSE_ERROR, f"Parse error: {type(exc).__name__}") from None


def dumps(message: Any) -> bytes:
    """`message` as compact ASCII JSON; ValueError when it cannot be (too deep, NaN)."""
    try:
        return _encode(message).encode("ascii")
    except RecursionError:
        raise ValueError("nested too deeply to write") from None


def answer(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error(request_id: Any, exc: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": exc.body()}


def is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def text_result(text: str, *, is_error: bool = True) -> dict[str, Any]:
    """A `CallToolResult` (as JSON) with one text block."""
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def result_text(result: Any) -> str:
    """The text blocks of a `CallToolResult` as JSON, joined."""
    content = result.get("content") if isinstance(result, dict) else None
    if not isinstance(content, list):
        return ""
    parts = [c.get("text") for c in content if isinstance(c, dict)]
    return "\n".join(p for p in parts if isinstance(p, str) and p)
