"""The audit log a row per call, one record with its place in the chain, and exports of a search.

Every record is returned and exported, whatever it holds: one no encoder writes whole is marked
where it differs, and says how (`degraded`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field

from ..._export import Format, lines
from ..._store import Database, StoredEvent, _calls
from ..._store import _events as events
from ..._store import _queries as queries
from ..._store._keys import ApiKey
from ..._store._shown import DEGRADED
from ..._wire import AuditEvent, Sent
from .._auth import current_key, database
from .._errors import INT64_MAX, APIError
from .queries import Search, Searched, event_out, visible_to

router = APIRouter(prefix="/v1", tags=["audit"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]
EXPORT_PAGE = 1000
CHUNK_BYTES = 64 * 1024


def _found(db: Database, search: Search) -> Iterator[StoredEvent]:
    cursor: int | None = None
    while True:
        page, cursor = queries.search(db, search.filter, text=search.text, before=cursor, limit=EXPORT_PAGE)
        yield from page
        if cursor is None:
            return


def _chunks(db: Database, search: Search, fmt: Format) -> Iterator[bytes]:
    buffered: list[str] = []
    size = 0
    for line in lines(_found(db, search), fmt):
        buffered.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(buffered).encode()
            buffered, size = [], 0
    yield "".join(buffered).encode()


@router.get(
    "/events/export", summary="Export a search of the audit log (JSONL or CSV)", response_class=StreamingResponse
)
async def export(
    found_by: Searched, db: Db, format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl"
) -> StreamingResponse:
    """Every event the search matches, newest first, streamed as a download.

    Takes the same filters as `GET /v1/events`; the same format as `clearance audit export`
    (CSV cells that a spreadsheet would run as a formula are prefixed with `'`).
    """
    body = _chunks(db, found_by, format)
    media = "application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(
        body,  # a sync iterator: Starlette reads it on a worker thread
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="clearance-audit.{format}"'},
    )


class CallOut(Sent):
    """One row of the audit log by call: a tool call's records, oldest first, or a record of no call."""

    call_id: str | None = Field(description="The call's id (None: a record of no call, e.g. an LLM call)")
    agent: str | None = Field(description="The agent whose call it is (None: a record of no call)")
    steps: list[AuditEvent]
    more_steps: int = Field(
        description=f"Records after the first {_calls.STEPS}, left out (counted up to {_calls.MORE_COUNTED})"
    )
    more_capped: bool = Field(description=f"More than {_calls.MORE_COUNTED} records left out: `more_steps` is a floor")


class CallPage(Sent):
    """A page of calls, newest first (each at its newest record the search matches)."""

    calls: list[CallOut]
    next_cursor: str | None


@router.get("/calls", summary="Search the audit log, a row per tool call")
async def calls(
    found_by: Searched,
    db: Db,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}\.\d{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> CallPage:
    """Calls with a record matching every filter given, each with all of its records; newest first.

    A call's records (`tool_call.decided`, `approval.requested`, `approval.decided`,
    `tool_call.finished`, `approval.executed`, …) share its `call_id`; a record of no call is a
    row of its own. Takes the filters of `GET /v1/events`; pass `next_cursor` back for the next
    page. A rare filter can answer with part of a page (even none) and a cursor.
    """
    after = _calls.Cursor.parse(cursor) if cursor else None
    found, nxt = await run_in_threadpool(
        lambda: _calls.calls(db, found_by.filter, text=found_by.text, cursor=after, limit=limit)
    )
    return CallPage(
        calls=[
            CallOut(
                call_id=c.call_id,
                agent=c.agent,
                steps=[event_out(e) for e in c.steps],
                more_steps=c.more_steps,
                more_capped=c.more_capped,
            )
            for c in found
        ],
        next_cursor=str(nxt) if nxt is not None else None,
    )


class Chain(Sent):
    """Where a record sits in the hash chain and whether it verifies."""

    seq: int
    hash: str
    prev_hash: str
    head_seq: int
    verified: bool
    problem: str | None


class EventDetail(Sent):
    """One record, whole, with its chain position."""

    event: AuditEvent
    chain: Chain
    degraded: list[str] = Field(
        default_factory=list,
        description="How the record shown differs from the record stored (empty: it is the stored record)",
    )


@router.get("/events/{seq}", summary="One audit record, with its chain position and verification")
async def event_detail(seq: Annotated[int, Path(ge=1, le=INT64_MAX)], key: Caller, db: Db) -> EventDetail:
    """The record at chain position `seq`, rechecked against the record before it.

    An agent key reads only its own agent's records.
    """
    found = await run_in_threadpool(events.locate, db, seq)
    own_only = not ({"approver", "admin"} & set(key.scopes))
    if found is None or (own_only and found.event.body.get("agent") != key.agent):
        raise APIError(404, f"no record at position {seq} is visible to {visible_to(key)}")
    e = found.event
    return EventDetail(
        event=event_out(e),
        chain=Chain(
            seq=e.seq,
            hash=e.hash,
            prev_hash=found.prev_hash,
            head_seq=found.head_seq,
            verified=found.problem is None,
            problem=found.problem,
        ),
        degraded=list(e.body.get(DEGRADED, [])),
    )
