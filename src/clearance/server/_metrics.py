"""Prometheus metrics for the people on call: `GET /metrics`.

On the API's port it takes a key with the `metrics` scope (or an admin's); with
`metrics_address` set the same metrics are also served, with no key, on that separate address
(for a scraper that only that network reaches). What is counted where is in `_meters`; the
decisions are counted from the audit log by an event sink (`_record_meter`), which runs with the
app, as does the separate listener.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import start_http_server
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Receive, Scope, Send

from .._sinks import Sinks
from .._sinks._sources import StoreSource
from .._store._keys import ApiKey
from ..errors import StoreError
from ._auth import metrics_reader
from ._meters import Meters
from ._settings import ServerSettings

log = logging.getLogger("clearance.server")
_TIMED = {"/v1/check": "/v1/check", "/policy/check": "/policy/check"}


def install(app: FastAPI, settings: ServerSettings) -> None:
    """Count what the app does, serve `GET /metrics`, and run the metrics sink (and listener) with the app."""
    meters = Meters(app.state)
    app.state.metrics = meters
    app.state.metrics_sinks = None
    app.add_middleware(_CheckTimer, meters=meters)
    _count_store_errors(app, meters)

    @asynccontextmanager
    async def running(_: Any) -> AsyncIterator[None]:
        started = await asyncio.to_thread(_start, app, settings, meters)
        try:
            yield
        finally:
            await asyncio.to_thread(started.close)

    router = APIRouter(lifespan=running)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request, _: Annotated[ApiKey, Depends(metrics_reader)]) -> Response:
        """The metrics in Prometheus's text format (or OpenMetrics, when the scraper asks for it)."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await run_in_threadpool(encoder, meters.registry)
        return Response(body, media_type=content_type)

    app.include_router(router)  # FastAPI runs a router's lifespan inside the app's: after the store opens


class _Running:
    """What runs beside the app: the metrics sink, and the separate listener."""

    def __init__(self, app: FastAPI, sinks: Sinks, listener: tuple[Any, Any] | None) -> None:
        self.app, self.sinks, self.listener = app, sinks, listener

    def close(self) -> None:
        if self.listener is not None:
            server, thread = self.listener
            server.shutdown()
            server.server_close()
            thread.join(5)
        self.app.state.metrics_sinks = None
        self.sinks.close()


def _start(app: FastAPI, settings: ServerSettings, meters: Meters) -> _Running:
    """Start the metrics sink over the store, then the listener on `metrics_address` (if set).

    Raises:
        StoreError: The store cannot be opened for the sink.
        OSError: The metrics address cannot be listened on.
    """
    source = StoreSource(settings.database_url, busy_timeout=settings.busy_timeout)
    try:
        sinks = Sinks([meters.sink()], source)
    except BaseException:
        source.close()
        raise
    listener = None
    if settings.metrics_address is not None:
        host, _, port = settings.metrics_address.rpartition(":")
        try:
            listener = start_http_server(int(port), addr=host.strip("[]"), registry=meters.registry)
        except BaseException:
            sinks.close()
            raise
        log.info("metrics at http://%s/metrics (no key)", settings.metrics_address)
    app.state.metrics_sinks = sinks
    return _Running(app, sinks, listener)


def _count_store_errors(app: FastAPI, meters: Meters) -> None:
    """Count every request answered 503 because the store failed (the error handler stays the app's)."""
    handler = app.exception_handlers[StoreError]

    async def counted(request: Request, exc: Exception) -> Response:
        meters.store_errors.labels(where="request").inc()
        answer = handler(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    app.exception_handlers[StoreError] = counted


class _CheckTimer:
    """Times the decision routes, from the request's arrival to the end of its answer."""

    def __init__(self, app: ASGIApp, meters: Meters) -> None:
        self.app = app
        self.meters = meters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _TIMED.get(scope.get("path", "")) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.meters.check_seconds.labels(route=route).observe(time.perf_counter() - started)
