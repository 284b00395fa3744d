"""`create_app(settings)`: the FastAPI application.

Nothing happens at import time; the store is opened when the app starts and closed when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import make_url

from .. import _signing as signing
from .._sinks import _process as exporting
from .._version import __version__
from . import _dashboard, _errors, _metrics, _tracing
from . import _longpoll as longpoll
from ._commits import GroupCommit
from ._leader import Leadership
from ._limits import BodyLimit
from ._sealer import recall, seal_forever
from ._settings import ServerSettings
from ._sweeper import channel_forever, deliver_forever, sweep_forever
from .channels import Channel, configured
from .routes import (
    admin,
    approvals,
    arden,
    audit,
    check,
    checkpoints,
    costs,
    decisions,
    drafts,
    grants,
    health,
    ingest,
    keys,
    policies,
    queries,
    session,
    shadow,
    sinks,
    slack,
    users,
)

log = logging.getLogger("clearance.server")


def create_app(settings: ServerSettings | None = None, *, channels: Sequence[Channel] | None = None) -> FastAPI:
    """Build the API for `settings` (default: from the environment).

    `channels` are the approval channels to keep in step (default: the built-in ones the settings
    configure, `channels.configured(settings)`); pass your own beside or instead of them.
    """
    settings = settings or ServerSettings()
    chosen = list(configured(settings) if channels is None else channels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = _tracing.store(settings)
        app.state.signing_key_path = Path(
            settings.signing_key or signing.default_key_path(settings.database_url)
        ).absolute()
        app.state.signing_key = await asyncio.to_thread(signing.load_or_create, app.state.signing_key_path)
        await asyncio.to_thread(recall, app.state)  # before anything signs: the signer's, a receipt's
        log.info(
            "signing checkpoints and receipts with key %s (%s)", app.state.signing_key.id, app.state.signing_key_path
        )
        app.state.db = store(settings.database_url, busy_timeout=settings.busy_timeout)
        try:  # decisions are committed by a writer thread on a second connection, many at once
            app.state.commits = GroupCommit(store(settings.database_url, busy_timeout=settings.busy_timeout))
        except BaseException:
            app.state.db.close()
            raise
        feed = None
        app.state.leadership = None
        if app.state.db.dialect == "postgresql":  # replicas hear each other's changes at once
            conninfo = (
                make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
            )
            feed = asyncio.create_task(longpoll.listen(app.state, conninfo))
            # Workers and replicas share one PostgreSQL: the sweep runs in the one that leads it.
            app.state.leadership = Leadership(conninfo, "sweeper")
        sweeper = asyncio.create_task(sweep_forever(app.state, app.state.leadership))
        deliverer = asyncio.create_task(deliver_forever(app.state))
        sealer = asyncio.create_task(seal_forever(app.state))
        posters = [asyncio.create_task(channel_forever(app.state, channel)) for channel in chosen]
        app.state.sinks = None
        try:
            app.state.sinks = exporting.for_store(
                settings.database_url,
                settings.exporters,
                busy_timeout=settings.busy_timeout,
                otel=settings.otel,  # the calls' spans, from the log: remote agents' too
                otel_args=settings.otel_args,
                otel_usage=settings.otel_usage,
            )
            yield
        finally:
            for task in (t for t in (feed, sweeper, deliverer, sealer, *posters) if t is not None):
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
        **_tracing.fastapi_options(settings),
    )
    app.state.settings = settings
    app.state.channels = {channel.name: channel for channel in chosen}
    if len(app.state.channels) != len(chosen):
        raise ValueError(f"two approval channels share a name: {sorted(c.name for c in chosen)}")
    _errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _metrics.install(app, settings)
    _tracing.install(app, settings)
    # The hot paths first: each request is matched against the routers in this order.
    app.include_router(check.router)
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(drafts.router)
    app.include_router(shadow.router)  # before policies: /v1/policies/shadow is not a revision id
    app.include_router(policies.router)
    app.include_router(approvals.router)
    app.include_router(grants.router)
    app.include_router(decisions.router)
    app.include_router(queries.router)
    app.include_router(audit.router)
    app.include_router(checkpoints.router)
    app.include_router(costs.router)
    app.include_router(arden.router)
    app.include_router(session.router)
    app.include_router(users.router)
    app.include_router(slack.router)
    app.include_router(admin.router)
    app.include_router(sinks.router)
    _dashboard.install(app)
    return app
