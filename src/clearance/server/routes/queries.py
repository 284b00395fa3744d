"""Reading the audit log: search with cursor paging, sessions, usage, chain verification.

An agent key reads only its own agent's records; approver and admin keys read all. Every
record is returned, whatever it holds (see `store._shown.shown`); filters are text every store
keeps, else 422 naming the parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ... import _integrity as integrity
from ..._store import Database, EventFilter, StoredEvent
from ..._store import _events as events
from ..._store import _queries as queries
from ..._store._keys import ApiKey
from ..._text import Text, checked_text
from ..._wire import SENT, AuditEvent, Sent
from .. import _sealer as sealer
from .._auth import current_key, database, require
from .._errors import INT64_MAX, APIError

router = APIRouter(prefix="/v1", tags=["audit"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]


def _agent_for(key: ApiKey, asked: str | None) -> str | None:
    """The agent a query may cover: any (approvers, admins), else an agent key's own, whatever it asked for.

    A caller that is neither — a signed-in person with only a group role such as `finance` —
    reads no agent's records (without this, its empty agent read as "every agent").
    """
    if {"approver", "admin"} & set(key.scopes):
        return asked
    if key.agent is None:
        raise APIError(403, "only approvers, admins and agent keys read records (this caller is none of them)")
    if asked is not None and asked != key.agent:
        raise APIError(403, "an agent key reads only its own agent's records")
    return key.agent


def visible_to(key: ApiKey) -> str:
    """Whom a "not visible" answer speaks to: a signed-in person as "you", else "this key"."""
    return "you" if key.id.startswith("usr_") else "this key"


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


async def _replay(
    db: Database, key: ApiKey, session: str, until_us: int | None = None, last: int | None = None
) -> list[AuditEvent]:
    f = EventFilter(session=session, agent=_agent_for(key, None), until_us=until_us)
    if last is None:
        found = await run_in_threadpool(lambda: list(events.iterate(db, f)))
    else:  # the newest `last` (oldest first): what an approval shows of its session, not all of it
        found = await run_in_threadpool(lambda: events.query(db, f, limit=last, newest_first=True))
    if not found and until_us is None and last is None:
        raise APIError(404, f"no session {session!r} is visible to {visible_to(key)}")
    return [event_out(e) for e in found]


@router.get("/replay", summary="Every event of a session, in order (any session id)")
async def replay(
    session: Annotated[Text, Query(min_length=1, description="the session id, whatever characters it holds")],
    key: Caller,
    db: Db,
    until_us: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="only events before this time")] = None,
    last: Annotated[int | None, Query(ge=1, le=1000, description="only the newest this many")] = None,
) -> list[AuditEvent]:
    """The session's events, oldest first: its replay (or, with `until_us` / `last`, the part of it asked for).

    The id is a query parameter, so every id a record holds can be asked for, including ones a
    URL path cannot carry (`.` and `..` segments, which every URL parser removes). A session
    with nothing visible is a 404; a part of one that holds nothing is an empty list.
    """
    return await _replay(db, key, session, until_us, last)


@router.get("/sessions/{session_id:path}", summary="Every event of a session, in order")
async def session_detail(session_id: Annotated[Text, Path()], key: Caller, db: Db) -> list[AuditEvent]:
    """The session's events, oldest first: its replay.

    The id is the rest of the path, percent-encoded (`/` as `%2F`); an id with a `.` or `..`
    segment or a line break is asked for with `GET /v1/replay?session=`.
    """
    return await _replay(db, key, session_id)


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
    checkpoints: int = Field(description="Signed checkpoints in the chain whose signature verifies")
    checkpoint_seq: int | None = Field(description="The position the newest of them signs (None: none)")


@router.get("/audit/verify", summary="Recompute the hash chain (admin)")
async def verify(_: Annotated[ApiKey, Depends(require("admin"))], db: Db, request: Request) -> VerifyOut:
    """Recompute every record's hash and check the chain against its signed checkpoints.

    Reports the first record that was changed or removed, or the end of a log truncated
    since its newest checkpoint. The server's own signing key is trusted: a checkpoint by any
    other key the chain introduces counts only when one signed by the server's key follows it;
    and the newest checkpoint the server remembers signing must still be in the chain.
    """
    state = request.app.state
    anchor = integrity.trusted_keys([state.signing_key.public_pem.encode()])
    try:
        known, unusable = await run_in_threadpool(sealer.known, state), None
    except sealer.Refused as exc:  # the chain is still checked; the answer is not ok
        known, unusable = None, f"not verified against the signer's memory: {exc}"
    report = await run_in_threadpool(lambda: integrity.verify_store(db, anchor=anchor, known=known))
    if report.ok and unusable is not None:
        report = dataclasses.replace(report, ok=False, problem=unusable)
    return VerifyOut(**report.__dict__)
