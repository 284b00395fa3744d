"""Liveness and readiness."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request

from ..._store import Database
from .. import _longpoll as longpoll
from .._auth import database
from .._errors import APIError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is serving")
def healthz() -> dict[str, str]:
    """Always `ok` while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the store answers")
def readyz(request: Request, db: Database = Depends(database)) -> dict[str, str]:  # noqa: B008
    """`ok` when the store answers a query; 503 in the error shape otherwise.

    `long_polls` is how many long polls this process holds. On PostgreSQL, `change_feed` says
    whether this replica hears other replicas' changes (LISTEN/NOTIFY) at once (`listening`) or
    only by re-checking every second (`lost`), `sweeper` whether this process runs the expiry
    sweep for all of them (`leader`) or stands by to take it over (`standby`), and `process` is
    the id of the process that answered (one of `clearance serve --workers N`).
    """
    try:
        with db.read() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except Exception as exc:
        raise APIError(503, f"the store does not answer: {type(exc).__name__}", headers={"Retry-After": "1"}) from exc
    ready = {"status": "ok", "database": db.dialect, "long_polls": str(longpoll.held(request.app.state))}
    if db.dialect == "postgresql":
        ready["change_feed"] = "listening" if getattr(request.app.state, "feed", False) else "lost"
        leadership = getattr(request.app.state, "leadership", None)
        ready["sweeper"] = "leader" if leadership is not None and leadership.leading else "standby"
        ready["process"] = str(os.getpid())
    return ready
