"""The history of approval decisions: a page at a time (keyset, newest first), or exported.

Approvers and admins read every agent's decisions; an agent key reads only its own agent's
(asking for another agent's is 403), and a person with neither role reads none (403).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import Field

from ... import _decisions as deciding
from ..._clock import now_us
from ..._export import Format, csv_cell, json_line
from ..._store import Database
from ..._store import _decision_history as history
from ..._store._events import iso
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire import Sent
from .._auth import current_key, database
from .._errors import INT64_MAX, APIError
from .queries import _agent_for

router = APIRouter(prefix="/v1", tags=["decisions"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]
CHUNK_BYTES = 64 * 1024


class ChangeOut(Sent):
    """One argument (or a part of one) an approver changed before approving."""

    path: list[str | int] = Field(description="The argument's name, then keys and list positions inside it")
    kind: Literal["changed", "added", "removed"]
    before: Any = Field(description="As proposed, as people may see it (null when added)")
    after: Any = Field(description="As approved, as people may see it (null when removed)")
    redacted: bool = Field(description="Redacted: it changed, but its values stay hidden")


class DecisionGrantOut(Sent):
    """What the approver let through with the decision (see `GET /v1/grants/{id}`)."""

    id: str
    kind: str = Field(description="`calls` (similar calls let through) or `budget` (a budget extended)")
    scope: str = Field(description="Whom it covers: `session`, `agent` or `requester`")
    status: str = Field(description="`live` while it lets calls through; else `revoked`, `expired` or `exhausted`")
    expires_at_us: int
    max_calls: int | None
    total_arg: str | None
    max_total: str | None = Field(description="As a decimal string")
    extend_usd: str | None = Field(description="A budget extension's US dollars, as a decimal string")
    extend_tokens: int | None


class DecisionOut(Sent):
    """One decided approval: the outcome, who decided and why, the edit, and how long the agent waited."""

    approval_id: str
    call_id: str
    outcome: history.Outcome = Field(
        description="approved (it may have run since), granted (approved, with a grant), denied, expired,"
        " allowed_on_timeout (nobody decided in time and its rule let it through) or cancelled"
    )
    status: str = Field(description="The approval's status now (an approved call moves on to executed or failed)")
    tool: str
    agent: str
    environment: str
    session: str | None
    requested_by: str | None = Field(description="The person the agent acted for")
    decided_by: str | None = Field(
        description="`user:…` or `key:…` for a person or key, `system` for a timeout, the agent for a cancellation"
    )
    note: str | None
    requested_at_us: int
    decided_at_us: int
    waited_us: int = Field(description="How long the agent waited: from the request to the decision")
    reason: str
    rule_ids: list[str]
    on_timeout: str
    votes: list[str] = Field(description="Who approved, in order, when it needed several approvers")
    error: str | None
    finished_at_us: int | None
    edited: bool = Field(description="Approved with arguments an approver edited")
    changes: list[ChangeOut]
    changes_left_out: int = Field(description="Changes not listed (past the first 50)")
    grant: DecisionGrantOut | None
    degraded: list[str] = Field(description="How what is shown differs from what is stored (empty: it does not)")


class DecisionPage(Sent):
    """A page of decisions, newest first."""

    decisions: list[DecisionOut]
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page (null: no more)")


def decision_out(d: history.Decided, at_us: int) -> DecisionOut:
    """The view of a decision."""
    g = d.grant
    return DecisionOut(
        approval_id=d.approval_id,
        call_id=d.call_id,
        outcome=d.outcome,
        status=d.status,
        tool=d.tool,
        agent=d.agent,
        environment=d.environment,
        session=d.session,
        requested_by=d.requested_by,
        decided_by=d.decided_by,
        note=d.note,
        requested_at_us=d.requested_at_us,
        decided_at_us=d.decided_at_us,
        waited_us=d.waited_us,
        reason=d.reason,
        rule_ids=list(d.rule_ids),
        on_timeout=d.on_timeout,
        votes=list(d.votes),
        error=d.error,
        finished_at_us=d.finished_at_us,
        edited=d.edited,
        changes=[
            ChangeOut(path=list(c.path), kind=c.kind, before=c.before, after=c.after, redacted=c.redacted)
            for c in d.changes
        ],
        changes_left_out=d.changes_left_out,
        grant=None
        if g is None
        else DecisionGrantOut(
            id=g.id,
            kind=g.kind,
            scope=g.scope,
            status=g.status(at_us),
            expires_at_us=g.expires_at_us,
            max_calls=g.max_calls,
            total_arg=g.total_arg,
            max_total=str(g.max_total) if g.max_total is not None else None,
            extend_usd=str(g.extend_usd) if g.extend_usd is not None else None,
            extend_tokens=g.extend_tokens,
        ),
        degraded=list(d.degraded),
    )


@dataclass(frozen=True)
class Asked:
    """The decisions a query string asks for, narrowed to what the caller may read."""

    filter: history.HistoryFilter


def asked_for(
    key: Caller,
    outcome: Annotated[history.Outcome | None, Query(description="one outcome")] = None,
    decider: Annotated[
        Text | None, Query(max_length=200, description="who decided, as recorded (`user:alice`)")
    ] = None,
    tool: Annotated[Text | None, Query(max_length=200)] = None,
    agent: Annotated[Text | None, Query(max_length=200)] = None,
    session: Annotated[Text | None, Query(max_length=200)] = None,
    since_us: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="decided at or after")] = None,
    until_us: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="decided before")] = None,
) -> Asked:
    """The filter of `GET /v1/decisions` and its export."""
    f = history.HistoryFilter(
        outcome=outcome,
        decider=decider,
        tool=tool,
        agent=_agent_for(key, agent),
        session=session,
        since_us=since_us,
        until_us=until_us,
    )
    return Asked(f)


Filtered = Annotated[Asked, Depends(asked_for)]
_CURSOR = re.compile(r"(\d{1,19})\.(.{1,100})", re.S)


def _cursor(text: str | None) -> history.Cursor | None:
    if text is None:
        return None
    found = _CURSOR.fullmatch(text)
    if found is None or int(found.group(1)) > INT64_MAX:
        raise APIError(
            422,
            "cursor: pass back a next_cursor this API returned",
            details=[{"location": "query.cursor", "message": "not a cursor of this API"}],
        )
    return int(found.group(1)), found.group(2)


@router.get("/decisions", summary="The history of approval decisions")
async def list_decisions(
    asked: Filtered,
    db: Db,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> DecisionPage:
    """Decided approvals matching every filter given, newest decision first.

    Each says who decided, their note, the edit (argument by argument, nested parts by path),
    the grant given with it, and how long the agent waited. Pass `next_cursor` back for the next page.
    """
    after = _cursor(cursor)
    await run_in_threadpool(deciding.sweep, db)  # an approval past its time shows as expired
    found, nxt = await run_in_threadpool(lambda: history.page(db, asked.filter, after=after, limit=limit))
    at = now_us()
    return DecisionPage(
        decisions=[decision_out(d, at) for d in found],
        next_cursor=f"{nxt[0]}.{nxt[1]}" if nxt is not None else None,
    )


CSV_COLUMNS = (
    "decided_at",
    "outcome",
    "decided_by",
    "note",
    "changes",
    "waited_s",
    "tool",
    "agent",
    "environment",
    "session",
    "requested_by",
    "requested_at",
    "reason",
    "rule_ids",
    "status",
    "on_timeout",
    "error",
    "grant_id",
    "grant",
    "approval_id",
    "call_id",
    "degraded",
)


def path_text(path: list[str | int]) -> str:
    """A changed part's place as people read it: `amount`, `items[0].price`, `meta["a b"]`."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 0 and part:
            out += part
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{_json(part)}]"
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _changes_text(d: DecisionOut) -> str:
    """The edit in one line: `amount: 355.08 → 150; items[0].sku: "A" → (none)`."""
    shown = [
        f"{path_text(c.path)}: {'(none)' if c.kind == 'added' else _json(c.before)}"
        f" → {'(none)' if c.kind == 'removed' else _json(c.after)}"
        for c in d.changes
    ]
    if d.changes_left_out:
        shown.append(f"and {d.changes_left_out} more")
    return "; ".join(shown)


def _csv_row(d: DecisionOut) -> list[str]:
    row: dict[str, Any] = {
        **d.model_dump(mode="json"),
        "decided_at": _iso(d.decided_at_us),
        "requested_at": _iso(d.requested_at_us),
        "waited_s": f"{d.waited_us / 1e6:.3f}",
        "changes": _changes_text(d),
        "grant_id": d.grant.id if d.grant else None,
        "degraded": "; ".join(d.degraded),
    }
    return [csv_cell(row.get(c)) for c in CSV_COLUMNS]


def _iso(at_us: int) -> str | None:
    try:
        return iso(at_us)
    except (ValueError, OverflowError, OSError):  # not a time any calendar holds
        return None


def _lines(db: Database, f: history.HistoryFilter, fmt: Format) -> Iterator[str]:
    """The export's lines; a failure part way ends it with a line saying so, never silently."""
    try:
        yield from _rows(db, f, fmt)
    except Exception as e:  # noqa: BLE001 - the response has begun: say where it stopped
        why = f"export stopped early ({type(e).__name__}): the rows above are not all that match"
        if fmt == "jsonl":
            yield json_line({"error": why})
        else:
            out = io.StringIO()
            csv.writer(out).writerow([f"# error: {why}"])
            yield out.getvalue()


def _rows(db: Database, f: history.HistoryFilter, fmt: Format) -> Iterator[str]:
    at = now_us()
    if fmt == "jsonl":
        for d in history.iterate(db, f):
            yield json_line(decision_out(d, at).model_dump(mode="json"))
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for d in history.iterate(db, f):
        writer.writerow(_csv_row(decision_out(d, at)))
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def _chunks(db: Database, f: history.HistoryFilter, fmt: Format) -> Iterator[bytes]:
    buffered: list[str] = []
    size = 0
    for line in _lines(db, f, fmt):
        buffered.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(buffered).encode()
            buffered, size = [], 0
    yield "".join(buffered).encode()


@router.get(
    "/decisions/export",
    summary="Export the history of approval decisions (JSONL or CSV)",
    response_class=StreamingResponse,
)
async def export_decisions(
    asked: Filtered, db: Db, format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl"
) -> StreamingResponse:
    """Every decision the filters match, newest first, streamed as a download.

    Takes the same filters as `GET /v1/decisions`. JSON Lines hold what that page holds;
    CSV a row each, its edit written `amount: 355.08 → 150` (cells that a spreadsheet would
    run as a formula are prefixed with `'`, as in the audit export).
    """
    media = "application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(
        _chunks(db, asked.filter, format),  # a sync iterator: Starlette reads it on a worker thread
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="clearance-decisions.{format}"'},
    )
