"""Policies: revisions (valid, or rejected drafts), diff, activation per scope, rollback.

And the snapshot agents decide from, with an ETag and a long poll that returns as soon as it
changes.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..._store import Database
from ..._store import _policies as policies
from ..._store._keys import ApiKey
from ..._store._policies import Revision
from ..._text import Text, checked_text
from ..._wire import Sent
from ..._wire._snapshot import Snapshot
from ...errors import PolicyProblem
from .. import _longpoll as longpoll
from .. import _snapshot as snapshots
from .._auth import actor, current_key, database, require
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["policies"])
Admin = Annotated[ApiKey, Depends(require("admin"))]
Db = Annotated[Database, Depends(database)]
RevisionId = Annotated[Text, Path()]
MAX_TEXT = 512 * 1024  # characters of policy text; a real policy is a few kilobytes
_RECHECK_SECONDS = 1.0
_SNAPSHOT_RECHECK = 0.4  # seconds, without a change feed


class Problem(Sent):
    """One problem of a rejected draft, in plain words, located in the text and in the policy's keys."""

    message: str
    line: int | None
    column: int | None
    rule_id: str | None
    path: str | None = Field(default=None, description="the policy key path, like tools.refund.rules[0].effect")

    @classmethod
    def of(cls, p: PolicyProblem) -> Problem:
        """The view of a problem the policy loader found."""
        return cls(message=p.message, line=p.line, column=p.column, rule_id=p.rule_id, path=p.path)


def problem_details(source: str, problems: list[Problem]) -> list[dict[str, Any]]:
    """Problems as an error's `details`: `location` is `file:line:column`, `path` the key path."""
    return [
        {
            "location": f"{source}:{p.line}:{p.column}",
            "message": p.message,
            **({"path": p.path} if p.path else {}),
            **({"rule_id": p.rule_id} if p.rule_id else {}),
        }
        for p in problems
    ]


class RevisionOut(Sent):
    """A policy revision."""

    id: str
    content_hash: str
    source: str
    author: str | None
    parent: str | None
    created_at_us: int
    status: str
    problems: list[Problem]
    text: str | None = None

    @classmethod
    def of(cls, rev: Revision, *, with_text: bool = False) -> RevisionOut:
        """The view of a stored revision."""
        return cls(
            id=rev.id,
            content_hash=rev.content_hash,
            source=rev.source,
            author=rev.author,
            parent=rev.parent,
            created_at_us=rev.created_at_us,
            status=rev.status,
            problems=[Problem.of(p) for p in rev.problems],
            text=rev.text if with_text else None,
        )


class PolicyCreate(BaseModel):
    """A policy to store as a new revision."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1, max_length=MAX_TEXT)
    source: Text = Field(default="policy.yaml", min_length=1, max_length=200)


class Target(BaseModel):
    """Whom an activation is for: an agent, an environment, or (neither) everyone."""

    model_config = ConfigDict(extra="forbid")

    agent: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(checked_text)] | None = None
    environment: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,40}$")

    @model_validator(mode="after")
    def _one(self) -> Target:
        if self.agent and self.environment:
            raise ValueError("give an agent or an environment, not both")
        return self

    @property
    def scope(self) -> str:
        """The assignment scope."""
        return policies.scope_of(self.agent, self.environment)


class Activation(Sent):
    """An activation that happened."""

    scope: str
    revision: RevisionOut


@router.post("/policies", status_code=status.HTTP_201_CREATED, summary="Store a policy revision (admin)")
async def create_policy(body: PolicyCreate, admin: Admin, db: Db) -> RevisionOut:
    """Validate and store a revision.

    One that does not validate is stored as a rejected draft, which can never be activated, and
    answered 422 with every problem located in `details`.
    """
    rev = await run_in_threadpool(policies.create, db, body.text, source=body.source, author=actor(admin))
    if rev.status != "valid":
        details = problem_details(body.source, [Problem.of(p) for p in rev.problems])
        raise APIError(422, f"the policy does not validate; stored as rejected draft {rev.id}", details=details)
    return RevisionOut.of(rev)


@router.get("/policies", summary="List revisions (admin)")
async def list_policies(_: Admin, db: Db) -> list[RevisionOut]:
    """Every revision, newest first, rejected drafts included (without their text)."""
    return [RevisionOut.of(r) for r in await run_in_threadpool(policies.listing, db)]


class AssignmentOut(Sent):
    """A scope and the revision active for it."""

    scope: str
    revision_id: str
    activated_at_us: int
    activated_by: str | None
    previous_revision_id: str | None = Field(
        default=None, description="what rolling back activates: the revision active before; null when none was"
    )


@router.get("/policies/assignments", summary="Which revision is active for each scope (admin)")
async def list_assignments(_: Admin, db: Db) -> list[AssignmentOut]:
    """Every active assignment: `default`, then `environment:…`, then `agent:…` (agent wins)."""

    def read() -> tuple[list[policies.Assignment], dict[str, str]]:
        return policies.assignments(db), policies.previous_revisions(db)

    found, earlier = await run_in_threadpool(read)
    return [AssignmentOut(**dataclasses.asdict(a), previous_revision_id=earlier.get(a.scope)) for a in found]


async def _revision(db: Database, rev_id: str) -> Revision:
    rev = await run_in_threadpool(policies.get, db, rev_id)
    if rev is None:
        raise APIError(404, f"no policy revision has the id {rev_id!r}")
    return rev


@router.get("/policies/{rev_id}", summary="One revision, with its text (admin)")
async def get_policy(rev_id: RevisionId, _: Admin, db: Db) -> RevisionOut:
    """A revision with its text and, for a rejected draft, its problems."""
    return RevisionOut.of(await _revision(db, rev_id), with_text=True)


class PolicyDiff(Sent):
    """A unified diff from one revision to another."""

    from_: str = Field(serialization_alias="from", description="The revision diffed against")
    to: str
    diff: str


@router.get("/policies/{rev_id}/diff", summary="Diff two revisions (admin)")
async def diff_policy(
    rev_id: RevisionId,
    _: Admin,
    db: Db,
    against: Annotated[Text | None, Query(description="default: its parent")] = None,
) -> PolicyDiff:
    """A unified diff from `against` (default: the revision's parent) to `rev_id`."""
    new = await _revision(db, rev_id)
    base = against or new.parent
    if base is None:
        raise APIError(404, f"revision {rev_id} has no parent to diff against; pass ?against=")
    old = await _revision(db, base)
    return PolicyDiff(from_=old.id, to=new.id, diff=policies.diff(old, new))


async def _activate(request: Request, db: Database, rev_id: str, scope: str, admin: ApiKey) -> Activation:
    try:
        rev = await run_in_threadpool(policies.activate, db, rev_id, scope=scope, by=actor(admin))
    except LookupError as exc:
        raise APIError(404, str(exc)) from None
    except ValueError as exc:
        raise APIError(409, str(exc)) from None
    longpoll.announce(request, "policy")
    return Activation(scope=scope, revision=RevisionOut.of(rev))


@router.post("/policies/{rev_id}/activate", summary="Activate a revision for a scope (admin)")
async def activate_policy(rev_id: RevisionId, target: Target, request: Request, admin: Admin, db: Db) -> Activation:
    """Make the revision active for an agent, an environment, or everyone, at once."""
    return await _activate(request, db, rev_id, target.scope, admin)


class Rollback(Target):
    """Whose revision to roll back, and (optionally) what the admin saw before confirming."""

    current: Annotated[str, Field(max_length=64), AfterValidator(checked_text)] | None = Field(
        default=None, description="the revision the admin saw active: 409 if another is active now"
    )
    to: Annotated[str, Field(max_length=64), AfterValidator(checked_text)] | None = Field(
        default=None, description="the revision the admin was told it rolls back to: 409 if that changed"
    )


@router.post("/policies/rollback", summary="Re-activate the previous revision of a scope (admin)")
async def rollback_policy(body: Rollback, request: Request, admin: Admin, db: Db) -> Activation:
    """Activate the revision that was active for the scope before the current one.

    409 when there is none (the scope has had one revision, or none), and, with `current` or
    `to`, when another admin changed the scope after this one looked.
    """
    scope = body.scope

    def read() -> tuple[str | None, str | None]:
        active = {a.scope: a.revision_id for a in policies.assignments(db)}
        return active.get(scope), policies.previous_revisions(db).get(scope)

    active, previous = await run_in_threadpool(read)
    if active is None:
        raise APIError(409, f"no revision is active for {scope}, so there is nothing to roll back")
    if previous is None:
        raise APIError(409, f"{scope} had no revision before {active}: there is nothing earlier to roll back to")
    if (body.current is not None and body.current != active) or (body.to is not None and body.to != previous):
        raise APIError(409, f"{scope} changed meanwhile: {active} is active now, rollback would activate {previous}")
    return await _activate(request, db, previous, scope, admin)


@router.get(
    "/policy/snapshot",
    summary="The policy this key's agent decides from",
    response_model=Snapshot,
    responses={304: {"description": "Not modified: what If-None-Match names is still current"}},
)
async def snapshot(
    request: Request,
    response: Response,
    key: Annotated[ApiKey, Depends(current_key)],
    db: Db,
    if_none_match: Annotated[str | None, Header()] = None,
    wait: Annotated[float, Query(ge=0, le=60, description="long poll: seconds to wait for a change")] = 0,
    v: Annotated[
        int, Query(ge=1, le=2, description="2: also this agent's live grants and its shadow policy, under one ETag")
    ] = 1,
) -> Snapshot | Response:
    """The active revision for the key's agent and environment, with its ETag.

    With `v=2` the snapshot also carries the agent's live grants of kind `calls` and the
    revision decided in shadow for it; its ETag changes when any of them does. With
    `If-None-Match` and `wait`, the request is held until the snapshot changes (answered at
    once) or `wait` seconds pass (304).
    """
    etag = (if_none_match or "").strip('"')

    async def read() -> snapshots.Read:
        found = await run_in_threadpool(snapshots.read, db, agent=key.agent, environment=key.environment, version=v)
        if found is None:
            raise APIError(404, f"no policy is active for agent {key.agent!r} in {key.environment!r}")
        return found

    if v == 1:
        now = await longpoll.hold(request, "policy", wait, read, lambda r: r.etag != etag)
    else:  # a revoke made by another process (the CLI on the store) reaches agents within a second too
        now = await longpoll.hold(request, "snapshot", wait, read, lambda r: r.etag != etag, every=_SNAPSHOT_RECHECK)
    if now.etag == etag:
        return Response(status_code=304, headers={"ETag": f'"{now.etag}"'})
    response.headers["ETag"] = f'"{now.etag}"'
    response.headers["Cache-Control"] = "no-cache"
    return now.snapshot()
