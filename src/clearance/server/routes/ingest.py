"""Event ingest from remote agents: batched, idempotent by event id, re-chained on the server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..._canonical import canonical_json
from ..._clock import now_us
from ..._guard._governor import executed_event
from ...store import Database
from ...store import _approvals as approvals
from ...store import _events as events
from ...store._events import Event
from ...store._keys import ApiKey
from .. import _longpoll as longpoll
from .._auth import database, require
from .._errors import INT64_MAX, APIError

router = APIRouter(prefix="/v1", tags=["ingest"])
Agent = Annotated[ApiKey, Depends(require("agent"))]
Db = Annotated[Database, Depends(database)]
MAX_BATCH = 1000

_COMMON = {"v", "id", "kind", "at_us", "agent", "environment", "session"}
# What an agent may send for each kind of event it produces; anything else is rejected.
ALLOWED: dict[str, set[str]] = {
    "tool_call.decided": _COMMON
    | {
        "tool",
        "call_id",
        "decision",
        "args",
        "args_hash",
        "rule_ids",
        "reason",
        "policy_revision",
        "errors",
        "args_redacted",
        "args_truncated",
        "facts",
        "approval_id",
    },
    "tool_call.finished": _COMMON
    | {"tool", "call_id", "decision", "duration_ms", "error", "approval_id", "executed_args_hash", "result"},
    "llm.call": _COMMON
    | {
        "tool",
        "model",
        "provider",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "tokens",
        "priced",
        "cost_usd",
        "cost_nusd",
        "price_source",
        "latency_ms",
    },
}


class IncomingEvent(BaseModel):
    """An event recorded by an agent, to be chained on the server."""

    model_config = ConfigDict(extra="allow")

    v: Literal[1] = 1
    id: str = Field(pattern=r"^evt_[0-9a-f]{32}$")
    kind: Literal["tool_call.decided", "tool_call.finished", "llm.call"]
    at_us: int = Field(gt=0, le=INT64_MAX)
    session: str | None = Field(default=None, max_length=200)
    tool: str | None = Field(default=None, max_length=200)
    call_id: str | None = Field(default=None, max_length=40)
    decision: str | None = Field(default=None, max_length=40)
    cost_nusd: int | None = Field(default=None, ge=0, le=INT64_MAX)
    tokens: int | None = Field(default=None, ge=0, le=INT64_MAX)

    @model_validator(mode="after")
    def _known_fields(self) -> IncomingEvent:
        unknown = (self.model_fields_set | set(self.model_extra or {})) - ALLOWED[self.kind]
        if unknown:
            raise ValueError(f"unknown fields for {self.kind}: {', '.join(sorted(unknown))}")
        return self


class Batch(BaseModel):
    """Events to ingest, in the order they happened."""

    model_config = ConfigDict(extra="forbid")

    events: list[IncomingEvent] = Field(min_length=1, max_length=MAX_BATCH)


@router.post("/events", summary="Ingest a batch of an agent's events (idempotent by event id)")
def ingest(batch: Batch, request: Request, key: Agent, db: Db) -> dict[str, int]:
    """Append the events to the audit chain, skipping ids already stored.

    A retried or duplicated delivery records nothing twice. The agent and environment are the
    key's, whatever the events say.
    """
    if key.agent is None:
        raise APIError(403, "this key is not bound to an agent")
    bodies: list[dict[str, Any]] = []
    for event in batch.events:
        body = event.model_dump(exclude_unset=True)  # what was sent, as validated
        body.update(v=1, agent=key.agent, environment=key.environment)
        bodies.append(body)
    finished: list[Event] = []

    def then(cur: Any, fresh: list[dict[str, Any]]) -> list[Event]:
        finished[:] = finish_approvals(db, cur, fresh)  # the last attempt's, if the write is retried
        return finished

    appended, duplicates = events.ingest(db, bodies, then=then)
    if finished:  # an inbox showing the approval sees its result at once
        longpoll.announce_threadsafe(request.app.state, "approvals")
    return {"appended": appended, "duplicates": duplicates}


def finish_approvals(db: Database, cur: Any, fresh: list[dict[str, Any]]) -> list[Event]:
    """Mark the approvals of approved calls that ran executed or failed, with their outcome.

    Only the sending agent's own approvals, and only once (a duplicate delivery changes nothing).
    """
    caused = []
    for body in fresh:
        if body["kind"] != "tool_call.finished" or not body.get("approval_id"):
            continue
        status = "failed" if body.get("decision") == "error" else "executed"
        result = canonical_json(body.get("result")) if status == "executed" else None
        approval_id = body["approval_id"]
        if approvals.finish(
            db,
            cur,
            approval_id,
            status,
            now_us=body["at_us"],
            result_json=result,
            error=body.get("error"),
            agent=body["agent"],
        ):
            cur.execute(db.sql("SELECT claimed_by FROM approvals WHERE id = :id"), {"id": approval_id})
            row = cur.fetchone()
            caused.append(executed_event(body, status, row[0] if row else None, now_us()))
    return caused
