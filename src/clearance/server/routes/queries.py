"""Reading the audit log: search with cursor paging, sessions, usage, chain verification.

An agent key reads only its own agent's records; approver and admin keys read all. Every
record is returned, whatever it holds (see `store._shown.shown`); filters are text every store
keeps, else 422 naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ..._store import Database, EventFilter, StoredEvent
from ..._store import _events as events
from ..._store import _queries as queries
from ..._store._keys import ApiKey
from ..._text import Text, checked_text
from ..._wire import SENT, AuditEvent, Sent
from .._auth import current_key, database, require
from .._errors import INT64_MAX, APIError

router = APIRouter(prefix="/v1", tags=["audit"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]


def _agent_for(key: ApiKey, asked: str | None) -> str | None:
    """The agent a query may cover: an agent key's own, whatever it asked for."""
    if {"approver", "admin"} & set(key.scopes):
        return asked
    if asked is not None and asked != key.agent:
        raise APIError(403, "an agent key reads only its own agent's records")
    return key.agent


def event_out(e: StoredEvent) -> AuditEvent:
    """A record as the API returns it: its fields, then its chain position and hash (never the body's own)."""
    return AuditEvent({**e.body, "seq": e.seq, "hash": e.hash})


class Page(Sent):
    """A page of events, newest first."""

    events: list[AuditEvent]
    next_cursor: str | None


@dataclass(frozen=True)
class Search:
    """An audit search: which events, and text they must contain."""

    filter: EventFilter
    text: str | None


def search_of(
    key: Caller,
    agent: Text | None = None,
    session: Text | None = None,
    tool: Text | None = None,
    kind: Text | None = None,
    decision: Annotated[
        Text | None, Query(description="a decision or status: allow, block, require_approval, ok, error, approved, …")
    ] = None,
    call_id: Text | None = None,
    since_us: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
    until_us: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="text anywhere in the record, literally"),
        AfterValidator(checked_text),
    ] = None,
) -> Search:
    """The search the query string asks for, narrowed to what the caller may read."""
    f = EventFilter(
        agent=_agent_for(key, agent),
        session=session,
        tool=tool,
        kind=kind,
        decision=decision,
        call_id=call_id,
        since_us=since_us,
        until_us=until_us,
    )
    return Search(f, q or None)


Searched = Annotated[Search, Depends(search_of)]


@router.get("/events", summary="Search the audit log")
async def search(
    found_by: Searched,
    db: Db,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page:
    """Events matching every filter given, newest first; pass `next_cursor` back for the next page."""
    found, nxt = await run_in_threadpool(
        lambda: queries.search(
            db, found_by.filter, text=found_by.text, before=int(cursor) if cursor else None, limit=limit
        )
    )
    return Page(
        events=[event_out(e) for e in found],
        next_cursor=str(nxt) if nxt is not None else None,
    )


@pydantic_dataclass(config=SENT)
class SessionSummary(queries.SessionSummary):
    """A session summary as the API sends it: the store's, every field in its JSON."""


@router.get("/sessions", summary="Recent sessions")
async def list_sessions(
    key: Caller, db: Db, agent: Text | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[SessionSummary]:
    """The most recently active sessions, newest first."""
    found = await run_in_threadpool(lambda: queries.sessions(db, agent=_agent_for(key, agent), limit=limit))
    return [SessionSummary(**vars(s)) for s in found]


@router.get("/sessions/{session_id}", summary="Every event of a session, in order")
async def session_detail(session_id: Annotated[Text, Path()], key: Caller, db: Db) -> list[AuditEvent]:
    """The session's events, oldest first: its replay."""
    f = EventFilter(session=session_id, agent=_agent_for(key, None))
    found = await run_in_threadpool(lambda: list(events.iterate(db, f)))
    if not found:
        raise APIError(404, f"no session {session_id!r} is visible to this key")
    return [event_out(e) for e in found]


class UsageOut(Sent):
    """LLM usage of one group; unpriced calls are counted apart, never as $0."""

    key: str
    calls: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    unpriced_calls: int


@router.get("/usage", summary="LLM usage and cost, grouped")
async def usage(
    key: Caller,
    db: Db,
    by: Literal["model", "session", "agent", "day"] = "model",
    agent: Text | None = None,
    session: Text | None = None,
    since_us: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
    until_us: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
) -> list[UsageOut]:
    """Calls, tokens and cost by model, session, agent or day."""
    f = EventFilter(agent=_agent_for(key, agent), session=session, since_us=since_us, until_us=until_us)
    return [UsageOut(**r.__dict__) for r in await run_in_threadpool(queries.usage, db, f, by)]


class VerifyOut(Sent):
    """The result of recomputing the hash chain."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    broken_seq: int | None
    problem: str | None


@router.get("/audit/verify", summary="Recompute the hash chain (admin)")
async def verify(_: Annotated[ApiKey, Depends(require("admin"))], db: Db) -> VerifyOut:
    """Recompute every record's hash; report the first one that was changed or removed."""
    report = await run_in_threadpool(events.verify, db)
    return VerifyOut(**report.__dict__)
