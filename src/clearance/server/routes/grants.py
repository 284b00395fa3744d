"""Grants over HTTP: list, read and revoke what approvers let through beyond one call.

Grants are given with an approval (`POST /v1/approvals/{id}/approve` with `grant` or
`extend`). Approvers and admins see and revoke every grant; an agent key sees only its own
agent's and revokes none.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ..._clock import now_us
from ..._grant_views import grant_out
from ..._store import Database
from ..._store import _grants as grants
from ..._store._keys import ApiKey
from ..._text import Text, escaped
from ..._wire import GrantOut
from ...errors import GrantNotFound
from .. import _longpoll as longpoll
from .._auth import actor, current_key, database
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["grants"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]
_MAX_ID = 100  # every grant id is `grt_` and 32 hex digits


class RevokeIn(BaseModel):
    """Why a grant is revoked (kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    reason: Text | None = Field(default=None, max_length=2000)


def _sees_all(key: ApiKey) -> bool:
    return bool({"approver", "admin"} & set(key.scopes))


def _unknown(grant_id: str) -> APIError:
    shown = escaped(grant_id[:_MAX_ID]) + ("…" if len(grant_id) > _MAX_ID else "")
    return APIError(404, f"no grant has the id {shown!r}")


def _read(db: Database, key: ApiKey, grant_id: str) -> grants.Grant:
    """The grant, if this key may see it; another agent's is as unknown as a missing one."""
    try:
        grant = grants.get(db, grant_id)
    except GrantNotFound:
        raise _unknown(grant_id) from None
    if not _sees_all(key) and grant.agent != key.agent:
        raise _unknown(grant_id)
    return grant


@router.get("/grants", summary="List grants")
async def list_grants(
    key: Caller,
    db: Db,
    agent: Annotated[Text | None, Query(max_length=200, description="only this agent's")] = None,
    session: Annotated[Text | None, Query(max_length=200, description="only this session's")] = None,
    live: Annotated[bool, Query(description="only those that still let calls through")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[GrantOut]:
    """Grants and budget extensions, newest first.

    An agent key sees only its own agent's (asking for another agent's gets none).
    """
    if not _sees_all(key):
        if key.agent is None or (agent is not None and agent != key.agent):
            return []  # a person without the approver or admin role, or another agent's
        agent = key.agent

    def read() -> list[GrantOut]:
        at = now_us()
        found = grants.listing(db, agent=agent, session=session, live=live, limit=limit)
        return [grant_out(db, g, at) for g in found]

    return await run_in_threadpool(read)


@router.get("/grants/{grant_id}", summary="One grant")
async def get_grant(grant_id: Annotated[Text, Path()], key: Caller, db: Db) -> GrantOut:
    """The grant, with how much of it is used and whether it is still live."""
    return await run_in_threadpool(lambda: grant_out(db, _read(db, key, grant_id), now_us()))


@router.post("/grants/{grant_id}/revoke", summary="Revoke a grant (approver or admin)")
async def revoke(
    grant_id: Annotated[Text, Path()], request: Request, key: Caller, db: Db, body: RevokeIn | None = None
) -> GrantOut:
    """End a grant now: no call uses it once this answers (a budget extension stops counting).

    403 for a key that is neither approver nor admin; 404 for an unknown grant; 409 when it
    had ended already (revoked, expired or used up).
    """
    if not _sees_all(key):
        raise APIError(403, "only approvers and admins revoke grants (this key or person has neither role)")
    reason = body.reason if body is not None else None

    def run() -> GrantOut:
        try:
            return grant_out(db, grants.revoke(db, grant_id, by=actor(key), why=reason), now_us())
        except GrantNotFound:
            raise _unknown(grant_id) from None
        except ValueError as exc:
            ended = grants.get(db, grant_id)
            raise APIError(409, str(exc), details=[{"location": "status", "message": ended.status(now_us())}]) from None

    revoked = await run_in_threadpool(run)
    longpoll.announce(request, "grants")
    return revoked
