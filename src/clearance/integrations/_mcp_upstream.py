"""One MCP server behind `clearance mcp-proxy`, kept connected: restarted or reconnected when it goes.

Each upstream is held by a task of its own (`Upstream.run`): it connects (a stdio upstream is
started), lists the tools, and waits until the connection is lost — the server's output ended
(a crashed process), its transport failed (an HTTP server gone), or a call found it closed.
Then it connects again, at once the first time and after waits that grow with full jitter
(0.25 s doubling to 10 s at most) while it keeps failing. Meanwhile a call to one of its tools is
answered with a tool error that names the upstream, and its tools stay listed as last seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ..errors import ConfigurationError

log = logging.getLogger("clearance.mcp")

Target = StdioServerParameters | str
T = TypeVar("T")

# What a stdio upstream inherits from the proxy's environment unless told otherwise (`--env`):
# where programs and home are, locale and time zone, temp dir — never the proxy's credentials.
SAFE_ENV = (
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LOGNAME",
    "PATH",
    "SHELL",
    "TERM",
    "TMPDIR",
    "TZ",
    "USER",
    # Windows
    "APPDATA",
    "COMSPEC",
    "LOCALAPPDATA",
    "PATHEXT",
    "SYSTEMROOT",
    "TEMP",
    "TMP",
    "USERPROFILE",
)
FIRST_WAIT, MOST_WAIT = 0.25, 10.0  # seconds between attempts to reconnect: full jitter, doubling
STEADY = 10.0  # a connection that lived this long was not a crash loop: the waits start over


def upstream_env(extra: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of stdio upstreams: `SAFE_ENV` from `environ`, then each `--env` given.

    `NAME` passes the proxy's value of NAME; `NAME=VALUE` sets it.

    Raises:
        ConfigurationError: An `--env` without a name, or NAME not set here.
    """
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in SAFE_ENV if name in environ}
    for spec in extra:
        name, sep, value = spec.partition("=")
        if not name or "\0" in name:
            raise ConfigurationError(f"--env {spec!r}: write NAME or NAME=VALUE")
        if not sep:
            if name not in environ:
                raise ConfigurationError(f"--env {name}: not set in the proxy's environment")
            value = environ[name]
        env[name] = value
    return env


def upstream_target(spec: str, env: Mapping[str, str] | None = None) -> Target:
    """`http(s)://…` (streamable HTTP) or a command line (stdio, started with `env`) as an MCP client target.

    Raises:
        ConfigurationError: Empty, or a command line that cannot be read.
    """
    import shlex

    spec = spec.strip()
    if not spec:
        raise ConfigurationError("an upstream MCP server needs a command or an http(s):// URL")
    if spec.startswith(("http://", "https://")):
        return spec
    try:
        command, *args = shlex.split(spec)
    except ValueError as exc:  # unbalanced quotes
        raise ConfigurationError(f"cannot read the upstream command {spec!r}: {exc}") from None
    return StdioServerParameters(command=command, args=args, env=dict(upstream_env() if env is None else env))


class Lost(Exception):
    """The connection to an upstream ended."""


class _Watched(Generic[T]):
    """A transport's read stream that says when it ends (the server's output closed, or failed)."""

    def __init__(self, stream: Any, lost: anyio.Event) -> None:
        self.stream = stream
        self.lost = lost

    async def receive(self) -> T:
        try:
            item: T = await self.stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.lost.set()
            raise
        return item

    def __aiter__(self) -> _Watched[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> _Watched[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watched(target: Target, lost: anyio.Event) -> AsyncIterator[tuple[Any, Any]]:
    transport = stdio_client(target) if isinstance(target, StdioServerParameters) else streamable_http_client(target)
    async with transport as (read, write):
        yield _Watched(read, lost), write


def describe(exc: BaseException) -> str:
    """One line on why a connection failed (the first leaf of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class Upstream:
    """One upstream server, reconnected for as long as `run` runs.

    Args:
        name: What the proxy calls it (`--upstream NAME=…`).
        target: A URL (streamable HTTP) or the command to start (stdio).
    """

    def __init__(self, name: str, target: Target) -> None:
        self.name = name
        self.target = target
        self.client: Client | None = None
        self.tools: list[types.Tool] = []  # as last listed: kept while it is down
        self.why = "not connected yet"
        self.tried = anyio.Event()  # set once the first attempt to connect has succeeded or failed
        self._lost = anyio.Event()
        self._calls: set[anyio.CancelScope] = set()

    @property
    def kind(self) -> str:
        """`stdio` or `HTTP`."""
        return "stdio" if isinstance(self.target, StdioServerParameters) else "HTTP"

    async def run(self) -> None:
        """Connect, and connect again whenever the connection is lost, until cancelled."""
        failures = 0
        while True:
            connected_at = None
            try:
                async with Client(_watched(self.target, self._lost)) as client:
                    listed = await client.list_tools()
                    connected_at = time.monotonic()
                    self._up(client, listed.tools)
                    await self._lost.wait()
                    raise Lost("the connection closed")
            except Exception as exc:  # whatever ended it, the proxy outlives it
                self._down(exc)
            steady = connected_at is not None and time.monotonic() - connected_at >= STEADY
            failures = 0 if steady else failures + 1
            if failures > 1:  # the first reconnection is at once
                wait = random.uniform(0, min(MOST_WAIT, FIRST_WAIT * 2 ** (failures - 2)))
                log.warning("MCP upstream %r: reconnecting in %.2fs (attempt %d)", self.name, wait, failures)
                await anyio.sleep(wait)

    def _up(self, client: Client, tools: list[types.Tool]) -> None:
        self.client, self.tools = client, list(tools)
        self.tried.set()
        log.info("MCP upstream %r: connected (%s), %d tools", self.name, self.kind, len(tools))

    def _down(self, exc: BaseException) -> None:
        was_up = self.client is not None
        self.client, self.why = None, describe(exc)
        self.tried.set()
        self._lost = anyio.Event()
        for scope in self._calls:  # calls in flight on the lost connection end now
            scope.cancel()
        if was_up:
            log.warning("MCP upstream %r (%s) is down: %s", self.name, self.kind, self.why)

    def down_text(self) -> str:
        """What a call to one of its tools is told while it is down."""
        return (
            f"The MCP server {self.name!r} behind this proxy is down ({self.why}); nothing ran."
            " The proxy is reconnecting to it: try again shortly."
        )

    async def refresh(self) -> list[types.Tool]:
        """Its tools, listed again when it is up (as last listed otherwise)."""
        client, lost = self.client, self._lost
        if client is not None:
            try:
                self.tools = list((await client.list_tools()).tools)
            except Exception as exc:
                _failed(exc, lost)
        return self.tools

    async def call(self, tool: str, args: dict[str, Any] | None) -> types.CallToolResult:
        """Call `tool`; a tool error naming this upstream when it is down or goes down meanwhile."""
        client, lost = self.client, self._lost
        if client is None:
            return error_result(self.down_text())
        with anyio.CancelScope() as scope:  # cancelled by `_down` when the connection is lost
            self._calls.add(scope)
            try:
                return await client.call_tool(tool, args)
            except Exception as exc:
                if not _failed(exc, lost):
                    raise
                why = describe(exc)
            finally:
                self._calls.discard(scope)
        if scope.cancelled_caught:
            why = self.why
        return error_result(
            f"The MCP server {self.name!r} behind this proxy went away during the call ({why}):"
            " it may or may not have run. The proxy is reconnecting to it."
        )


def _failed(exc: BaseException, lost: anyio.Event) -> bool:
    """Whether `exc` says the connection is gone; if so, `lost` (that connection's) is set: `run` connects again."""
    if isinstance(exc, MCPError) and exc.code != types.CONNECTION_CLOSED:
        return False  # the server answered: an error of the call, not of the connection
    lost.set()
    return True


def error_result(text: str) -> types.CallToolResult:
    """The tool-error result MCP clients show the model."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
