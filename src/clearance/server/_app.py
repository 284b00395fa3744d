"""`create_app(settings)`: the FastAPI application.

Nothing happens at import time; the store is opened when the app starts and closed when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from .._sinks import _process as exporting
from .._store import Database
from .._version import __version__
from . import _dashboard, _errors
from . import _longpoll as longpoll
from ._commits import GroupCommit
from ._limits import BodyLimit
from ._settings import ServerSettings
from ._slack import Slack
from ._sweeper import deliver_forever, slack_forever, sweep_forever
from .routes import (
    admin,
    approvals,
    arden,
    audit,
    check,
    costs,
    drafts,
    health,
    ingest,
    keys,
    policies,
    queries,
    session,
    sinks,
    slack,
    users,
)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """Build the API for `settings` (default: from the environment)."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings.database_url, busy_timeout=settings.busy_timeout)
        try:  # decisions are committed by a writer thread on a second connection, many at once
            app.state.commits = GroupCommit(Database(settings.database_url, busy_timeout=settings.busy_timeout))
        except BaseException:
            app.state.db.close()
            raise
        feed = None
        if app.state.db.dialect == "postgresql":  # replicas hear each other's changes at once
            conninfo = (
                make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
            )
            feed = asyncio.create_task(longpoll.listen(app.state, conninfo))
        sweeper = asyncio.create_task(sweep_forever(app.state))
        deliverer = asyncio.create_task(deliver_forever(app.state))
        app.state.slack = slack_of(settings)
        poster = asyncio.create_task(slack_forever(app.state)) if app.state.slack is not None else None
        app.state.sinks = None
        try:
            app.state.sinks = exporting.for_store(
                settings.database_url, settings.exporters, busy_timeout=settings.busy_timeout
            )
            yield
        finally:
            for task in (t for t in (feed, sweeper, deliverer, poster) if t is not None):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            app.state.commits.close()
            if app.state.sinks is not None:  # after the last commit, so it is delivered
                await asyncio.to_thread(app.state.sinks.close)
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
    # The hot paths first: each request is matched against the routers in this order.
    app.include_router(check.router)
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(drafts.router)
    app.include_router(policies.router)
    app.include_router(approvals.router)
    app.include_router(queries.router)
    app.include_router(audit.router)
    app.include_router(costs.router)
    app.include_router(arden.router)
    app.include_router(session.router)
    app.include_router(users.router)
    app.include_router(slack.router)
    app.include_router(admin.router)
    app.include_router(sinks.router)
    _dashboard.install(app)
    return app


def slack_of(settings: ServerSettings) -> Slack | None:
    """The Slack integration, when its token, signing secret and channel are all configured."""
    if settings.slack_bot_token is None or settings.slack_signing_secret is None or settings.slack_channel is None:
        return None
    from slack_sdk import WebClient
    from slack_sdk.signature import SignatureVerifier

    base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base, timeout=10)
    return Slack(client, SignatureVerifier(settings.slack_signing_secret.get_secret_value()), settings.slack_channel)
