"""`clearance mcp-proxy`: an MCP server that governs every tool call to the MCP servers behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import friendly, safe

if TYPE_CHECKING:
    from ..integrations.mcp import Proxy


@click.command("mcp-proxy")
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    required=True,
    metavar="NAME=TARGET",
    help="An MCP server to front: a command line (stdio) or an http(s):// URL (streamable HTTP); repeatable.",
)
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Pass NAME (this process's value, or VALUE) to stdio upstreams, beside PATH, HOME, LANG, TZ and the"
    " like; repeatable. Nothing else of this process's environment reaches them.",
)
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.",
)
@click.option(
    "--approval-wait",
    default=45.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds a call waits for a pending approval before answering that it is pending.",
)
@friendly
def mcp_proxy(upstreams: tuple[str, ...], env: tuple[str, ...], http: str | None, approval_wait: float) -> None:
    """Front MCP servers and apply policy to every tools/call, so any MCP client is governed.

    Configured like an agent (CLEARANCE_POLICY and CLEARANCE_DATABASE_URL, or CLEARANCE_SERVER_URL
    and CLEARANCE_API_KEY; CLEARANCE_AGENT names it). A call that needs approval waits for the
    decision up to --approval-wait seconds; after that the client is told the approval is
    pending, and the same call made again picks up that approval instead of asking anew.

    An upstream that goes down is restarted (stdio) or reconnected (HTTP), with growing waits
    while it keeps failing; meanwhile its tools stay listed and a call to one is answered with
    an error that names it. See docs/guides/mcp.md.
    """
    import anyio

    from .._guard import _runtime
    from ..errors import ConfigurationError
    from ..integrations._mcp_upstream import upstream_env
    from ..integrations.mcp import Proxy, upstream_target

    try:
        stdio_env = upstream_env(env)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    targets = {}
    for spec in upstreams:
        name, sep, target = spec.partition("=")
        if not sep or not name.strip():
            raise click.UsageError(f"--upstream {spec!r}: write NAME=COMMAND or NAME=URL")
        if name.strip() in targets:
            raise click.UsageError(f"--upstream {name.strip()!r} is given twice")
        targets[name.strip()] = upstream_target(target, stdio_env)
    _runtime.current()  # configure now: a bad configuration fails here, before any client connects
    proxy = Proxy(targets, approval_wait=approval_wait)
    if http is None:
        anyio.run(_stdio, proxy, backend_options=_loop_options())
        return
    host, sep, port = http.rpartition(":")
    if not sep or not port.isdigit():
        raise click.UsageError(f"--http {http!r}: write HOST:PORT")
    if host.startswith("[") and host.endswith("]"):  # [::1]:8000
        host = host[1:-1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"clearance mcp-proxy: serving http://{safe(shown)}:{port}/mcp", err=True)
    from ..integrations._mcp_http import is_loopback

    if not is_loopback(host):
        click.echo(
            "clearance mcp-proxy: warning: not a loopback address — anyone who can reach it can call the tools"
            " behind it (the proxy asks no credentials), and no Host check guards against DNS rebinding",
            err=True,
        )
    anyio.run(_http, proxy, host, int(port), backend_options=_loop_options())


def _loop_options() -> dict[str, bool]:
    """Run on uvloop when it is installed (uvicorn's extra brings it): a cheaper event loop per message."""
    import importlib.util

    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


async def _stdio(proxy: Proxy) -> None:
    from ..integrations._mcp_stdio import serve_stdio

    async with proxy.connected():
        await serve_stdio(proxy)


async def _http(proxy: Proxy, host: str, port: int) -> None:
    import signal

    import anyio

    from ..integrations._mcp_http import App, serve

    async with proxy.connected(), anyio.create_task_group() as tasks:
        tasks.start_soon(serve, App(proxy, host), host, port)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:  # stopped: the upstreams it started are stopped too
                tasks.cancel_scope.cancel()
                break
