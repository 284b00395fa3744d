"""Computing the facts a policy asks for, exactly, from the audit log.

Run inside the write transaction that records the decision, so two processes cannot both read
the same daily total and both pass a cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from ..policy import FactSpec
from ..policy._functions import to_decimal
from . import _grants as grants
from ._db import Database

# A call counts unless it was blocked, or its approval was denied, expired or cancelled.
_COUNTED = (
    "kind = 'tool_call.decided' AND decision IN ('allow', 'require_approval') AND NOT EXISTS ("
    "SELECT 1 FROM events d WHERE d.call_id = events.call_id"
    " AND d.kind IN ('approval.decided', 'approval.expired')"
    " AND d.decision IN ('denied', 'expired', 'cancelled'))"
)
_NOT_EXCLUDED = "call_id != :exclude"
_NANO = Decimal(10) ** 9


class FactError(Exception):
    """A fact that cannot be computed (e.g. a summed argument that is not a number)."""


def compute(
    db: Database,
    cur: Any,
    specs: Iterable[FactSpec],
    *,
    agent: str,
    session: str | None,
    tool: str,
    now_us: int,
    environment: str | None = None,
    exclude: str | None = None,
    args: Mapping[str, Any] | None = None,
    requester: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of `specs`, and the reason for each one that could not be computed.

    `exclude` leaves one call out of the counts and sums (deciding an edit of that call again);
    `environment`, `args` and `requester` are the call's, for `grant_id`.
    """
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        try:
            if spec.kind == "grant_id":
                if environment is None:  # a grant covers calls of its own environment only
                    raise FactError(f"facts.{spec.name} needs the call's environment")
                found = grants.covering(
                    db,
                    cur,
                    agent=agent,
                    environment=environment,
                    tool=tool,
                    session=session or "",
                    requester=requester,
                    args=args or {},
                    at=now_us,
                )
                values[spec.name] = found.id if found is not None else ""
            else:
                values[spec.name] = _one(db, cur, spec, agent, session, tool, now_us, exclude)
        except FactError as exc:
            errors[spec.name] = str(exc)
    return values, errors


def _scalar(db: Database, cur: Any, sql: str, params: dict[str, Any]) -> int:
    cur.execute(db.sql(sql), params)
    row = cur.fetchone()
    return int(row[0] or 0) if row else 0


def _one(
    db: Database, cur: Any, spec: FactSpec, agent: str, session: str | None, tool: str, now_us: int, exclude: str | None
) -> Any:
    since = now_us - spec.window_seconds * 1_000_000
    p: dict[str, Any] = {"agent": agent, "session": session, "tool": tool, "since": since, "exclude": exclude or ""}
    kind = spec.kind
    if kind.endswith(("budget_extension_usd", "budget_extension_tokens")):
        usd, tokens = grants.extensions(
            db, cur, scope=kind.split("_", 1)[0], agent=agent, session=session, since_us=since
        )
        return float(usd) if kind.endswith("_usd") else tokens
    if kind in ("session_cost_usd", "session_tokens"):
        col = "cost_nusd" if kind == "session_cost_usd" else "tokens"
        total = _scalar(
            db,
            cur,
            f"SELECT {db.total(col)} FROM events WHERE session = :session AND kind = 'llm.call'",
            p,
        )
        return float(Decimal(total) / _NANO) if kind == "session_cost_usd" else total
    if kind in ("agent_cost_usd", "agent_tokens"):
        col = "cost_nusd" if kind == "agent_cost_usd" else "tokens"
        total = _scalar(
            db,
            cur,
            f"SELECT {db.total(col)} FROM events WHERE agent = :agent AND kind = 'llm.call' AND at_us >= :since",
            p,
        )
        return float(Decimal(total) / _NANO) if kind == "agent_cost_usd" else total
    if kind == "session_calls":
        return _scalar(
            db,
            cur,
            f"SELECT COUNT(*) FROM events WHERE session = :session AND tool = :tool AND {_COUNTED} AND {_NOT_EXCLUDED}",
            p,
        )
    where = f"agent = :agent AND tool = :tool AND at_us >= :since AND {_COUNTED} AND {_NOT_EXCLUDED}"
    if kind == "calls":
        return _scalar(db, cur, f"SELECT COUNT(*) FROM events WHERE {where}", p)
    cur.execute(db.sql(f"SELECT body FROM events WHERE {where}"), p)
    summed = Decimal(0)
    for (body,) in cur.fetchall():
        args = json.loads(body).get("args") or {}
        if spec.arg not in args:
            continue  # an earlier call without the argument adds nothing
        try:
            summed += to_decimal(args[spec.arg])
        except ValueError:
            raise FactError(
                f"facts.{spec.name}: a recorded {tool} call has {spec.arg}={args[spec.arg]!r}, not a number"
            ) from None
    return float(summed)
