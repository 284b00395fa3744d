"""Grants as the API and the CLI show them, and what the revision that asked says about an approval.

`offers` reads the policy revision that put an approval to approval (parsed once per revision:
revisions never change) and says what its rule lets an approver grant, or which exhausted
budget asked; `reads`, which arguments its rules' conditions read. Neither ever fails a read —
a revision that is gone or no longer parses offers nothing and reads nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from ._store import Approval, Database
from ._store import _grants as grants
from ._store import _policies as policies
from ._store._grants import Grant
from ._wire._grants import GrantLimitsOut, GrantOut
from .policy import Policy, parse_policy
from .policy._model import GrantLimits

log = logging.getLogger("clearance")
Budget = Literal["session", "agent"]
_KEEP = 64  # parsed revisions kept per process


def grant_out(db: Database, g: Grant, at_us: int) -> GrantOut:
    """The view of a stored grant, its status as of `at_us`.

    A grant without limits keeps no counter: its `calls_used` is counted from the calls' records.
    """
    counted = g.kind != "calls" or g.max_calls is not None or g.max_total is not None
    return GrantOut(
        id=g.id,
        kind=g.kind,  # type: ignore[arg-type]
        scope=g.scope,  # type: ignore[arg-type]
        agent=g.agent,
        environment=g.environment,
        session=g.session,
        requester=g.requester,
        tool=g.tool,
        rule_ids=list(g.rule_ids),
        constraints=g.constraints,
        max_calls=g.max_calls,
        calls_used=g.calls_used if counted else grants.uses(db, g),
        total_arg=g.total_arg,
        max_total=str(g.max_total) if g.max_total is not None else None,
        total_used=str(g.total_used),
        extend_usd=str(g.extend_usd) if g.extend_usd is not None else None,
        extend_tokens=g.extend_tokens,
        approval_id=g.approval_id,
        policy_revision=g.policy_revision,
        granted_by=g.granted_by,
        note=g.note,
        created_at_us=g.created_at_us,
        expires_at_us=g.expires_at_us,
        revoked_at_us=g.revoked_at_us,
        revoked_by=g.revoked_by,
        revoke_reason=g.revoke_reason,
        ended_at_us=g.ended_at_us,
        status=g.status(at_us),  # type: ignore[arg-type]
    )


def limits_out(limits: GrantLimits) -> GrantLimitsOut:
    """The view of a rule's `approval.grants`."""
    return GrantLimitsOut(
        scopes=list(limits.scopes),
        max_duration=limits.max_duration,
        max_calls=limits.max_calls,
        max_total={name: str(amount) for name, amount in limits.max_total.items()} if limits.max_total else None,
    )


def budget_of(rule_ids: tuple[str, ...] | list[str]) -> Budget | None:
    """The budget whose exhaustion asked for an approval (its rule ids say `budget:session`), or None."""
    for rule_id in rule_ids:
        if rule_id == "budget:session":
            return "session"
        if rule_id == "budget:agent":
            return "agent"
    return None


class _Parsed:
    """Policies by revision id, parsed once (None: the revision does not parse)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Policy | None] = {}
        self._lock = threading.Lock()

    def get(self, db: Database, revision: str) -> Policy | None:
        with self._lock:
            if revision in self._by_id:
                return self._by_id[revision]
        rev = policies.get(db, revision)
        if rev is None:
            return None  # not kept: another store may hold it
        try:
            parsed: Policy | None = parse_policy(rev.text, rev.source)
        except Exception as exc:  # a revision this version cannot read offers nothing, and fails no read
            log.warning("policy revision %s does not parse (%s); its approvals offer no grants", revision, exc)
            parsed = None
        with self._lock:
            if len(self._by_id) >= _KEEP:
                self._by_id.pop(next(iter(self._by_id)))
            self._by_id[revision] = parsed
        return parsed


_PARSED = _Parsed()


def offers(db: Database, a: Approval) -> tuple[GrantLimitsOut | None, Budget | None]:
    """What an approver may give with `a`: the grant limits of the rule that asked, and the budget that asked.

    A budget's approval may extend it and grants nothing; a rule's may grant within its
    `approval.grants` (None: no grants). Never raises for a revision that is gone or unreadable.
    """
    budget = budget_of(a.rule_ids)
    if budget is not None or not a.policy_revision:
        return None, budget
    policy = _PARSED.get(db, a.policy_revision)
    if policy is None:
        return None, None
    try:
        limits = policy.grant_limits(a.tool, tuple(a.rule_ids))
    except Exception as exc:  # as above: the read goes on without the offer
        log.warning("grant limits of %s could not be read (%s)", a.id, exc)
        return None, None
    return (limits_out(limits) if limits is not None else None), None


def reads(db: Database, a: Approval) -> list[str]:
    """The arguments the conditions of the rules that asked for `a` read (`Policy.reads`): what is at stake.

    Empty when only a budget asked, or its revision is gone or unreadable; never raises.
    """
    if not a.policy_revision:
        return []
    policy = _PARSED.get(db, a.policy_revision)
    if policy is None:
        return []
    try:
        return list(policy.reads(a.tool, tuple(a.rule_ids)))
    except Exception as exc:  # as in `offers`: the read goes on without it
        log.warning("the arguments read by the rules of %s could not be found (%s)", a.id, exc)
        return []
