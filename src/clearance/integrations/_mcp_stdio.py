"""The proxy's own stdin and stdout as MCP's stdio transport, on the event loop's pipes.

The MCP SDK's `stdio_server()` reads and writes the process's standard streams through worker
threads: three thread hand-offs per message (read a line, write it, flush). Here the same two
descriptors are read and written as non-blocking pipes on the event loop. As the SDK does, fd 0
and fd 1 are first copied to private descriptors and pointed at the null device and at stderr,
so a stray `print` (or a child that inherits them) cannot corrupt the wire. Where the streams
are not pipes (a regular file, say), they are read and written from a worker thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._mcp_wire import INTERNAL_ERROR, INVALID_REQUEST, MAX_MESSAGE, RpcError, dumps, error, is_id, parse

if TYPE_CHECKING:
    from .mcp import Proxy

log = logging.getLogger("clearance.mcp")
Lines = Callable[[], Awaitable[bytes]]  # the next line, b"" at the end; ValueError when over MAX_MESSAGE
Write = Callable[[bytes], Awaitable[None]]


async def serve_lines(proxy: Proxy, next_line: Lines, write: Write) -> None:
    """Answer the client's messages, one JSON-RPC message a line, until its input ends.

    Each request is answered by a task of its own (a call waiting for an approval holds up no
    other); `notifications/cancelled` cancels its request's task. Malformed input is answered
    with a JSON-RPC error and the proxy reads on.
    """
    tasks: dict[Any, asyncio.Task[None]] = {}
    loop = asyncio.get_running_loop()

    async def send(reply: dict[str, Any]) -> None:
        try:
            data = dumps(reply)
        except ValueError:
            data = dumps(error(reply.get("id"), RpcError(INTERNAL_ERROR, "the answer could not be written")))
        await write(data + b"\n")

    async def answer_one(message: dict[str, Any]) -> None:
        try:
            reply = await proxy.handle(message)
        except Exception:
            log.exception("MCP proxy: answering %r failed", message.get("method"))
            reply = error(message.get("id"), RpcError(INTERNAL_ERROR, "Internal error"))
        if reply is not None:
            await send(reply)

    def forget(key: Any, task: asyncio.Task[None]) -> None:
        if tasks.get(key) is task:
            del tasks[key]

    skipping = False
    try:
        while True:
            try:
                line = await next_line()
            except ValueError as exc:  # longer than MAX_MESSAGE
                skipping = "not found" in str(exc)
                await send(error(None, RpcError(INVALID_REQUEST, f"Invalid Request: over {MAX_MESSAGE} bytes")))
                continue
            if not line:
                break
            if skipping:  # the rest of a message too long to read
                skipping = not line.endswith(b"\n")
                continue
            if not line.strip():
                continue
            try:
                message = parse(line)
            except RpcError as exc:
                await send(error(None, exc))
                continue
            if not isinstance(message, dict) or "method" not in message or "id" not in message:
                if isinstance(message, dict) and message.get("method") == "notifications/cancelled":
                    params = message.get("params")
                    key = params.get("requestId") if isinstance(params, dict) else None
                    task = tasks.get(key) if is_id(key) else None
                    if task is not None:
                        task.cancel()
                    continue
                reply = await proxy.handle(message)
                if reply is not None:
                    await send(reply)
                continue
            key = message["id"]
            task = loop.create_task(answer_one(message))
            if is_id(key):
                tasks[key] = task
                task.add_done_callback(functools.partial(forget, key))
    finally:
        for task in list(tasks.values()):
            task.cancel()


async def serve_stdio(proxy: Proxy) -> None:
    """The client's messages on stdin answered on stdout, until stdin ends."""
    async with stdio_streams() as streams:
        if streams is not None:
            reader, writer = streams

            async def write(data: bytes) -> None:
                writer.write(data)
                await writer.drain()

            await serve_lines(proxy, reader.readline, write)
            return
        loop = asyncio.get_running_loop()
        stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

        async def next_line() -> bytes:
            line: bytes = await loop.run_in_executor(None, stdin.readline, MAX_MESSAGE + 1)
            if len(line) > MAX_MESSAGE:
                raise ValueError("Separator is not found, and chunk exceed the limit")
            return line

        def put(data: bytes) -> None:
            stdout.write(data)
            stdout.flush()

        async def write_blocking(data: bytes) -> None:
            await loop.run_in_executor(None, put, data)

        await serve_lines(proxy, next_line, write_blocking)


@contextlib.asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
    """This process's stdin and stdout as a stream pair, or None when they are not pipes."""
    loop = asyncio.get_running_loop()
    saved = os.dup(0), os.dup(1)
    reader = asyncio.StreamReader(limit=MAX_MESSAGE)
    read_transport: asyncio.ReadTransport | None = None
    try:
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(saved[0], "rb", buffering=0, closefd=False)
        )
        write_transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(saved[1], "wb", buffering=0, closefd=False)
        )
    except (OSError, ValueError):  # not pipes, sockets or character devices: worker threads instead
        if read_transport is not None:
            read_transport.close()
        for fd in saved:
            os.close(fd)
        yield None
        return
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(sys.stderr.fileno(), 1)
    try:
        yield reader, asyncio.StreamWriter(write_transport, protocol, None, loop)
    finally:
        read_transport.close()
        write_transport.close()
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        for fd in saved:
            os.close(fd)
