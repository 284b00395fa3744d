"""How `clearance serve` runs on uvicorn: in one process, or in several sharing one port.

Each process builds its own app from the settings (`ServeConfig.load`), so uvicorn's own
supervisor (`Multiprocess`) can start, watch and replace worker processes: it binds the socket
once and hands it to each. Every worker gets the same protocol (`timed_protocol`'s timeouts).
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.supervisors import Multiprocess

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..server import ServerSettings


class ServeConfig(uvicorn.Config):
    """uvicorn's settings for `clearance serve`; pickled to each worker, which builds the app on `load`.

    Args:
        settings: The server's settings (checked by the caller).
        log_level: uvicorn's log level.
        access_log: Whether to log a line per request.
        workers: How many processes serve the port.
    """

    def __init__(self, settings: ServerSettings, *, log_level: str, access_log: bool, workers: int) -> None:
        self.settings = settings
        super().__init__(
            "clearance.server:create_app",  # a placeholder until `load` builds the app
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=access_log,
            workers=workers,
            proxy_headers=settings.forwarded_allow_ips is not None,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            timeout_graceful_shutdown=5,
            # A worker that does not answer its supervisor within this is replaced: generous,
            # since on a busy machine building the app can take seconds.
            timeout_worker_healthcheck=60,
        )

    def load(self) -> None:
        """Build this process's app and protocol, then let uvicorn load them."""
        # Imported where the app is served: the supervisor of several workers never builds one.
        from ..server import _longpoll as longpoll
        from ..server import create_app

        app = create_app(self.settings)
        _freeze_after_startup(app)

        self.app = app
        self.http = timed_protocol(self.settings, functools.partial(longpoll.stop, app.state))
        super().load()


def serve_many(config: ServeConfig) -> None:
    """Serve in `config.workers` processes on one socket until interrupted; a worker that dies is replaced."""
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def _freeze_after_startup(app: FastAPI) -> None:
    """Once the app has started, keep what is loaded by then out of the collector's full passes.

    What is loaded by now (modules, the store, the routes) lives as long as the process; the
    collector's full passes over it otherwise stall every request in flight for tens of milliseconds.
    """
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with started(app) as state:
            gc.collect()
            gc.freeze()
            yield state

    app.router.lifespan_context = lifespan


_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def timed_protocol(settings: ServerSettings, stopping: Callable[[], None]) -> type[asyncio.Protocol]:
    """The HTTP protocol uvicorn uses (httptools), with the timeouts it lacks.

    uvicorn closes a connection only `timeout_keep_alive` after a response, and a byte received
    cancels that for good: a connection that never sends anything, sends a request slowly
    (slowloris) or never finishes one is held forever. Here a connection with no request in
    progress closes after `keep_alive_timeout`; a request's line and headers must arrive within
    `header_timeout` of its first byte and its body within `body_timeout` of its headers
    (absolute deadlines: trickling bytes does not extend them). Nothing is timed while the
    application runs, so long polls and event streams are untouched.

    When the server begins to shut down, each open connection it tells calls `stopping()`.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TimedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = settings.keep_alive_timeout  # type: ignore[assignment]
            self._deadline: asyncio.TimerHandle | None = None

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _until(self, seconds: float | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = None if seconds is None else self.loop.call_later(seconds, self._timed_out)

        def _timed_out(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                if self._idle():  # no response under way that a 408 would cut into
                    self.transport.write(_TIMED_OUT)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                settings.keep_alive_timeout, self.timeout_keep_alive_handler
            )

        def connection_lost(self, exc: Exception | None) -> None:
            self._until(None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # Any byte while idle starts a request's deadline, also bytes that begin none
            # (blank lines), which would otherwise cancel the keep-alive timer for good.
            if self._deadline is None and self._idle():
                self._until(settings.header_timeout)
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a request pipelined behind one still running
                self._until(settings.header_timeout)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            queued = bool(self.pipeline) and self.pipeline[0][0] is self.cycle
            # A queued request's body is not read until the one before it is answered.
            self._until(None if queued else settings.body_timeout)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._until(None)

        def shutdown(self) -> None:
            stopping()  # long polls and streams answer now instead of holding the shutdown up
            super().shutdown()

        def handle_websocket_upgrade(self) -> None:
            self._until(None)
            super().handle_websocket_upgrade()

    return TimedProtocol
