"""The proxy's own stdin and stdout as MCP's stdio transport, on the event loop's pipes.

The MCP SDK's `stdio_server()` reads and writes the process's standard streams through worker
threads: three thread hand-offs per message (read a line, write it, flush). Here the same two
descriptors are read and written as non-blocking pipes on the event loop. As the SDK does, fd 0
and fd 1 are first copied to private descriptors and pointed at the null device and at stderr,
so a stray `print` (or a child that inherits them) cannot corrupt the wire. Where the streams
are not pipes (a regular file, say), None: the SDK's own transport is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

_LIMIT = 64 * 1024 * 1024  # the longest line (one JSON-RPC message) read from the client


class _Lines:
    """`async for line in stdin`: the lines a client writes, decoded as UTF-8 (bad bytes replaced)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", "replace")


class _Out:
    """`await stdout.write(text)` and `await stdout.flush()` on a pipe."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self.writer.drain()


@contextlib.asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[Any, Any] | None]:
    """This process's stdin and stdout for `mcp.server.stdio.stdio_server(stdin, stdout)`, or None."""
    loop = asyncio.get_running_loop()
    saved = os.dup(0), os.dup(1)
    reader = asyncio.StreamReader(limit=_LIMIT)
    read_transport: asyncio.ReadTransport | None = None
    try:
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(saved[0], "rb", buffering=0, closefd=False)
        )
        write_transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(saved[1], "wb", buffering=0, closefd=False)
        )
    except (OSError, ValueError):  # not pipes, sockets or character devices: the SDK's way
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
        yield _Lines(reader), _Out(asyncio.StreamWriter(write_transport, protocol, None, loop))
    finally:
        read_transport.close()
        write_transport.close()
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        for fd in saved:
            os.close(fd)
