"""Event sinks: how each of this server's exporters is doing (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..._sinks import Sinks, SinkStatus
from ..._store._keys import ApiKey
from .._auth import require

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[ApiKey, Depends(require("admin"))]


@router.get("/sinks", summary="Event sinks: delivered, failed, backlog (admin)")
async def sinks(request: Request, _: Admin) -> list[SinkStatus]:
    """Each exporter's counters since this process started, its backlog, and whether it is stalled.

    `delivered` and `failed` count events taken and attempts that raised; `backlog` the events
    committed and not delivered yet.
    """
    running: Sinks | None = request.app.state.sinks
    if running is None:
        return []
    return await run_in_threadpool(running.status)
