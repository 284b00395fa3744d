"""The proxy's streamable HTTP transport (`clearance mcp-proxy --http`): HTTP/1.1 (httptools, or h11).

Each response goes out in one write (headers and body together): on loopback every write is a
wake-up of the other side, and the costliest part of a relayed call.

`POST /mcp` carries one JSON-RPC message: a request is answered in the response body as
`application/json` (streamable HTTP lets a server answer with JSON or an event stream); a
notification or a response is accepted with 202. `initialize` opens a session (its id in the
`Mcp-Session-Id` header), which later requests must carry; `DELETE` ends it. `GET` holds an event
stream open for the session (the proxy sends nothing on it). Served on a loopback address, a
request must name a loopback `Host` (and `Origin`, when it has one): no DNS rebinding. A header
sent twice counts as its values joined (so two `Host` headers are no loopback `Host`).

A connection that has not sent a whole request within `TIMEOUT` seconds of opening, or of its
last answer, is closed: partial requests and idle keep-alive connections hold nothing for long.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import logging
import secrets
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h11

from ._mcp_wire import INTERNAL_ERROR, INVALID_REQUEST, MAX_MESSAGE, RpcError, dumps, error, is_id, parse

if TYPE_CHECKING:
    from .mcp import Proxy

log = logging.getLogger("clearance.mcp")

MOST_SESSIONS = 10_000  # the oldest is forgotten beyond this many


Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
STREAM: Reply = (200, [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache")], b"")


class App:
    """What the proxy answers at `/mcp`: `respond` to one HTTP request."""

    def __init__(self, proxy: Proxy, host: str) -> None:
        self.proxy = proxy
        self.loopback = is_loopback(host)
        self.sessions: dict[str, None] = {}

    async def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        """Status, headers and body; `STREAM` for a session's event stream (held open)."""
        if path.partition("?")[0].rstrip("/") != "/mcp":
            return _plain(404, b"Not Found")
        if self.loopback and not _loopback_request(headers):
            return _plain(403, b"Forbidden: not a loopback Host or Origin")
        session = headers.get("mcp-session-id")
        if method == "POST":
            return await self._post(headers, session, body)
        if session is None:
            return _plain(400, b"Bad Request: no Mcp-Session-Id")
        if session not in self.sessions:
            return _plain(404, b"Not Found: no such session")
        if method == "GET":
            return STREAM
        if method == "DELETE":
            self.sessions.pop(session, None)
            return _plain(200, b"")
        return _plain(405, b"Method Not Allowed")

    async def _post(self, headers: dict[str, str], session: str | None, body: bytes) -> Reply:
        if not headers.get("content-type", "").lower().startswith("application/json"):
            return _plain(415, b"Unsupported Media Type: send application/json")
        try:
            request = parse(body)
        except RpcError as exc:
            return _json(400, error(None, exc))
        if not isinstance(request, dict) or "method" not in request or "id" not in request:
            reply = await self.proxy.handle(request)  # a notification, a response, or malformed
            return _json(400, reply) if reply is not None else _plain(202, b"")
        opened = None
        if request["method"] == "initialize":
            opened = secrets.token_hex(16)
        elif session is None:
            if request["method"] != "server/discover":  # the SDK's probe: answered, and it falls back
                return _plain(400, b"Bad Request: no Mcp-Session-Id")
        elif session not in self.sessions:
            return _plain(404, b"Not Found: no such session")
        try:
            reply = await self.proxy.handle(request)
        except Exception:
            log.exception("MCP proxy: answering %r failed", request.get("method"))
            request_id = request.get("id") if is_id(request.get("id")) else None
            reply = error(request_id, RpcError(INTERNAL_ERROR, "Internal error"))
        if reply is None:
            return _plain(202, b"")
        if opened is not None and "result" in reply:
            self.sessions[opened] = None
            while len(self.sessions) > MOST_SESSIONS:
                del self.sessions[next(iter(self.sessions))]
            return _json(200, reply, [(b"Mcp-Session-Id", opened.encode())])
        return _json(200, reply)


async def serve(app: App, host: str, port: int) -> None:
    """Serve `app` over HTTP/1.1 on host:port until cancelled, each response in one write.

    Requests are parsed by httptools when it is installed (`clearance[server]` brings it; a C
    parser, about 0.1 ms a request cheaper), by h11 otherwise.
    """
    try:
        import httptools  # noqa: F401
    except ImportError:
        server = await asyncio.start_server(functools.partial(_connection, app), host, port, limit=MAX_MESSAGE)
    else:
        server = await asyncio.get_running_loop().create_server(lambda: _Fast(app), host, port)
    async with server:
        await server.serve_forever()


MOST_HEAD = 64 * 1024  # the longest request line and headers taken
QUEUED = 16  # pipelined requests held before the connection stops being read
TIMEOUT = 10.0  # seconds a connection has to send a whole request, from its opening or its last answer


def _head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    phrase = HTTPStatus(status).phrase.encode("ascii")
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase), *(b"%s: %s\r\n" % (k, v) for k, v in headers), b"\r\n"]
    return b"".join(lines)


class _Fast(asyncio.Protocol):
    """One client connection, parsed by httptools; its requests answered in order."""

    def __init__(self, app: App) -> None:
        import httptools

        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.errors = (httptools.HttpParserError, httptools.HttpParserUpgrade)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[str, str, dict[str, str], bytes | None, bool]] = collections.deque()
        self.busy = False
        self.gone = asyncio.Event()
        self.timer: asyncio.TimerHandle | None = None
        self._begin()

    def _begin(self) -> None:
        self.url, self.head_size, self.size = b"", 0, 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] | None = []
        self.refused = False  # not from a loopback Host or Origin: its body is not kept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()
        self._disarm()

    def _arm(self) -> None:
        """Close the connection unless a whole request arrives within TIMEOUT."""
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(TIMEOUT, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is not None and not self.busy:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.errors:
            self._refuse(400, b"Bad Request")
        except _TooLong:
            self._refuse(431, b"Request Header Fields Too Large")

    def _refuse(self, status: int, text: bytes) -> None:
        assert self.transport is not None
        if not self.busy:
            headers = [
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", b"%d" % len(text)),
                (b"Connection", b"close"),
            ]
            self.transport.write(_head(status, headers) + text)
        self.transport.close()

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self._begin()

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > MOST_HEAD:
            raise _TooLong
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MOST_HEAD:
            raise _TooLong
        _add_header(self.headers, name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self.refused = self.app.loopback and not _loopback_request(self.headers)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_MESSAGE:
            self.body = None
        elif self.body is not None and not self.refused:
            self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self._disarm()
        method = self.parser.get_method().decode("ascii", "replace")
        body = b"".join(self.body) if self.body is not None else None
        self.queue.append((method, self.url.decode("latin-1"), self.headers, body, self.parser.should_keep_alive()))
        if len(self.queue) >= QUEUED:
            self.transport.pause_reading()
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        transport = self.transport
        assert transport is not None
        while self.queue and not transport.is_closing():
            method, url, headers, body, keep = self.queue.popleft()
            if len(self.queue) < QUEUED:
                transport.resume_reading()
            if body is None:
                reply = _json(413, error(None, RpcError(INVALID_REQUEST, "Invalid Request: too long")))
            else:
                reply = await self.app.respond(method, url, headers, body)
            status, extra, payload = reply
            if reply is STREAM:  # held open until the client goes; nothing is sent on it
                transport.write(_head(status, [*extra, (b"Transfer-Encoding", b"chunked")]))
                await self.gone.wait()
                return
            close = not keep or body is None
            extra = [*extra, (b"Content-Length", b"%d" % len(payload))]
            transport.write(_head(status, [*extra, (b"Connection", b"close")] if close else extra) + payload)
            if close:
                transport.close()
                return
        self.busy = False
        if not transport.is_closing():
            self._arm()  # the next request (maybe partly read already) has TIMEOUT from now


class _TooLong(Exception):
    """A request line and headers over MOST_HEAD."""


async def _connection(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MOST_HEAD)
    try:
        while True:
            try:
                async with asyncio.timeout(TIMEOUT):
                    request, body = await _request(app, conn, reader)
            except TimeoutError:
                return
            if request is None:
                return
            names = {bytes(k) for k, _ in request.headers}
            if b"transfer-encoding" in names and b"content-length" in names:
                raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")  # no smuggling
            if body is None:
                reply = _json(413, error(None, RpcError(INVALID_REQUEST, "Invalid Request: too long")))
            else:
                method, target = request.method.decode("ascii", "replace"), request.target.decode("latin-1")
                reply = await app.respond(method, target, _headers(request), body)
            status, extra, payload = reply
            if reply is STREAM:
                writer.write(conn.send(h11.Response(status_code=status, headers=extra)) or b"")
                while await reader.read(65536):  # held open until the client goes; nothing is sent on it
                    pass
                return
            head = h11.Response(status_code=status, headers=[*extra, (b"Content-Length", str(len(payload)).encode())])
            writer.write(
                (conn.send(head) or b"")
                + (conn.send(h11.Data(data=payload)) or b"")
                + (conn.send(h11.EndOfMessage()) or b"")
            )
            await writer.drain()
            if body is None or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(Exception):
                status, extra, payload = _plain(400, b"Bad Request")
                head = h11.Response(
                    status_code=status, headers=[*extra, (b"Content-Length", str(len(payload)).encode())]
                )
                writer.write((conn.send(head) or b"") + (conn.send(h11.Data(data=payload)) or b""))
    finally:
        writer.close()


def _headers(request: h11.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        _add_header(headers, bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
    return headers


def _add_header(headers: dict[str, str], name: str, value: str) -> None:
    """A header sent twice is its values joined (RFC 9110): two `Host`s are no loopback `Host`."""
    headers[name] = f"{headers[name]}, {value}" if name in headers else value


async def _request(
    app: App, conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | None, bytes | None]:
    """The next request and its body (None when over MAX_MESSAGE); no request when the client is gone.

    The body of a request that will be refused (not from a loopback Host or Origin) is read, not kept.
    """
    request: h11.Request | None = None
    chunks, size, keep = [], 0, True
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(262144))
        elif isinstance(event, h11.Request):
            request = event
            keep = not app.loopback or _loopback_request(_headers(request))
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_MESSAGE:
                return request, None
            if keep:
                chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return request, b"".join(chunks)
        else:  # ConnectionClosed, or PAUSED
            return None, None


def _loopback_request(headers: dict[str, str]) -> bool:
    """Whether `Host` names a loopback address (with at most a port), and `Origin` too when sent."""
    if not _loopback_authority(headers.get("host", "")):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    scheme, sep, authority = origin.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and _loopback_authority(authority)


def _loopback_authority(authority: str) -> bool:
    """`localhost`, an IPv4 literal in 127.0.0.0/8, `[::1]`, each with an optional port of digits: nothing else."""
    if authority.startswith("["):
        name, _, port = authority.partition("]")
        name += "]"
        if port and not port.startswith(":"):
            return False
        port = port[1:]
        bare = not port
    else:
        name, sep, port = authority.partition(":")
        bare = not sep
    if not bare and not (port.isascii() and port.isdigit()):
        return False
    name = name.lower()
    return name == "localhost" or (is_loopback(name[1:-1]) if name.startswith("[") else _is_ipv4_loopback(name))


def is_loopback(host: str) -> bool:
    """`localhost`, or an address literal in 127.0.0.0/8 or ::1 (brackets allowed)."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ipv4_loopback(name: str) -> bool:
    """A dotted-quad IPv4 literal in 127.0.0.0/8 (not `127.1`, not `0x7f.0.0.1`)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return isinstance(address, ipaddress.IPv4Address) and address.is_loopback


def _json(status: int, message: Any, extra: list[tuple[bytes, bytes]] | None = None) -> Reply:
    try:
        body = dumps(message)
    except ValueError:
        body = dumps(error(message.get("id"), RpcError(INTERNAL_ERROR, "the answer could not be written")))
    return status, [(b"Content-Type", b"application/json"), *(extra or [])], body


def _plain(status: int, body: bytes) -> Reply:
    return status, [(b"Content-Type", b"text/plain; charset=utf-8")], body
