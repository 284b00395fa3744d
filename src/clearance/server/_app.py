"""`create_app(settings)`: the FastAPI application.

Nothing happens at import time; the store is opened when the app starts and closed when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..store import Database
from . import _errors
from ._limits import BodyLimit
from ._settings import ServerSettings
from .routes import approvals, arden, check, health, ingest, keys, policies, queries


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """Build the API for `settings` (default: from the environment)."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings.database_url, busy_timeout=settings.busy_timeout)
        try:
            yield
        finally:
            app.state.db.close()

    app = FastAPI(
        title="Clearance",
        version=__version__,
        summary="Policy, approvals and a tamper-evident audit log for AI agents' tool calls.",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    _errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(policies.router)
    app.include_router(check.router)
    app.include_router(ingest.router)
    app.include_router(approvals.router)
    app.include_router(queries.router)
    app.include_router(arden.router)
    return app
