"""MCP: every `tools/call` a client sends is governed, and `clearance mcp-proxy` fronts MCP servers.

- `install()` (done by `clearance.configure()` when the MCP SDK is imported): the SDK has no
  outgoing middleware, so `ClientSession.call_tool` — which every client call goes through — is
  wrapped (after a version check). A blocked or denied call returns a `CallToolResult` with
  `isError` and the reason as its text, so the agent continues and can tell the user; an
  approval is awaited without blocking the event loop, and an approver's edit is what is sent.
- `Proxy`: the engine of `clearance mcp-proxy`, an MCP server that lists the tools of one or
  more upstream servers and applies policy to each `tools/call` before forwarding it.

Needs `pip install "clearance[mcp]"`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

try:
    from mcp import ClientSession
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('the MCP integration needs its extra: pip install "clearance[mcp]"') from exc

from .._canonical import args_hash
from .._clock import now_us
from .._context import get_session
from .._guard import _runtime
from .._guard._recording import RUNNING, Recording
from .._guard._tickets import Approved, Ticket
from .._notify import FALLBACK_SECONDS
from ..errors import ApprovalError, ApprovalPending, ConfigurationError, ToolCallBlocked
from ._common import OnBlock, begin, blocked, refusal_text
from ._mcp_conn import HANDSHAKE_VERSIONS
from ._mcp_upstream import Target, Upstream, error_result, upstream_target
from ._mcp_wire import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    RpcError,
    answer,
    error,
    is_id,
    result_text,
    text_result,
)
from ._patching import check_version, wrap_method

__all__ = ["Proxy", "error_result", "governed_call", "install", "upstream_target"]


class _Recording(Recording):
    """An `isError` result counts as a failed call."""

    def outcome(self, result: Any) -> tuple[BaseException | None, Any]:
        text = _text_of(result)
        if getattr(result, "is_error", False):
            return RuntimeError(text[:2000]), None
        return None, text


def _text_of(result: Any) -> str:
    parts = [getattr(c, "text", "") for c in getattr(result, "content", None) or ()]
    return "\n".join(p for p in parts if p)


async def governed_call(
    name: str,
    arguments: dict[str, Any] | None,
    send: Callable[[dict[str, Any] | None], Awaitable[Any]],
    *,
    on_block: OnBlock = "message",
) -> Any:
    """Decide `name(arguments)`, wait for an approval if one is needed, then `send` (maybe as edited) and record."""
    args = dict(arguments or {})
    try:
        governor, ticket = begin(name, args)
        approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
    except (ToolCallBlocked, ApprovalError) as exc:
        if on_block == "raise":
            raise
        return error_result(refusal_text(exc))
    return await _send(governor, ticket, approved, args, send)


async def _send(
    governor: Any,
    ticket: Ticket,
    approved: Approved | None,
    args: dict[str, Any],
    send: Callable[[dict[str, Any] | None], Awaitable[Any]],
    *,
    upstream_name: str | None = None,
) -> Any:
    """Send the call (as edited) and record its result; the client hook below stands aside for it."""
    run_args = approved.args if approved is not None and approved.args is not None else args
    with _Recording(governor, ticket, approved, running=upstream_name) as recording:
        return recording.done(await send(run_args))


async def _governing_calls(wrapped: Any, session: ClientSession, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`ClientSession.call_tool`, governed."""
    return await _call_tool(wrapped, *args, **kwargs)


async def _call_tool(original: Any, name: str, arguments: dict[str, Any] | None = None, *a: Any, **kw: Any) -> Any:
    if RUNNING.get() == name:  # governed already, by the layer running this tool
        return await original(name, arguments, *a, **kw)
    return await governed_call(name, arguments, lambda args: original(name, args, *a, **kw))


def install() -> None:
    """Govern every `ClientSession.call_tool` in this process (idempotent).

    Raises:
        ConfigurationError: This MCP SDK version is not one Clearance was tested with.
    """
    import importlib.metadata

    check_version("mcp", importlib.metadata.version("mcp"), minimum=(2, 0), below=(3, 0))
    wrap_method(ClientSession, "call_tool", _governing_calls)


# -- the proxy ------------------------------------------------------------------------------------


class _RawRecording(Recording):
    """A `CallToolResult` as JSON: `isError` counts as a failed call."""

    def outcome(self, result: Any) -> tuple[BaseException | None, Any]:
        text = result_text(result)
        if isinstance(result, dict) and result.get("isError") is True:
            return RuntimeError(text[:2000]), None
        return None, text


class Proxy:
    """Lists the tools of its upstream servers and governs every call to them.

    With one upstream its tools keep their names; with several each is named
    `<upstream>__<tool>`, and policy names the tools that way. An upstream that goes down is
    reconnected (a stdio one restarted) by `connected`; meanwhile its tools stay listed as last
    seen, and a call to one is decided and recorded, then answered with a tool error naming it.

    Messages are relayed as JSON-RPC (`handle`), past the MCP SDK's session layers: each is
    parsed once, a `tools/call` is decided on the arguments parsed, and what is forwarded is
    written from those arguments (as an approver edited them).

    Args:
        upstreams: Upstream name → target (`upstream_target`).
        approval_wait: How long a call waits for a pending approval (seconds) before it answers
            that the approval is pending; MCP clients time calls out (often after 60 s).
        first_wait: How long the first `tools/list` waits for upstreams still starting (seconds).
    """

    def __init__(self, upstreams: dict[str, Target], *, approval_wait: float = 45.0, first_wait: float = 20.0) -> None:
        if not upstreams:
            raise ConfigurationError("mcp-proxy needs at least one --upstream")
        self.upstreams = {name: Upstream(name, target) for name, target in upstreams.items()}
        self.approval_wait = approval_wait
        self.first_wait = first_wait
        self.routes: dict[str, tuple[Upstream, str]] = {}  # exposed name → (upstream, its tool name)
        # (tool, args hash) → a call still awaiting a human, and the arguments it was decided on
        self.pending: dict[tuple[str, str], tuple[Ticket, dict[str, Any]]] = {}

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Proxy]:
        """Keep every upstream connected for the life of the block, reconnecting any that goes."""
        async with anyio.create_task_group() as tasks:
            for upstream in self.upstreams.values():
                tasks.start_soon(upstream.run, name=f"mcp upstream {upstream.name}")
            try:
                yield self
            finally:
                tasks.cancel_scope.cancel()

    def _exposed(self, upstream: str, tool: str) -> str:
        return tool if len(self.upstreams) == 1 else f"{upstream}__{tool}"

    async def handle(self, message: Any) -> dict[str, Any] | None:
        """The answer to one JSON-RPC message from the client (None for a notification or a response)."""
        if not isinstance(message, dict):
            return error(None, RpcError(INVALID_REQUEST, "Invalid Request: not a JSON-RPC object"))
        request_id = message.get("id")
        if "method" not in message:
            return None  # a response: the proxy asks its clients nothing
        method = message["method"]
        if (
            message.get("jsonrpc") != "2.0"
            or not isinstance(method, str)
            or ("id" in message and not is_id(request_id))
        ):
            return error(request_id if is_id(request_id) else None, RpcError(INVALID_REQUEST, "Invalid Request"))
        if "id" not in message:
            return None  # notifications: initialized, cancelled (the transports act on that one), …
        params = message.get("params")
        try:
            if params is not None and not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "Invalid params: not an object")
            params = params or {}
            if method == "tools/call":
                result = await self.call_tool(params)
            elif method == "tools/list":
                result = await self.list_tools()
            elif method == "initialize":
                result = self.initialize(params)
            elif method == "ping":
                result = {}
            else:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
        except RpcError as exc:
            return error(request_id, exc)
        return answer(request_id, result)

    def initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        """The handshake: the client's protocol version when the proxy speaks it, else the latest."""
        asked = params.get("protocolVersion")
        version = asked if asked in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "clearance-mcp-proxy", "version": _version()},
        }

    async def list_tools(self) -> dict[str, Any]:
        """Every upstream's tools, under their exposed names (a down upstream's as last listed)."""
        with anyio.move_on_after(self.first_wait):  # the first list waits for upstreams still starting
            for upstream in self.upstreams.values():
                await upstream.tried.wait()
        tools, routes = [], {}
        for upstream in self.upstreams.values():
            for tool in await upstream.refresh():
                exposed = self._exposed(upstream.name, tool["name"])
                routes[exposed] = (upstream, tool["name"])
                tools.append({**tool, "name": exposed})
        self.routes = routes
        return {"tools": tools}

    async def call_tool(self, params: dict[str, Any]) -> dict[str, Any]:
        """Decide the call; forward it when allowed or approved; answer a refusal as a tool error.

        Raises:
            RpcError: The call is malformed, or the upstream answered it with a JSON-RPC error.
        """
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "Invalid params: the tool's name must be a string")
        if arguments is not None and not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: the arguments must be an object")
        args: dict[str, Any] = arguments or {}
        if name not in self.routes:
            await self.list_tools()
        route = self.routes.get(name)
        if route is None:
            return self._unknown(name, args)
        upstream, tool = route
        try:
            retried = self._retried(name, args)
            if retried is not None:  # forwarded as first decided: the retry's JSON may differ (1.0 for 1)
                governor, ticket, args = retried
            else:
                governor, ticket = begin(name, args)
            approved = None
            if ticket.approval_id is not None:
                decided = await self._wait(governor, ticket, name, args)
                if decided is None:
                    return text_result(
                        f"Waiting for approval {ticket.approval_id}: {ticket.decision.reason}. Nothing ran yet."
                        " Call this tool again with the same arguments once a person has approved it."
                    )
                ticket, approved = decided
        except (ToolCallBlocked, ApprovalError) as exc:
            return text_result(refusal_text(exc))
        run_args = approved.args if approved is not None and approved.args is not None else args
        with _RawRecording(governor, ticket, approved, running=tool) as recording:
            return recording.done(await upstream.call(tool, run_args))  # type: ignore[no-any-return]

    def _unknown(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Refuse a call to a tool no upstream lists, and record the refusal."""
        shown = ascii(name[:80]) + ("…" if len(name) > 80 else "")
        why = f"no MCP server behind this proxy has a tool called {shown}"
        governor = _runtime.current()
        ticket = governor.begin(name, args, get_session(), refusal=why)
        return text_result(refusal_text(blocked(ticket)))

    def _retried(self, tool: str, args: dict[str, Any]) -> tuple[Any, Ticket, dict[str, Any]] | None:
        """The pending call a retry with the same tool and arguments asks about again, and its arguments."""
        try:
            key = (tool, args_hash(args))
        except ValueError:  # not I-JSON: the boundary refuses the call itself
            return None
        pending = self.pending.pop(key, None)
        return (_runtime.current(), *pending) if pending is not None else None

    async def _wait(
        self, governor: Any, ticket: Ticket, tool: str, args: dict[str, Any]
    ) -> tuple[Ticket, Approved] | None:
        """The decided call and its approval; None when nobody decided within `approval_wait`.

        An undecided call is kept, so a retry with the same arguments picks it up instead of
        asking for a second approval. Woken by push when the decision arrives here.
        """
        assert ticket.approval_id is not None
        deadline = now_us() + int(self.approval_wait * 1e6)  # on the clock the approval's expiry is on
        try:
            while True:
                try:
                    decided, approved, _ = governor.approved_call(ticket.approval_id)
                except ApprovalPending:
                    left = (deadline - now_us()) / 1e6
                    if left <= 0:
                        self.pending[(tool, ticket.args_hash)] = (ticket, args)
                        return None
                    if ticket.waiter is not None:
                        await ticket.waiter.wait_async(min(left, FALLBACK_SECONDS))
                    else:
                        await asyncio.sleep(min(left, 0.25))
                    continue
                governor.claim(decided)
                return decided, approved
        finally:
            if ticket.waiter is not None:
                ticket.waiter.close()
                ticket.waiter = None


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("clearance")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "0"
