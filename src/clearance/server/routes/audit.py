"""One audit record with its place in the chain, and exports of a search (JSONL, CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ...store import Database
from ...store import _events as events
from ...store import _queries as queries
from ...store._keys import ApiKey
from .._auth import current_key, database
from .._errors import APIError
from .queries import Search, Searched

router = APIRouter(prefix="/v1", tags=["audit"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]
EXPORT_PAGE = 1000
CSV_COLUMNS = (
    "seq",
    "at",
    "kind",
    "agent",
    "environment",
    "session",
    "tool",
    "call_id",
    "decision",
    "reason",
    "rule_ids",
    "policy_revision",
    "args",
    "redacted",
    "error",
    "model",
    "tokens",
    "cost_usd",
    "hash",
)


def _rows(db: Database, search: Search) -> Iterator[tuple[int, str, dict[str, Any]]]:
    cursor: int | None = None
    while True:
        page, cursor = queries.search(db, search.filter, text=search.text, before=cursor, limit=EXPORT_PAGE)
        for e in page:
            yield e.seq, e.hash, e.body
        if cursor is None:
            return


def _jsonl(db: Database, search: Search) -> Iterator[bytes]:
    for seq, digest, body in _rows(db, search):
        yield orjson.dumps({"seq": seq, "hash": digest, **body}) + b"\n"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    # A spreadsheet runs a cell that starts with = + - @ as a formula: arguments come from a model.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(db: Database, search: Search) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for n, (seq, digest, body) in enumerate(_rows(db, search), 1):
        row = {**body, "seq": seq, "hash": digest, "at": events.iso(body["at_us"])}
        writer.writerow([_csv_cell(row.get(c)) for c in CSV_COLUMNS])
        if n % 200 == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


@router.get(
    "/events/export", summary="Export a search of the audit log (JSONL or CSV)", response_class=StreamingResponse
)
async def export(
    found_by: Searched, db: Db, format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl"
) -> StreamingResponse:
    """Every event the search matches, newest first, streamed as a download.

    Takes the same filters as `GET /v1/events`. CSV cells that a spreadsheet would run as a
    formula are prefixed with `'`.
    """
    body = _jsonl(db, found_by) if format == "jsonl" else _csv(db, found_by)
    media = "application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(
        body,  # a sync iterator: Starlette reads it on a worker thread
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="clearance-audit.{format}"'},
    )


class Chain(BaseModel):
    """Where a record sits in the hash chain and whether it verifies."""

    seq: int
    hash: str
    prev_hash: str
    head_seq: int
    verified: bool
    problem: str | None


class EventDetail(BaseModel):
    """One record, whole, with its chain position."""

    event: dict[str, Any]
    chain: Chain


@router.get("/events/{seq}", summary="One audit record, with its chain position and verification")
async def event_detail(seq: int, key: Caller, db: Db) -> EventDetail:
    """The record at chain position `seq`, rechecked against the record before it.

    An agent key reads only its own agent's records.
    """
    found = await run_in_threadpool(events.locate, db, seq)
    own_only = not ({"approver", "admin"} & set(key.scopes))
    if found is None or (own_only and found.event.body.get("agent") != key.agent):
        raise APIError(404, f"no record at position {seq} is visible to this key")
    e = found.event
    return EventDetail(
        event={"seq": e.seq, "hash": e.hash, **e.body},
        chain=Chain(
            seq=e.seq,
            hash=e.hash,
            prev_hash=found.prev_hash,
            head_seq=found.head_seq,
            verified=found.problem is None,
            problem=found.problem,
        ),
    )
