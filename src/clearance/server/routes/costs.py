"""Spend over time, and budgets and how much of them is spent, for the dashboard's costs page.

A budget is part of the policy active for an agent (`budgets.session`, `budgets.agent`). The
spend is measured as the policy measures it: priced LLM calls in the session, or in the agent's
rolling window. Unpriced calls are counted apart, never as $0.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from ..._clock import now_us
from ..._store import Database, EventFilter, _spend
from ..._store import _policies as policies
from ..._store import _queries as queries
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire import Sent
from ...errors import PolicyError
from ...policy import PolicyDocument, parse_policy
from .._auth import current_key, database
from .._errors import INT64_MAX, APIError
from .queries import _agent_for

router = APIRouter(prefix="/v1", tags=["audit"])
Db = Annotated[Database, Depends(database)]
Caller = Annotated[ApiKey, Depends(current_key)]


class BudgetUse(Sent):
    """One budget of one session or agent, and what is spent of it."""

    kind: Literal["session", "agent"]
    subject: str
    agent: str
    revision: str
    max_cost_usd: Decimal | None
    max_tokens: int | None
    window_seconds: int | None
    cost_usd: Decimal
    tokens: int
    calls: int  # LLM calls
    unpriced_calls: int
    used: float  # of the tightest limit, 1.0 = exhausted


def _used(cost: Decimal, tokens: int, max_cost: Decimal | None, max_tokens: int | None) -> float:
    shares = [float(cost / max_cost)] if max_cost else []
    shares += [tokens / max_tokens] if max_tokens else []
    return max(shares, default=0.0)


def budgets(db: Database, agent: str | None, sessions: int, limit: int) -> list[BudgetUse]:
    """The budgets in use, most used first: at most `limit` of them.

    A budget is in use when LLM calls were made against it within its window: a session budget
    when its session made any (of the `sessions` most recently active sessions), an agent
    budget when its agent made any within the budget's rolling window.
    """
    docs: dict[tuple[str, str], tuple[str, PolicyDocument] | None] = {}

    def policy_of(agent: str, environment: str) -> tuple[str, PolicyDocument] | None:
        if (agent, environment) not in docs:
            rev = policies.resolve(db, agent=agent, environment=environment)
            try:
                docs[agent, environment] = (rev.id, parse_policy(rev.text, rev.source).document) if rev else None
            except PolicyError:  # a stored revision that no longer compiles decides nothing
                docs[agent, environment] = None
        return docs[agent, environment]

    out: list[BudgetUse] = []
    agents: dict[str, str] = {}
    for s in queries.sessions(db, agent=agent, limit=sessions):
        agents.setdefault(s.agent, s.environment)
        found = policy_of(s.agent, s.environment)
        limits = found[1].budgets.session if found and found[1].budgets else None
        if found is None or limits is None or not s.llm_calls:
            continue
        out.append(
            BudgetUse(
                kind="session",
                subject=s.session,
                agent=s.agent,
                revision=found[0],
                max_cost_usd=limits.max_cost_usd,
                max_tokens=limits.max_tokens,
                window_seconds=None,
                cost_usd=s.cost_usd,
                tokens=s.tokens,
                calls=s.llm_calls,
                unpriced_calls=s.unpriced_llm_calls,
                used=_used(s.cost_usd, s.tokens, limits.max_cost_usd, limits.max_tokens),
            )
        )
    for name, environment in agents.items():
        found = policy_of(name, environment)
        per_agent = found[1].budgets.agent if found and found[1].budgets else None
        if found is None or per_agent is None:
            continue
        window = int(per_agent.window)
        rows = queries.usage(db, EventFilter(agent=name, since_us=now_us() - window * 1_000_000), "agent")
        calls = sum(r.calls for r in rows)
        if not calls:
            continue
        cost = sum((r.cost_usd for r in rows), Decimal())
        tokens = sum(r.input_tokens + r.output_tokens for r in rows)
        out.append(
            BudgetUse(
                kind="agent",
                subject=name,
                agent=name,
                revision=found[0],
                max_cost_usd=per_agent.max_cost_usd,
                max_tokens=per_agent.max_tokens,
                window_seconds=window,
                cost_usd=cost,
                tokens=tokens,
                calls=calls,
                unpriced_calls=sum(r.unpriced_calls for r in rows),
                used=_used(cost, tokens, per_agent.max_cost_usd, per_agent.max_tokens),
            )
        )
    return sorted(out, key=lambda b: (-b.used, -b.cost_usd, -b.calls))[:limit]


@router.get("/budgets", summary="Budgets in use, and what is spent of them")
async def list_budgets(
    key: Caller,
    db: Db,
    agent: Text | None = None,
    sessions: Annotated[int, Query(ge=1, le=1000, description="how many recently active sessions to look at")] = 200,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many, the most used")] = 20,
) -> list[BudgetUse]:
    """The budgets LLM calls were made against within their window, most used first.

    A session budget is in use when its session (one of the most recently active) made LLM
    calls; an agent budget when its agent made LLM calls within the budget's rolling window.
    An agent key sees only its own agent's.
    """
    return await run_in_threadpool(budgets, db, _agent_for(key, agent), sessions, limit)


class SpendSeriesOut(Sent):
    """One model's or agent's spend per bucket; `key` None is the `others` that spent least, together."""

    key: str | None
    others: int
    calls: list[int]
    cost_usd: list[Decimal]
    unpriced_calls: list[int]
    total_usd: Decimal
    total_calls: int
    total_unpriced: int


class SpendOut(Sent):
    """LLM spend per hour or day from `since_us` to `until_us`: one series per model or agent, most spent first."""

    by: Literal["model", "agent"]
    bucket: Literal["hour", "day"]
    since_us: int
    until_us: int
    buckets: list[int]  # each bucket's start, µs, oldest first; every series has a value for each
    series: list[SpendSeriesOut]


@router.get("/spend", summary="LLM spend per hour or day, by model or by agent")
async def spend(
    key: Caller,
    db: Db,
    by: Literal["model", "agent"] = "model",
    bucket: Annotated[
        Literal["hour", "day"] | None, Query(description="default: hours for a range of two days or less, else days")
    ] = None,
    since_us: Annotated[int | None, Query(ge=0, le=INT64_MAX, description="default: the first LLM call")] = None,
    until_us: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="default: now")] = None,
    utc_offset_minutes: Annotated[
        int, Query(ge=-14 * 60, le=14 * 60, description="where a day starts: the viewer's offset from UTC")
    ] = 0,
    agent: Text | None = None,
    top: Annotated[int, Query(ge=1, le=20, description="series of their own; the rest are summed as one")] = 8,
) -> SpendOut:
    """Cost, calls and unpriced calls of LLM calls per bucket, at most 1,000 buckets.

    Without a start, the range begins at the first LLM call, or 1,000 buckets back. An agent
    key sees only its own agent's spend.
    """
    agent = _agent_for(key, agent)

    def run() -> _spend.Spend:
        first = _spend.first_llm_call(db, agent) if since_us is None else None
        size, since, until = _spend.plan(
            since_us=since_us,
            until_us=until_us,
            bucket=bucket,
            offset_us=utc_offset_minutes * 60_000_000,
            now_us=now_us(),
            first_us=first,
        )
        return _spend.spend(db, by=by, bucket=size, since_us=since, until_us=until, agent=agent, top=top)

    try:
        found = await run_in_threadpool(run)
    except _spend.RangeRefused as exc:
        where = [{"location": f"query.{exc.parameter}", "message": str(exc)}]
        raise APIError(422, str(exc), details=where) from None
    return SpendOut(
        by=found.by,
        bucket=found.bucket,
        since_us=found.since_us,
        until_us=found.until_us,
        buckets=found.buckets,
        series=[SpendSeriesOut(**vars(s)) for s in found.series],
    )
