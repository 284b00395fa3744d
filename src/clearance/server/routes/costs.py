"""Budgets and how much of them is spent, for the dashboard's costs page.

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
from ..._store import Database, EventFilter
from ..._store import _policies as policies
from ..._store import _queries as queries
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire import Sent
from ...errors import PolicyError
from ...policy import PolicyDocument, parse_policy
from .._auth import current_key, database
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


def budgets(db: Database, agent: str | None, sessions: int) -> list[BudgetUse]:
    """Budget use of the most recently active sessions and of their agents."""
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
        limit = found[1].budgets.session if found and found[1].budgets else None
        if found is None or limit is None:
            continue
        out.append(
            BudgetUse(
                kind="session",
                subject=s.session,
                agent=s.agent,
                revision=found[0],
                max_cost_usd=limit.max_cost_usd,
                max_tokens=limit.max_tokens,
                window_seconds=None,
                cost_usd=s.cost_usd,
                tokens=s.tokens,
                calls=s.llm_calls,
                unpriced_calls=s.unpriced_llm_calls,
                used=_used(s.cost_usd, s.tokens, limit.max_cost_usd, limit.max_tokens),
            )
        )
    for name, environment in agents.items():
        found = policy_of(name, environment)
        per_agent = found[1].budgets.agent if found and found[1].budgets else None
        if found is None or per_agent is None:
            continue
        window = int(per_agent.window)
        rows = queries.usage(db, EventFilter(agent=name, since_us=now_us() - window * 1_000_000), "agent")
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
                calls=sum(r.calls for r in rows),
                unpriced_calls=sum(r.unpriced_calls for r in rows),
                used=_used(cost, tokens, per_agent.max_cost_usd, per_agent.max_tokens),
            )
        )
    return sorted(out, key=lambda b: -b.used)


@router.get("/budgets", summary="Budgets of the active policies, and what is spent of them")
async def list_budgets(
    key: Caller, db: Db, agent: Text | None = None, sessions: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[BudgetUse]:
    """The session budgets of the most recently active sessions and the agent budgets of their agents.

    Most used first. An agent key sees only its own agent's.
    """
    return await run_in_threadpool(budgets, db, _agent_for(key, agent), sessions)
