"""Raw JSON-RPC connections to an upstream MCP server: a started process (stdio) or streamable HTTP.

Each connection does the `initialize` handshake itself, then carries requests with ids of its
own and matches the answers back by id. `lost` is set when the connection ends: the process's
output closed (it exited or crashed), or, over HTTP, the server's event stream (GET) ended or a
request could not be made; whatever is still waiting then fails with `Lost`.

HTTP is HTTP/1.1 over keep-alive connections, written with h11, each request in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from typing import Any

import anyio
import h11

from ._mcp_wire import INVALID_REQUEST, MAX_MESSAGE, METHOD_NOT_FOUND, RpcError, dumps, parse

log = logging.getLogger("clearance.mcp")

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")  # the initialize era
HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
CLIENT_INFO = {"name": "clearance-mcp-proxy", "version": "1"}


class Lost(Exception):
    """The connection to an upstream ended."""


class Conn:
    """What both kinds share: ids, waiters, `lost`, the handshake."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.why = "the connection closed"
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def end(self, why: str) -> None:
        """The connection is gone: everything waiting on it fails."""
        if self.lost.is_set():
            return
        self.why = why
        self.lost.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(Lost(why))
        self._waiting.clear()

    def _received(self, message: Any) -> dict[str, Any] | None:
        """Route one message from the upstream; what to answer it with, if it is a request to us."""
        if not isinstance(message, dict):
            return None
        if "method" not in message:
            request_id = message.get("id")  # ours are ints; anything else (a list: unhashable) is no answer
            future = self._waiting.pop(request_id, None) if type(request_id) is int else None
            if future is not None and not future.done():
                future.set_result(message)
            return None
        if "id" not in message:  # a notification (progress, list changed, a log line): not relayed
            return None
        if message["method"] == "ping":
            return {"jsonrpc": "2.0", "id": message["id"], "result": {}}
        failure = RpcError(METHOD_NOT_FOUND, "Method not found")  # sampling, roots, elicitation: the proxy offers none
        return {"jsonrpc": "2.0", "id": message["id"], "error": failure.body()}

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The upstream's result; RpcError when it answers with an error; Lost when the connection ends."""
        if self.lost.is_set():
            raise Lost(self.why)
        self._next += 1
        request_id = self._next
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, request_id)
            response = await future
        finally:
            self._waiting.pop(request_id, None)
        if "error" in response:
            failure = response["error"] if isinstance(response["error"], dict) else {}
            code, message = failure.get("code"), failure.get("message")
            raise RpcError(
                code if isinstance(code, int) and not isinstance(code, bool) else INVALID_REQUEST,
                message if isinstance(message, str) else "error",
                failure.get("data"),
            )
        result = response.get("result")
        if not isinstance(result, dict):
            raise RpcError(INVALID_REQUEST, "the upstream answered without a result object")
        return result

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message, None)

    async def _send(self, message: dict[str, Any], request_id: int | None) -> None:
        raise NotImplementedError

    async def handshake(self) -> None:
        params = {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
        result = await self.request("initialize", params)
        self.protocol = result.get("protocolVersion") if isinstance(result.get("protocolVersion"), str) else None
        await self.notify("notifications/initialized")

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool it lists (following `nextCursor`), the well-formed ones."""
        tools: list[dict[str, Any]] = []
        cursor: Any = None
        for _ in range(1000):
            result = await self.request("tools/list", {"cursor": cursor} if cursor else {})
            listed = result.get("tools")
            tools += (
                [t for t in listed if isinstance(t, dict) and isinstance(t.get("name"), str)]
                if isinstance(listed, list)
                else []
            )
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return tools

    async def close(self) -> None:
        raise NotImplementedError


class StdioConn(Conn):
    """A started MCP server, spoken to over its stdin and stdout (newline-delimited JSON)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin, self.stdout = process.stdin, process.stdout
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, command: str, args: list[str], env: dict[str, str] | None, cwd: Any) -> StdioConn:
        process = await asyncio.create_subprocess_exec(
            command,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            limit=MAX_MESSAGE,
        )
        return cls(process)

    async def _read(self) -> None:
        skipping = False
        try:
            while True:
                try:
                    line = await self.stdout.readline()
                except ValueError as exc:  # longer than MAX_MESSAGE
                    skipping = "not found" in str(exc)
                    log.warning("MCP upstream: a message over %d bytes was dropped", MAX_MESSAGE)
                    continue
                if not line:
                    break
                if skipping:  # the rest of a message too long to read
                    skipping = not line.endswith(b"\n")
                    continue
                try:
                    reply = self._received(parse(line))
                except RpcError:
                    continue
                if reply is not None:
                    self.stdin.write(dumps(reply) + b"\n")
        except Exception as exc:  # the pipe failed
            self.end(f"its output failed: {exc}")
        code = self.process.returncode
        self.end("the process exited" if code is None else f"the process exited with status {code}")

    async def _send(self, message: dict[str, Any], request_id: int | None) -> None:
        try:
            self.stdin.write(dumps(message) + b"\n")
            await self.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.end(f"its input closed: {exc}")
            raise Lost(self.why) from None

    async def close(self) -> None:
        self.reader.cancel()
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                self.stdin.close()
            with anyio.move_on_after(2):
                await self.process.wait()
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                with anyio.move_on_after(2):
                    await self.process.wait()
        self.end("closed")


class _H1:
    """One keep-alive HTTP/1.1 connection (h11)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_MESSAGE)

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing() and self.h11.our_state is h11.IDLE

    async def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> h11.Response:
        out = self.h11.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            out = (out or b"") + (self.h11.send(h11.Data(data=body)) or b"")
        out = (out or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        self.writer.write(out)  # headers and body in one write
        while True:
            event = await self.next()
            if isinstance(event, h11.Response):
                return event

    async def next(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(262144))
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
            return event

    async def body(self, limit: int = MAX_MESSAGE) -> bytes:
        chunks, size = [], 0
        while True:
            event = await self.next()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise ConnectionError("the response is too long")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        self.writer.close()


def _sse_data(body: bytes) -> list[bytes]:
    """The `data` of each event of a text/event-stream body."""
    events: list[bytes] = []
    data: list[bytes] = []
    for line in body.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            if data:
                events.append(b"\n".join(data))
                data = []
        elif line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
    if data:
        events.append(b"\n".join(data))
    return events


class HttpConn(Conn):
    """A streamable HTTP MCP server: POSTed requests, its event stream (GET) watched for its end."""

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.authority = parts.netloc.rpartition("@")[2]
        self.session: str | None = None
        self.protocol: str | None = None
        self._idle: list[_H1] = []
        self._open: set[_H1] = set()
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> HttpConn:
        return cls(url)

    async def _connect(self) -> _H1:
        context = ssl.create_default_context() if self.tls else None
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=context, limit=MAX_MESSAGE, server_hostname=self.host if self.tls else None
        )
        connection = _H1(reader, writer)
        self._open.add(connection)
        return connection

    def _headers(self, body: bytes | None) -> list[tuple[str, str]]:
        headers = [("Host", self.authority), ("Accept", "application/json, text/event-stream")]
        if body is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if self.session is not None:
            headers.append(("Mcp-Session-Id", self.session))
        if self.protocol is not None:
            headers.append(("Mcp-Protocol-Version", self.protocol))
        return headers

    async def _send(self, message: dict[str, Any], request_id: int | None) -> None:
        body = dumps(message)
        connection = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.usable():
                connection = candidate
                break
            self._drop(candidate)
        try:
            if connection is None:
                connection = await self._connect()
            response = await connection.send("POST", self.target, self._headers(body), body)
            payload = await connection.body()
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
            if connection is not None:
                self._drop(connection)
            self.end(f"cannot reach it: {exc or type(exc).__name__}")
            raise Lost(self.why) from None
        if connection.reusable():
            self._idle.append(connection)
        else:
            self._drop(connection)
        if response.status_code == 404 and self.session is not None:
            self.end("its session expired")
            raise Lost(self.why)
        if message.get("method") == "initialize":
            self.session = _header(response, b"mcp-session-id")
        if request_id is None:
            return
        if response.status_code >= 400:
            raise RpcError(INVALID_REQUEST, f"the upstream answered HTTP {response.status_code}")
        kind = _header(response, b"content-type") or ""
        for data in _sse_data(payload) if kind.startswith("text/event-stream") else [payload]:
            try:
                self._received(parse(data))
            except RpcError:
                continue
        if request_id in self._waiting:
            future = self._waiting[request_id]
            if not future.done():
                future.set_exception(RpcError(INVALID_REQUEST, "the upstream answered without a response"))

    async def handshake(self) -> None:
        await super().handshake()
        self._watch = asyncio.get_running_loop().create_task(self._watch_stream())

    async def _watch_stream(self) -> None:
        """Hold the server's event stream open: when it ends, so has the server (or its session)."""
        try:
            connection = await self._connect()
            response = await connection.send("GET", self.target, self._headers(None), b"")
            if response.status_code >= 400:  # no stream offered: calls find out instead
                self._drop(connection)
                return
            while True:
                event = await connection.next()
                if isinstance(event, h11.EndOfMessage):
                    break
        except (OSError, h11.ProtocolError) as exc:
            self.end(f"its connection ended: {exc or type(exc).__name__}")
            return
        self.end("its event stream ended")

    def _drop(self, connection: _H1) -> None:
        self._open.discard(connection)
        connection.close()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()
        self.end("closed")


def _header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
