"""Grants on the store: what an approver let through beyond the one call they approved.

Two kinds:
- `calls`: similar calls of the same tool in the same environment, within a scope (`session`,
  `agent`, `requester`),
  until `expires_at_us`, optionally at most `max_calls` calls, a running total of one numeric
  argument up to `max_total`, and argument constraints (the policy's `params` constraints).
  A call that a live grant covers is allowed without waiting (`use`, inside the call's own
  write transaction, so two racing calls cannot both take the last of a limit).
- `budget`: more LLM budget for a session or an agent (`extend_nusd`, `extend_tokens`).

Every grant, revocation, expiry and exhaustion is an event; each use is recorded on the call's
own `tool_call.decided` record (`grant_id`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from .._clock import now_us as clock_now_us
from ..errors import GrantNotFound
from ..policy._functions import to_decimal
from ..policy._model import ParamSpec
from ..policy._params import check as check_params
from ._db import Database
from ._events import Event, append, make_event, new_id
from ._kinds import Kind

_FIELDS = (
    "id",
    "kind",
    "scope",
    "agent",
    "environment",
    "session",
    "requester",
    "tool",
    "rule_ids",
    "constraints_json",
    "max_calls",
    "total_arg",
    "max_total",
    "calls_used",
    "total_used",
    "extend_nusd",
    "extend_tokens",
    "approval_id",
    "policy_revision",
    "granted_by",
    "note",
    "created_at_us",
    "expires_at_us",
    "revoked_at_us",
    "revoked_by",
    "revoke_reason",
    "ended_at_us",
)
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM grants"
_NANO = Decimal(10) ** 9
_TRIES = 8  # a racing use re-reads a grant at most this often before asking for approval instead


@dataclass(frozen=True)
class Grant:
    """A stored grant. `status` says whether it still lets calls through."""

    id: str
    kind: str
    scope: str
    agent: str
    environment: str
    session: str | None
    requester: str | None
    tool: str | None
    rule_ids: tuple[str, ...]
    constraints: dict[str, Any]
    max_calls: int | None
    total_arg: str | None
    max_total: Decimal | None
    calls_used: int
    total_used: Decimal
    extend_usd: Decimal | None
    extend_tokens: int | None
    approval_id: str | None
    policy_revision: str | None
    granted_by: str
    note: str | None
    created_at_us: int
    expires_at_us: int
    revoked_at_us: int | None
    revoked_by: str | None
    revoke_reason: str | None
    ended_at_us: int | None

    def status(self, at_us: int) -> str:
        """`live`, `revoked`, `expired` or `exhausted` (its call or total limit reached).

        A budget extension counts until it is revoked (its row's expiry only bounds the row).
        """
        if self.revoked_at_us is not None:
            return "revoked"
        if self.kind == "budget":
            return "live"
        if self.expires_at_us <= at_us:
            return "expired"
        if self.max_calls is not None and self.calls_used >= self.max_calls:
            return "exhausted"
        if self.max_total is not None and self.total_used >= self.max_total:
            return "exhausted"
        return "live"

    def record(self) -> dict[str, Any]:
        """The fields its audit records carry."""
        out: dict[str, Any] = {
            "grant_id": self.id,
            "grant_kind": self.kind,
            "scope": self.scope,
            "granted_by": self.granted_by,
            "expires_at_us": self.expires_at_us,
        }
        if self.kind == "calls":
            out["rule_ids"] = list(self.rule_ids)
            if self.constraints:
                out["constraints"] = self.constraints
            if self.max_calls is not None:
                out["max_calls"] = self.max_calls
            if self.max_total is not None:
                out["max_total"] = {str(self.total_arg): str(self.max_total)}
        if self.extend_usd is not None:
            out["extend_usd"] = str(self.extend_usd)
        if self.extend_tokens is not None:
            out["extend_tokens"] = self.extend_tokens
        if self.approval_id is not None:
            out["approval_id"] = self.approval_id
        return out


def _from_row(row: Sequence[Any]) -> Grant:
    r = dict(zip(_FIELDS, row, strict=True))
    return Grant(
        id=r["id"],
        kind=r["kind"],
        scope=r["scope"],
        agent=r["agent"],
        environment=r["environment"],
        session=r["session"],
        requester=r["requester"],
        tool=r["tool"],
        rule_ids=tuple(json.loads(r["rule_ids"] or "[]")),
        constraints=json.loads(r["constraints_json"] or "{}"),
        max_calls=r["max_calls"],
        total_arg=r["total_arg"],
        max_total=Decimal(r["max_total"]) if r["max_total"] is not None else None,
        calls_used=int(r["calls_used"]),
        total_used=Decimal(r["total_used"] or "0"),
        extend_usd=Decimal(r["extend_nusd"]) / _NANO if r["extend_nusd"] is not None else None,
        extend_tokens=r["extend_tokens"],
        approval_id=r["approval_id"],
        policy_revision=r["policy_revision"],
        granted_by=r["granted_by"],
        note=r["note"],
        created_at_us=r["created_at_us"],
        expires_at_us=r["expires_at_us"],
        revoked_at_us=r["revoked_at_us"],
        revoked_by=r["revoked_by"],
        revoke_reason=r["revoke_reason"],
        ended_at_us=r["ended_at_us"],
    )


def _event(kind: Kind, grant: Grant, at: int, **more: Any) -> Event:
    fields = {
        "agent": grant.agent,
        "environment": grant.environment,
        "session": grant.session,
        "tool": grant.tool,
        "decision": kind.removeprefix("grant."),
        **grant.record(),
        **more,
    }
    return make_event(kind, at, fields)


def new_grant_id() -> str:
    """A new grant id (`grt_…`)."""
    return new_id("grt")


def insert(db: Database, cur: Any, row: Mapping[str, Any]) -> Grant:
    """Store a new grant (its columns) and its `grant.created` record, inside `cur`'s transaction."""
    values = {f: row.get(f) for f in _FIELDS}
    values["id"] = values["id"] or new_grant_id()
    values["calls_used"] = 0
    values["total_used"] = "0"
    cur.execute(
        db.sql(f"INSERT INTO grants ({', '.join(_FIELDS)}) VALUES ({', '.join(':' + f for f in _FIELDS)})"),
        values,
    )
    grant = _from_row([values[f] for f in _FIELDS])
    append(db, cur, [_event("grant.created", grant, grant.created_at_us, note=grant.note)])
    db.notify(cur, "grants")
    return grant


def get(db: Database, grant_id: str) -> Grant:
    """The grant with this id.

    Raises:
        GrantNotFound: No such grant.
    """
    with db.read() as cur:
        cur.execute(db.sql(f"{_SELECT} WHERE id = :id"), {"id": grant_id})
        row = cur.fetchone()
    if row is None:
        raise GrantNotFound(f"no grant has the id {grant_id[:100]!r}")
    return _from_row(row)


def listing(
    db: Database,
    *,
    agent: str | None = None,
    session: str | None = None,
    live: bool = False,
    limit: int = 200,
) -> list[Grant]:
    """Grants, newest first; `live` keeps those that still let calls through."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit, "now": clock_now_us()}
    if agent is not None:
        where.append("agent = :agent")
        params["agent"] = agent
    if session is not None:
        where.append("session = :session")
        params["session"] = session
    if live:
        where.append("revoked_at_us IS NULL AND ended_at_us IS NULL AND (kind = 'budget' OR expires_at_us > :now)")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with db.read() as cur:
        cur.execute(db.sql(f"{_SELECT}{clause} ORDER BY created_at_us DESC LIMIT :limit"), params)
        return [_from_row(r) for r in cur.fetchall()]


def of_approvals(db: Database, cur: Any, approval_ids: Sequence[str]) -> dict[str, Grant]:
    """The grant given with each of these approvals that has one (at most one each), by approval id."""
    if not approval_ids:
        return {}
    marks = {f"a{i}": a for i, a in enumerate(approval_ids)}
    cur.execute(db.sql(f"{_SELECT} WHERE approval_id IN ({', '.join(':' + m for m in marks)}) ORDER BY id"), marks)
    found: dict[str, Grant] = {}
    for row in cur.fetchall():
        try:
            grant = _from_row(row)
        except (ValueError, TypeError, ArithmeticError):  # a row no version writes (by hand): not shown
            continue
        found.setdefault(str(grant.approval_id), grant)
    return found


@dataclass(frozen=True)
class _Terms:
    """What a grant allows, which never changes after it is given (cached per grant id)."""

    grant: Grant
    rule_ids: frozenset[str]
    constraints: dict[str, ParamSpec]
    counted: bool  # it has a call or total limit: each use moves its counter
    readable: bool = True  # False: its constraints do not parse, so it covers nothing


_TERMS: dict[str, _Terms] = {}
# Live grants that may cover a call: scope matched in SQL; only the counters are read per call.
_LIVE = (
    "SELECT id, calls_used, total_used FROM grants WHERE agent = :agent AND environment = :environment"
    " AND tool = :tool AND kind = 'calls'"
    " AND expires_at_us > :now AND revoked_at_us IS NULL AND ended_at_us IS NULL"
    " AND (scope = 'agent' OR (scope = 'session' AND session = :session)"
    " OR (scope = 'requester' AND requester = :requester))"
)


def _terms(db: Database, cur: Any, grant_id: str) -> _Terms:
    terms = _TERMS.get(grant_id)
    if terms is None:
        cur.execute(db.sql(f"{_SELECT} WHERE id = :id"), {"id": grant_id})
        grant = _from_row(cur.fetchone())
        counted = grant.max_calls is not None or grant.max_total is not None
        try:
            parsed = {name: ParamSpec.model_validate(spec) for name, spec in grant.constraints.items()}
        except (ValidationError, AttributeError, TypeError, ValueError):
            # A row no version of `grant_row` writes (by hand, say): fail closed, calls ask.
            parsed, readable = {}, False
        else:
            readable = True
        terms = _Terms(grant, frozenset(grant.rule_ids), parsed, counted, readable)
        if len(_TERMS) > 4096:
            _TERMS.clear()
        _TERMS[grant_id] = terms
    return terms


def _own(terms: _Terms, requester: str | None) -> bool:
    """Whether the call is made for the person who gave the grant: they may not approve their own calls."""
    return requester is not None and terms.grant.granted_by.removeprefix("user:") == requester


def _amount(terms: _Terms, calls_used: int, total_used: str, args: Mapping[str, Any]) -> Decimal | None:
    """What this call adds to the grant's running total (0 without one), or None when it does not fit."""
    grant = terms.grant
    if not terms.readable or (grant.max_calls is not None and calls_used >= grant.max_calls):
        return None
    if terms.constraints and check_params(terms.constraints, "allow", args):
        return None
    if grant.total_arg is None or grant.max_total is None:
        return Decimal(0)
    try:
        amount = to_decimal(args[grant.total_arg])
    except (KeyError, ValueError, InvalidOperation, TypeError):
        return None  # a grant with a total covers only calls that say how much they add
    if amount < 0 or Decimal(total_used) + amount > grant.max_total:
        return None
    return amount


def _live(
    db: Database, cur: Any, *, agent: str, environment: str, tool: str, session: str, requester: str | None, at: int
) -> list[tuple[str, int, str]]:
    # On PostgreSQL a revoke waits for the calls that read the grant, and they for it.
    lock = " FOR SHARE" if db.dialect == "postgresql" else ""
    cur.execute(
        db.sql(_LIVE + lock),
        {
            "agent": agent,
            "environment": environment,
            "tool": tool,
            "now": at,
            "session": session,
            "requester": requester,
        },
    )
    rows = cur.fetchall()
    if len(rows) > 1:  # the oldest first (ids sort by time); sorted here, not in SQL: no temporary b-tree
        rows.sort(key=lambda r: r[0])
    return [(r[0], int(r[1]), r[2] or "0") for r in rows]


def covering(
    db: Database,
    cur: Any,
    *,
    agent: str,
    environment: str,
    tool: str,
    session: str,
    requester: str | None,
    args: Mapping[str, Any],
    at: int,
    rule_ids: Sequence[str] | None = None,
) -> Grant | None:
    """The live grant that would cover this call now (the oldest), or None. Uses nothing."""
    for grant_id, used, total in _live(
        db, cur, agent=agent, environment=environment, tool=tool, session=session, requester=requester, at=at
    ):
        terms = _terms(db, cur, grant_id)
        if rule_ids is not None and not terms.rule_ids.issuperset(rule_ids):
            continue
        if _own(terms, requester):
            continue
        if _amount(terms, used, total, args) is not None:
            return replace(terms.grant, calls_used=used, total_used=Decimal(total))
    return None


@dataclass(frozen=True)
class Use:
    """One use of a grant: which, who gave it, and its counters after this use (counted grants)."""

    grant_id: str
    granted_by: str
    calls_used: int | None
    total_used: Decimal | None

    def record(self) -> dict[str, Any]:
        """As the call's decided record keeps it."""
        if self.calls_used is None:
            return {}
        return {"calls_used": self.calls_used, "total_used": str(self.total_used)}


def use(
    db: Database,
    cur: Any,
    *,
    agent: str,
    environment: str,
    tool: str,
    session: str,
    requester: str | None,
    rule_ids: Sequence[str],
    args: Mapping[str, Any],
    at: int,
) -> tuple[Use, list[Event]] | None:
    """Take one use of a live grant that covers the call, inside the call's write transaction.

    Returns the use, and the records of the grant's end when this use reached its limit; None
    when no grant covers the call (it goes to approval as usual). A grant with a call or total
    limit counts each use: its counter moves only if nobody moved it since it was read, so two
    racing calls cannot both take the last of a limit (the loser reads again, and asks for
    approval if nothing is left). A grant with neither is not written to: its uses are the
    calls' own records (`grant_id`), which keeps a covered call as cheap as an allowed one.
    """
    for _ in range(_TRIES):
        moved = False
        for grant_id, used, total in _live(
            db, cur, agent=agent, environment=environment, tool=tool, session=session, requester=requester, at=at
        ):
            terms = _terms(db, cur, grant_id)
            if not terms.rule_ids.issuperset(rule_ids) or _own(terms, requester):
                continue
            amount = _amount(terms, used, total, args)
            if amount is None:
                continue
            if not terms.counted:
                return Use(grant_id, terms.grant.granted_by, None, None), []
            new_total = Decimal(total) + amount
            # RETURNING, not rowcount: in a pipelined transaction (the server's group commit)
            # rowcount is unknown until a result is read, and a use taken would look lost.
            cur.execute(
                db.sql(
                    "UPDATE grants SET calls_used = :used, total_used = :total WHERE id = :id AND calls_used = :seen"
                    " AND revoked_at_us IS NULL AND ended_at_us IS NULL AND expires_at_us > :now RETURNING id"
                ),
                {"used": used + 1, "total": str(new_total), "id": grant_id, "seen": used, "now": at},
            )
            if cur.fetchone() is None:
                moved = True  # another call used it (or it was revoked) since we read it: read again
                break
            after = replace(terms.grant, calls_used=used + 1, total_used=new_total)
            ended: list[Event] = []
            if after.status(at) == "exhausted":
                cur.execute(db.sql("UPDATE grants SET ended_at_us = :at WHERE id = :id"), {"at": at, "id": grant_id})
                ended.append(
                    _event("grant.exhausted", after, at, calls_used=after.calls_used, total_used=str(new_total))
                )
            return Use(grant_id, terms.grant.granted_by, used + 1, new_total), ended
        if not moved:
            return None
    return None


def uses(db: Database, grant: Grant) -> int:
    """How many calls the grant let through, counted from the calls' own records.

    Exact for every grant, counted or not (a grant without limits keeps no counter).
    """
    if grant.kind != "calls":
        return 0
    with db.read() as cur:
        cur.execute(
            db.sql(
                "SELECT body FROM events WHERE kind = 'tool_call.decided' AND agent = :agent AND tool = :tool"
                " AND at_us >= :since AND at_us <= :until AND body LIKE :needle"
            ),
            {
                "agent": grant.agent,
                "tool": grant.tool,
                "since": grant.created_at_us,
                "until": grant.ended_at_us or grant.expires_at_us,
                "needle": f'%"grant_id":"{grant.id}"%',  # a filter only: an argument may hold the same text
            },
        )
        bodies = [row[0] for row in cur.fetchall()]
    return sum(1 for body in bodies if json.loads(body).get("grant_id") == grant.id)


def revoke(db: Database, grant_id: str, *, by: str, why: str | None = None) -> Grant:
    """End a grant now: no call uses it after this commits.

    Raises:
        GrantNotFound: No such grant.
        ValueError: It had ended already (revoked, expired or used up).
    """
    at = clock_now_us()
    with db.write() as cur:
        cur.execute(db.sql(f"{_SELECT} WHERE id = :id"), {"id": grant_id})
        row = cur.fetchone()
        if row is None:
            raise GrantNotFound(f"no grant has the id {grant_id[:100]!r}")
        grant = _from_row(row)
        status = grant.status(at)
        if status != "live" or grant.ended_at_us is not None:
            raise ValueError(f"grant {grant.id} has ended already ({status if status != 'live' else 'used up'})")
        cur.execute(
            db.sql(
                "UPDATE grants SET revoked_at_us = :at, revoked_by = :by, revoke_reason = :why, ended_at_us = :at"
                " WHERE id = :id AND revoked_at_us IS NULL"
            ),
            {"at": at, "by": by, "why": why, "id": grant.id},
        )
        after = Grant(
            **{**grant.__dict__, "revoked_at_us": at, "revoked_by": by, "revoke_reason": why, "ended_at_us": at}
        )
        append(db, cur, [_event("grant.revoked", after, at, by=by, reason=why)])
        db.notify(cur, "grants")
    return after


def sweep(db: Database) -> list[Grant]:
    """Record the end of every grant whose time is up (`grant.expired`, once); returns them."""
    at = clock_now_us()
    with db.write() as cur:
        cur.execute(
            db.sql(
                f"{_SELECT} WHERE kind = 'calls' AND ended_at_us IS NULL AND revoked_at_us IS NULL"
                " AND expires_at_us <= :now"
            ),
            {"now": at},
        )
        due = [_from_row(r) for r in cur.fetchall()]
        ended = []
        for g in due:
            cur.execute(
                db.sql("UPDATE grants SET ended_at_us = :at WHERE id = :id AND ended_at_us IS NULL"),
                {"at": at, "id": g.id},
            )
            if cur.rowcount == 1:
                ended.append(g)
        if ended:
            append(db, cur, [_event("grant.expired", g, at, calls_used=g.calls_used) for g in ended])
            db.notify(cur, "grants")
    return ended


def extensions(
    db: Database, cur: Any, *, scope: str, agent: str, session: str | None, since_us: int
) -> tuple[Decimal, int]:
    """What approvers added to a session's (or, since `since_us`, an agent's) budget: (USD, tokens)."""
    params: dict[str, Any]
    if scope == "session":
        where, params = "kind = 'budget' AND scope = 'session' AND session = :session", {"session": session}
    else:
        where = "kind = 'budget' AND scope = 'agent' AND agent = :agent AND created_at_us >= :since"
        params = {"agent": agent, "since": since_us}
    cur.execute(
        db.sql(f"SELECT SUM(extend_nusd), SUM(extend_tokens) FROM grants WHERE {where} AND revoked_at_us IS NULL"),
        params,
    )
    row = cur.fetchone()
    nusd, tokens = (row[0] or 0, row[1] or 0) if row else (0, 0)
    return Decimal(int(nusd)) / _NANO, int(tokens)


def check_constraints(constraints: Mapping[str, Any]) -> list[str]:
    """Problems with a grant's argument constraints (the policy's `params` syntax), one line each."""
    problems = []
    for name, spec in constraints.items():
        try:
            ParamSpec.model_validate(spec if not isinstance(spec, str) else {"type": spec})
        except ValidationError as exc:
            for err in exc.errors()[:3]:
                where = ".".join(str(p) for p in err["loc"])
                label = name if isinstance(name, str) and name.isascii() and name.isidentifier() else repr(name)[:60]
                problems.append(f"constraints.{label}{'.' + where if where else ''}: {err['msg']}"[:300])
    return problems
