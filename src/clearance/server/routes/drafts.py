"""Drafts: check a policy before storing it, and test it against recorded calls (admin).

Nothing here writes: the editor validates as the admin types, and "test against history"
decides the last recorded calls again with the draft, so the admin sees which decisions would
change before activating it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..._store import Database
from ..._store._keys import ApiKey
from ..._text import Text, checked_text
from ..._wire import Sent
from ...errors import PolicyError
from ...policy import Policy, parse_policy
from .. import _whatif as whatif
from .._auth import database, require
from .._errors import APIError
from .policies import MAX_TEXT, Problem, problem_details

router = APIRouter(prefix="/v1", tags=["policies"])
Admin = Annotated[ApiKey, Depends(require("admin"))]
Db = Annotated[Database, Depends(database)]


class Draft(BaseModel):
    """A policy as written, not stored (its length is checked by the route, to say it plainly)."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1)
    source: Text = Field(default="policy.yaml", min_length=1, max_length=200)


class Validation(Sent):
    """Whether a draft validates and compiles; every problem located by line and column."""

    valid: bool
    revision: str | None
    problems: list[Problem]


def _compile(draft: Draft) -> Policy | list[Problem]:
    if len(draft.text) > MAX_TEXT:
        too_long = f"the policy is {len(draft.text):,} characters long; at most {MAX_TEXT:,} are accepted"
        return [Problem(message=too_long, line=None, column=None, rule_id=None)]
    try:
        return parse_policy(draft.text, draft.source)
    except PolicyError as exc:
        return [Problem.of(p) for p in exc.problems]


@router.post("/policies/validate", summary="Validate a draft without storing it (admin)")
async def validate(body: Draft, _: Admin) -> Validation:
    """Parse, validate and compile the draft, as storing it would; always 200."""
    compiled = await run_in_threadpool(_compile, body)
    if isinstance(compiled, list):
        return Validation(valid=False, revision=None, problems=compiled)
    return Validation(valid=True, revision=compiled.revision, problems=[])


class HistoryTest(Draft):
    """A draft, and how much history to decide again."""

    text: Text = Field(min_length=1, max_length=MAX_TEXT)

    last: int = Field(default=1000, ge=1, le=100_000, description="the last N recorded calls")
    agent: Annotated[str, Field(max_length=200), AfterValidator(checked_text)] | None = Field(
        default=None, description="only this agent's calls"
    )
    only_changed: bool = True


class HistoryReport(Sent):
    """What would change."""

    revision: str
    checked: int
    changed: int
    uncertain: int
    transitions: dict[str, int]
    rows: list[whatif.Replayed]


@router.post("/policies/test", summary="Test a draft against recorded calls (admin)")
async def test_against_history(body: HistoryTest, _: Admin, db: Db) -> HistoryReport:
    """Decide the last `last` recorded calls with the draft; list those whose decision changes.

    A draft that does not validate is answered 422 with its problems. Rows the record cannot
    reproduce exactly (redacted arguments, facts that were not recorded) say so in `uncertain`.
    """
    compiled = await run_in_threadpool(_compile, body)
    if isinstance(compiled, list):
        raise APIError(422, "the draft does not validate", details=problem_details(body.source, compiled))
    report = await run_in_threadpool(
        lambda: whatif.replay(db, compiled, last=body.last, agent=body.agent, only_changed=body.only_changed)
    )
    return HistoryReport(
        revision=compiled.revision,
        checked=report.checked,
        changed=report.changed,
        uncertain=report.uncertain,
        transitions=report.transitions,
        rows=report.rows,
    )
