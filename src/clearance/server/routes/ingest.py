"""Event ingest from remote agents: batched, idempotent by event id, re-chained on the server."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Required

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from ... import _trace
from ..._boundary import check_record, storable
from ..._canonical import canonical_json, for_record, sha256_hex
from ..._clock import now_us
from ..._guard._tickets import executed_event
from ..._store import Database
from ..._store import _approvals as approvals
from ..._store import _events as events
from ..._store._events import MAX_MODEL_NAME, Event
from ..._store._keys import ApiKey
from ..._text import Text, escaped
from ..._wire import ApprovalStatus, Sent
from .. import _longpoll as longpoll
from .._auth import database, require
from .._errors import INT64_MAX, APIError
from .._meters import BACKLOG_HEADER

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
        "args_hash_alg",
        "rule_ids",
        "reason",
        "policy_revision",
        "errors",
        "args_redacted",
        "args_truncated",
        "facts",
        "approval_id",
        "monitored",  # the `mode: monitor` rules that matched
        "shadow",  # what the shadow policy decided beside
        "grant_id",  # the grant (one without limits: only the server counts uses) that let the call through
        "trace",  # the span the call was made in
    },
    "tool_call.finished": _COMMON
    | {
        "tool",
        "call_id",
        "decision",
        "duration_ms",
        "error",
        "approval_id",
        "executed_args_hash",
        "args_hash_alg",
        "result",
        "trace",  # the span it ran in
        "asked_in",  # where it was asked, when it ran in another trace
    },
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
        "trace",
        "usage_traced",  # a framework's instrumentation put its usage on a span of its own
    },
}


def _model_name(model: str) -> str:
    if not 0 < len(model) <= MAX_MODEL_NAME:  # the SDK cuts a longer one
        raise ValueError(f"a model name is 1 to {MAX_MODEL_NAME} characters; this one is {len(model):,}")
    return model


_Count = Annotated[int | None, Field(ge=0, le=INT64_MAX)]


# A TypedDict rather than a model: pydantic-core builds the dict of what was sent, as validated,
# in one step (a model and its `model_dump` took twice as long, the most of ingest's CPU).
@with_config(ConfigDict(extra="allow"))
class _IncomingEvent(TypedDict, total=False):
    """An event recorded by an agent, to be chained on the server."""

    v: Literal[1]
    id: Required[Annotated[str, Field(pattern=r"^evt_[0-9a-f]{32}$")]]
    kind: Required[Literal["tool_call.decided", "tool_call.finished", "llm.call"]]
    at_us: Required[Annotated[int, Field(gt=0, le=INT64_MAX)]]
    session: Annotated[str | None, Field(max_length=200)]
    tool: Annotated[str | None, Field(max_length=200)]
    call_id: Annotated[Text | None, Field(max_length=40)]
    decision: Annotated[Text | None, Field(max_length=40)]
    grant_id: Annotated[str | None, Field(pattern=r"^grt_[0-9a-f]{32}$")]
    # These reach the approvals table when an approved call's outcome arrives.
    approval_id: Annotated[str | None, Field(pattern=r"^apr_[0-9a-f]{32}$")]
    error: Annotated[Text | None, Field(max_length=4000)]
    cost_nusd: _Count
    tokens: _Count
    # An LLM call's usage lands in columns (0019): a name every store keeps, whole counts
    model: Annotated[Text, AfterValidator(_model_name)] | None
    input_tokens: _Count
    output_tokens: _Count
    cached_input_tokens: _Count
    reasoning_tokens: _Count


def _known_fields(event: _IncomingEvent) -> _IncomingEvent:
    """The event, when it holds only the fields its kind has (checked once its fields are valid)."""
    allowed = ALLOWED[event["kind"]]
    if not allowed.issuperset(event):
        unknown = event.keys() - allowed
        raise ValueError(f"unknown fields for {event['kind']}: {', '.join(sorted(unknown))}")
    return event


# What was sent, as validated: only the fields sent, extras as they are.
INCOMING_EVENT: TypeAdapter[dict[str, Any]] = TypeAdapter(Annotated[_IncomingEvent, AfterValidator(_known_fields)])  # type: ignore[arg-type]


class Batch(BaseModel):
    """Events to ingest, in the order they happened (each checked on its own)."""

    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class Refusal(Sent):
    """A record of the batch that was not stored, and why; the others were."""

    index: int
    id: str | None
    problems: list[str]


class Ingested(Sent):
    """What became of a batch."""

    appended: int
    duplicates: int
    refused: list[Refusal] = Field(default_factory=list)


@router.post("/events", summary="Ingest a batch of an agent's events (idempotent by event id)")
def ingest(batch: Batch, request: Request, key: Agent, db: Db) -> Ingested:
    """Append the events to the audit chain, skipping ids already stored.

    A retried or duplicated delivery records nothing twice. The agent and environment are the
    key's, whatever the events say. A record that cannot be stored as sent (see
    `clearance._boundary.check_record`) is refused on its own: the others are appended, the
    answer lists it, and an `ingest.refused` record says so in the audit log.
    """
    if key.agent is None:
        raise APIError(403, "this key is not bound to an agent")
    bodies: list[dict[str, Any]] = []
    refused: list[Refusal] = []
    for index, raw in enumerate(batch.events):
        body, problems = _validated(raw)
        if problems:
            event_id = raw.get("id")
            shown_id = event_id if isinstance(event_id, str) and _ID.fullmatch(event_id) else None
            refused.append(Refusal(index=index, id=shown_id, problems=problems))
            bodies.append(_refusal_record(key, raw, shown_id, problems))
            continue
        body.update(v=1, agent=key.agent, environment=key.environment)
        bodies.append(body)
    finished: list[Event] = []
    new_refusals = 0

    def then(cur: Any, fresh: list[dict[str, Any]]) -> list[Event]:
        nonlocal new_refusals
        finished[:] = finish_approvals(db, cur, fresh)  # the last attempt's, if the write is retried
        new_refusals = sum(1 for b in fresh if b["kind"] == "ingest.refused")
        return finished

    appended, duplicates = events.ingest(db, bodies, then=then)
    if finished:  # an inbox showing the approval sees its result at once
        longpoll.announce_threadsafe(request.app.state, "approvals")
    # The counts are of the batch's own records; their refusal records are not counted.
    answer = Ingested(
        appended=appended - new_refusals,
        duplicates=duplicates - (len(refused) - new_refusals),
        refused=refused,
    )
    request.app.state.metrics.ingest(
        key.agent,
        appended=answer.appended,
        duplicates=answer.duplicates,
        refused=len(refused),
        backlog=request.headers.get(BACKLOG_HEADER),
    )
    return answer


_ID = re.compile(r"evt_[0-9a-f]{32}")


def _validated(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The record as it will be stored, or why it cannot be."""
    try:
        body = INCOMING_EVENT.validate_python(raw)
    except ValidationError as exc:
        return {}, [_readable(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}") for e in exc.errors()][:20]
    _spans_checked(body)
    problems = [str(p) for p in check_record(body)]
    if not problems and (wrong := events.args_problem(body)) is not None:
        problems.append(f"record: {wrong}")  # stored, it would fail `audit verify` for good
    return body, [_readable(p) for p in problems]


def _spans_checked(body: dict[str, Any]) -> None:
    """Drop the tracing fields that are not what the SDK writes: hints for spans never cost a record."""
    for name in ("trace", "asked_in"):
        if name in body and _trace.checked(body[name]) is None:
            del body[name]
    if body.get("usage_traced", True) is not True:
        del body["usage_traced"]


def _readable(text: str) -> str:
    """A problem's text as every store keeps it (a hostile key can appear in it)."""
    return escaped(text)[:500]


def _refusal_record(key: ApiKey, raw: dict[str, Any], event_id: str | None, problems: list[str]) -> dict[str, Any]:
    """The `ingest.refused` record of a refused record; the same refusal twice has one id."""
    sent = storable(raw)
    digest = sha256_hex(f"{key.id}\x1f{canonical_json(sent)}")[:32]
    kind = raw.get("kind")
    return {
        "v": 1,
        "id": f"evt_{digest}",
        "kind": "ingest.refused",
        "at_us": now_us(),
        "agent": key.agent,
        "environment": key.environment,
        "session": None,
        "tool": None,
        "refused_id": event_id,
        "refused_kind": kind if isinstance(kind, str) and kind in ALLOWED else None,
        "problems": problems,
        # What was sent, marked where no store keeps it and cut when large: an agent that does
        # not keep refused records aside (older versions drop the batch) loses nothing.
        "refused_record": for_record(sent)[0],
    }


def finish_approvals(db: Database, cur: Any, fresh: list[dict[str, Any]]) -> list[Event]:
    """Mark the approvals of approved calls that ran executed or failed, with their outcome.

    Only the sending agent's own approvals, and only once (a duplicate delivery changes nothing).
    """
    caused = []
    for body in fresh:
        if body["kind"] != "tool_call.finished" or not body.get("approval_id"):
            continue
        status = ApprovalStatus.FAILED if body.get("decision") == "error" else ApprovalStatus.EXECUTED
        result = canonical_json(body.get("result")) if status is ApprovalStatus.EXECUTED else None
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
