"""Shadow policies: activate a revision beside the enforced one, clear it, promote it, and the report.

Mounted before the policies router, so `/v1/policies/shadow` is never taken for a revision id.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from ..._clock import now_us
from ..._store import Database
from ..._store import _policies as policies
from ..._store import _shadow as shadows
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire._shadow import (
    MonitorHitOut,
    ShadowActiveOut,
    ShadowCleared,
    ShadowDifferenceOut,
    ShadowExampleOut,
    ShadowReportOut,
)
from ...policy._model import parse_duration
from .. import _longpoll as longpoll
from .._auth import actor, current_key, database, require
from .._errors import APIError
from .policies import Activation, RevisionOut, Target

router = APIRouter(prefix="/v1", tags=["policies"])
Db = Annotated[Database, Depends(database)]
MAX_WINDOW_S = 366 * 86_400  # a report looks back at most a year
_ENVIRONMENT = r"^[a-z0-9-]{1,40}$"


def _not_an_agent(key: ApiKey) -> ApiKey:
    """An admin that is not an agent: an agent's key never changes what decides it."""
    if "agent" in key.scopes:
        raise APIError(403, "an agent key cannot activate, clear or promote a shadow policy")
    return key


async def _admin(key: Annotated[ApiKey, Depends(require("admin"))]) -> ApiKey:
    return _not_an_agent(key)


Admin = Annotated[ApiKey, Depends(_admin)]
Caller = Annotated[ApiKey, Depends(current_key)]


def _window(since: str) -> int:
    """Seconds in `since`, or a 422 saying what a window looks like."""
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise APIError(422, str(exc), details=[{"location": "query.since", "message": str(exc)}]) from None
    if seconds > MAX_WINDOW_S:
        why = f"a report looks back at most {MAX_WINDOW_S // 86_400}d"
        raise APIError(422, why, details=[{"location": "query.since", "message": why}])
    return seconds


def _visible(key: ApiKey, active: list[shadows.ShadowAssignment]) -> list[shadows.ShadowAssignment]:
    """The shadows a key may see: all for people and admins, an agent key's own scopes for it."""
    if {"approver", "admin"} & set(key.scopes):
        return active
    if key.agent is None:
        return []
    own = {"default", f"environment:{key.environment}", f"agent:{key.agent}"}
    return [a for a in active if a.scope in own]


@router.get("/policies/shadow", summary="Where the shadow and the enforced policy differed")
async def shadow_report(
    key: Caller,
    db: Db,
    since: Annotated[str, Query(max_length=20, description="how far back: 30m, 24h, 7d")] = "24h",
    environment: Annotated[str | None, Query(pattern=_ENVIRONMENT)] = None,
    agent: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
    examples: Annotated[int, Query(ge=0, le=20, description="example calls per group")] = 3,
) -> ShadowReportOut:
    """Where the shadow decided otherwise than the enforced policy over the window, and monitor rules' hits.

    Counts of calls decided in shadow, those that differed by (enforced -> shadow, rule) and the
    monitor hits by rule, each with the newest example calls; and the shadows active per scope.
    An agent key reads only its own agent's calls.
    """
    if not {"approver", "admin"} & set(key.scopes):
        if key.agent is None:  # a person without the approver or admin role reads nobody's calls
            raise APIError(403, "only approvers, admins and an agent's own key read the shadow report")
        if agent is not None and agent != key.agent:
            raise APIError(403, "an agent key reads only its own agent's shadow report")
        agent = key.agent
    until = now_us()
    found = await run_in_threadpool(
        lambda: shadows.report(
            db,
            since_us=until - _window(since) * 1_000_000,
            until_us=until,
            environment=environment,
            agent=agent,
            examples=examples,
        )
    )
    active = _visible(key, await run_in_threadpool(shadows.shadows, db))

    def examples_of(group: shadows.Difference | shadows.MonitorHit) -> list[ShadowExampleOut]:
        return [ShadowExampleOut(**dataclasses.asdict(e)) for e in group.examples]

    return ShadowReportOut(
        since_us=found.since_us,
        until_us=found.until_us,
        calls=found.calls,
        differing=found.differing,
        differences=[
            ShadowDifferenceOut(
                enforced=d.enforced, shadow=d.shadow, rule_id=d.rule_id, count=d.count, examples=examples_of(d)
            )
            for d in found.differences
        ],
        monitored=[
            MonitorHitOut(policy=m.policy, rule_id=m.rule_id, would=m.would, count=m.count, examples=examples_of(m))
            for m in found.monitored
        ],
        revisions=found.revisions,
        unreadable=found.unreadable,
        active=[ShadowActiveOut(**dataclasses.asdict(a)) for a in active],
    )


@router.post("/policies/shadow/promote", summary="Make the shadow of a scope its enforced revision (admin)")
async def promote_shadow(target: Target, request: Request, admin: Admin, db: Db) -> Activation:
    """In one step: the scope's shadow becomes its active revision (`policy.activated`) and the shadow slot empties."""
    try:
        rev = await run_in_threadpool(lambda: shadows.promote(db, scope=target.scope, by=actor(admin)))
    except LookupError as exc:
        raise APIError(409, str(exc)) from None
    except shadows.NotCompiled as exc:
        raise APIError(422, str(exc), details=_problems(exc)) from None
    longpoll.announce(request, "policy")
    return Activation(scope=target.scope, revision=RevisionOut.of(rev))


@router.delete("/policies/shadow", summary="Stop deciding in shadow for a scope (admin)")
async def clear_shadow(
    request: Request,
    admin: Admin,
    db: Db,
    environment: Annotated[str | None, Query(pattern=_ENVIRONMENT)] = None,
    agent: Annotated[Text | None, Query(min_length=1, max_length=200)] = None,
) -> ShadowCleared:
    """Clear the shadow of an agent, an environment, or (neither) the default scope."""
    if agent and environment:
        raise APIError(422, "give an agent or an environment, not both")
    scope = policies.scope_of(agent, environment)
    try:
        rev_id = await run_in_threadpool(lambda: shadows.clear_shadow(db, scope=scope, by=actor(admin)))
    except LookupError as exc:
        raise APIError(404, str(exc)) from None
    longpoll.announce(request, "policy")
    return ShadowCleared(scope=scope, revision_id=rev_id)


@router.post("/policies/{rev_id}/shadow", summary="Decide a revision in shadow for a scope (admin)")
async def activate_shadow(
    rev_id: Annotated[Text, Path()], target: Target, request: Request, admin: Admin, db: Db
) -> Activation:
    """Decide every call of the scope by this revision too, recording what it decided, never enforcing it.

    Only a revision that compiles is activated: one that does not is refused (422) with every problem.
    """
    try:
        rev = await run_in_threadpool(lambda: shadows.activate_shadow(db, rev_id, scope=target.scope, by=actor(admin)))
    except LookupError as exc:
        raise APIError(404, str(exc)) from None
    except shadows.NotCompiled as exc:
        raise APIError(422, str(exc), details=_problems(exc)) from None
    except ValueError as exc:
        raise APIError(409, str(exc)) from None
    longpoll.announce(request, "policy")
    return Activation(scope=target.scope, revision=RevisionOut.of(rev))


def _problems(exc: shadows.NotCompiled) -> list[dict[str, str]]:
    return [
        {
            "location": f"{p.source}:{p.line}:{p.column}",
            "message": p.message,
            **({"rule_id": p.rule_id} if p.rule_id else {}),
        }
        for p in exc.problems
    ]
