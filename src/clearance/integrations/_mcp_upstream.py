"""One MCP server behind `clearance mcp-proxy`, kept connected: restarted or reconnected when it goes.

Each upstream is held by a task of its own (`Upstream.run`): it connects (a stdio upstream is
started), lists the tools, and waits until the connection is lost — the server's output ended
(a crashed process), its transport failed (an HTTP server gone), or a call found it closed.
Then it connects again, at once the first time and after waits that grow with full jitter
(0.25 s doubling to 10 s at most) while it keeps failing. Meanwhile a call to one of its tools is
answered with a tool error that names the upstream, and its tools stay listed as last seen.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import mcp_types as types
from mcp import StdioServerParameters

from ..errors import ConfigurationError
from ._mcp_conn import Conn, HttpConn, Lost, StdioConn
from ._mcp_wire import RpcError, text_result

log = logging.getLogger("clearance.mcp")

Target = StdioServerParameters | str

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
        self.conn: Conn | None = None
        self.tools: list[dict[str, Any]] = []  # as last listed: kept while it is down
        self.why = "not connected yet"
        self.tried = anyio.Event()  # set once the first attempt to connect has succeeded or failed

    @property
    def kind(self) -> str:
        """`stdio` or `HTTP`."""
        return "stdio" if isinstance(self.target, StdioServerParameters) else "HTTP"

    async def _open(self) -> Conn:
        target = self.target
        if isinstance(target, StdioServerParameters):
            env = dict(upstream_env() if target.env is None else target.env)
            return await StdioConn.open(target.command, list(target.args), env, target.cwd)
        return await HttpConn.open(target)

    async def run(self) -> None:
        """Connect, and connect again whenever the connection is lost, until cancelled."""
        failures = 0
        while True:
            connected_at = None
            try:
                conn = await self._open()
                try:
                    with anyio.fail_after(60):
                        await conn.handshake()
                        tools = await conn.list_tools()
                    connected_at = time.monotonic()
                    self._up(conn, tools)
                    await conn.lost.wait()
                    raise Lost(conn.why)
                finally:
                    await conn.close()
            except Exception as exc:  # whatever ended it, the proxy outlives it
                self._down(exc)
            steady = connected_at is not None and time.monotonic() - connected_at >= STEADY
            failures = 0 if steady else failures + 1
            if failures > 1:  # the first reconnection is at once
                wait = random.uniform(0, min(MOST_WAIT, FIRST_WAIT * 2 ** (failures - 2)))
                log.warning("MCP upstream %r: reconnecting in %.2fs (attempt %d)", self.name, wait, failures)
                await anyio.sleep(wait)

    def _up(self, conn: Conn, tools: list[dict[str, Any]]) -> None:
        self.conn, self.tools = conn, tools
        self.tried.set()
        log.info("MCP upstream %r: connected (%s), %d tools", self.name, self.kind, len(tools))

    def _down(self, exc: BaseException) -> None:
        was_up = self.conn is not None
        self.conn, self.why = None, describe(exc)
        self.tried.set()
        if was_up:
            log.warning("MCP upstream %r (%s) is down: %s", self.name, self.kind, self.why)

    def _lost(self, conn: Conn, why: str) -> None:
        """A call found `conn` gone: calls from now on are told it is down, before `run` notices."""
        conn.end(why)
        if self.conn is conn:
            self.conn, self.why = None, why

    def down_text(self) -> str:
        """What a call to one of its tools is told while it is down."""
        return (
            f"The MCP server {self.name!r} behind this proxy is down ({self.why}); nothing ran."
            " The proxy is reconnecting to it: try again shortly."
        )

    async def refresh(self) -> list[dict[str, Any]]:
        """Its tools, listed again when it is up (as last listed otherwise)."""
        conn = self.conn
        if conn is not None:
            try:
                self.tools = await conn.list_tools()
            except Lost as exc:
                self._lost(conn, str(exc))
            except RpcError as exc:
                log.warning("MCP upstream %r: tools/list failed: %s", self.name, exc.message[:300])
        return self.tools

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call `tool` (its result); a tool error naming this upstream when it is down or goes down meanwhile.

        Raises:
            RpcError: The upstream answered the call with a JSON-RPC error.
        """
        conn = self.conn
        if conn is None:
            return text_result(self.down_text())
        try:
            return await conn.request("tools/call", {"name": tool, "arguments": args})
        except Lost as exc:
            why = str(exc)
            self._lost(conn, why)
        return text_result(
            f"The MCP server {self.name!r} behind this proxy went away during the call ({why}):"
            " it may or may not have run. The proxy is reconnecting to it."
        )


def error_result(text: str) -> types.CallToolResult:
    """The tool-error result MCP clients show the model."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
