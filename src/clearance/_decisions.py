"""Deciding approvals on a store, once, and waking the waiter.

Approve (maybe with edits), deny, vote towards a quorum, expire, escalate.

Needs only the store (the policy for an edit is read from it), so the CLI in another terminal,
the server and Slack all decide the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _edits, _granting
from ._boundary import check_size
from ._canonical import ARGS_HASH_ALG, args_hash, canonical_json, redact
from ._clock import now_us
from ._notify import wake
from ._store import Approval, Database
from ._store import _approval_waiters as waiters
from ._store import _approvals as approvals
from ._store import _facts as facts
from ._store import _grants as grants
from ._store import _policies as policies
from ._store._approvals import INEXACT_ARGS
from ._store._events import Event, append, make_event
from ._wire import ApprovalStatus, OnTimeout
from .errors import (
    ApprovalAlreadyDecided,
    ApprovalEditRejected,
    ApprovalForbidden,
    ApprovalNotFound,
    ClearanceError,
    GrantRejected,
)
from .policy import Decision, Effect, Policy, parse_policy


@dataclass(frozen=True)
class Decider:
    """Who decides an approval.

    Attributes:
        name: As recorded: `user:alice`, `key:ops:ab12…`, or the local user's name (CLI).
        roles: Their roles, matched against the rule's `approvers` (`role:NAME`).
        agent: The agent an API key is bound to (it may never decide that agent's calls).
        trusted: The embedded store's own CLI: whoever can write the file decides, so
            approver groups are not checked (the requester still cannot approve their own).
    """

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    agent: str | None = None
    trusted: bool = False

    @property
    def person(self) -> str:
        """The person's username, without the `user:` prefix."""
        return self.name.removeprefix("user:")


PolicyFor = Callable[[Approval], Policy | None]


def refusal(a: Approval, who: Decider) -> str | None:
    """Why `who` may not decide `a`, or None when they may."""
    if not who.trusted and "approver" not in who.roles:
        return "only approvers decide approvals (this key or person lacks the approver role)"
    if who.agent is not None and who.agent == a.agent:
        return f"a key bound to the requesting agent ({a.agent!r}) cannot decide its approvals"
    if a.requested_by is not None and who.person == a.requested_by:
        return f"{a.requested_by} requested this call and cannot decide it"
    groups = a.deciders
    if groups and not who.trusted:
        allowed = {g.removeprefix("role:") for g in groups if g.startswith("role:")}
        people = {g.removeprefix("user:") for g in groups if g.startswith("user:")}
        if not (allowed & who.roles or who.person in people):
            return f"only {', '.join(groups)} may decide this approval"
    return None


def decide(
    db: Database,
    approval_id: str,
    *,
    approve: bool,
    by: Decider,
    note: str | None = None,
    args: dict[str, Any] | None = None,
    policy_for: PolicyFor | None = None,
    grant: _granting.GrantRequest | None = None,
    extend: _granting.BudgetExtension | None = None,
) -> Approval:
    """Approve or deny a pending approval, once, record who did, and wake its waiter.

    With `args`, the approver runs the call with these arguments instead (see `_edits`): they
    are checked against the tool's parameters and the edited call is decided again by the
    active policy (`policy_for`, default: the policy active for the agent in this store). An
    edit policy blocks is refused; one that would itself need approval counts as approved by
    this approver. With a quorum, an approval is a vote until enough different approvers voted;
    any denial denies.

    With `grant`, the approver also lets similar calls through (within the rule's
    `approval.grants`); with `extend`, they add to the exhausted budget that asked. Either is
    stored in the same transaction as the decision, or the whole decision is refused.

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalAlreadyDecided: It was decided or expired already (says by whom).
        ApprovalForbidden: `by` may not decide it (the requester, the agent, not in its group).
        ApprovalEditRejected: The edited arguments do not fit or policy blocks them.
        GrantRejected: The grant or extension is wider than the rule permits, or malformed.
    """
    try:
        return _decide(
            db,
            approval_id,
            approve=approve,
            who=by,
            note=note,
            args=args,
            policy_for=policy_for,
            grant=grant,
            extend=extend,
        )
    except (ApprovalNotFound, ApprovalForbidden, ApprovalEditRejected, ApprovalAlreadyDecided, GrantRejected) as exc:
        _refused(db, approval_id, by, approve, exc)
        raise


def refuse(db: Database, approval_id: str, who: Decider, *, approve: bool, why: str) -> None:
    """Audit a decision refused before it reached `decide` (e.g. from an unknown Slack user)."""
    _refused(db, approval_id, who, approve, ClearanceError(why))


def _refused(db: Database, approval_id: str, who: Decider, approve: bool, exc: ClearanceError) -> None:
    """Audit a refused decision: who tried what, and why it was refused (nothing else changes)."""
    try:
        a: Approval | None = approvals.get(db, approval_id)
    except ApprovalNotFound:
        a = None
    at = now_us()
    fields: dict[str, Any] = {
        "agent": a.agent if a else "*",
        "environment": a.environment if a else "*",
        "session": a.session if a else None,
        "tool": a.tool if a else None,
        "call_id": a.call_id if a else None,
        "approval_id": approval_id[:100],
        "decision": "refused",
        "by": who.name,
        "attempted": "approve" if approve else "deny",
        "reason": str(exc)[:2000],
    }
    with db.write() as cur:
        append(db, cur, [make_event("approval.refused", at, fields)])


def _decide(
    db: Database,
    approval_id: str,
    *,
    approve: bool,
    who: Decider,
    note: str | None,
    args: dict[str, Any] | None,
    policy_for: PolicyFor | None,
    grant: _granting.GrantRequest | None = None,
    extend: _granting.BudgetExtension | None = None,
) -> Approval:
    at = now_us()
    current = approvals.get(db, approval_id)
    why = refusal(current, who)
    if why is not None:  # before looking at an edit; checked again in the transaction
        raise ApprovalForbidden(current.id, current.tool, why)
    edit: dict[str, Any] = {}
    if args is not None:
        if not approve:
            raise ApprovalEditRejected(approval_id, current.tool, ["only an approval can change the arguments"])
        edit = _edit(db, current, args, policy_for or (lambda a: active_policy(db, a.agent, a.environment)))
    granted = _granted(db, current, grant, extend, approve=approve, who=who, note=note, at=at, edit=edit)

    def check(a: Approval) -> None:
        why = refusal(a, who)
        if why is not None:
            raise ApprovalForbidden(a.id, a.tool, why)
        if approve and any(v["by"] == who.name for v in a.votes):
            raise ApprovalAlreadyDecided(a.id, a.tool, "pending: this approver already approved", who.name)
        if edit and a.quorum > 1:
            raise ApprovalEditRejected(a.id, a.tool, [f"edits need one approver; this call needs {a.quorum}"])
        if granted is not None and a.quorum > 1:  # one approver would let later calls through alone
            raise GrantRejected(a.id, a.tool, [f"this call needs {a.quorum} approvers: no one of them may grant"])

    redacted = _redactions(db, current) if edit else ()  # read before the transaction, not inside it
    votes = len(current.votes) + 1
    voted = approve and votes < current.quorum
    to = "voted" if voted else (ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED)

    def changes(a: Approval) -> dict[str, Any]:
        out: dict[str, Any] = dict(edit)
        if approve and a.quorum > 1:
            out["votes_json"] = json.dumps([*a.votes, {"by": who.name, "at_us": at, "note": note}])
        return out

    def record(a: Approval) -> list[Event]:
        fields = _fields(a, at, decision=to if to != "voted" else ApprovalStatus.APPROVED, by=who.name, note=note)
        if a.quorum > 1:
            fields["votes"] = votes
            fields["quorum"] = a.quorum
        if granted is not None and not voted:
            fields["grant_id"] = granted["id"]
        if edit:
            fields["edited_args"] = json.loads(edit["edited_shown_json"])
            fields["edited_args_hash"] = edit["edited_args_hash"]
            fields["args_hash_alg"] = ARGS_HASH_ALG
            fields["changes"] = _edits.changes(a.args, json.loads(edit["edited_args_json"]), redacted)
        return [make_event("approval.voted" if voted else "approval.decided", at, fields)]

    def store_grant(cur: Any, a: Approval) -> None:
        if granted is not None:
            grants.insert(db, cur, granted)

    moved = approvals.transition(
        db,
        approval_id,
        to=to,
        by=who.name,
        note=note,
        now_us=at,
        events=record,
        check=check,
        changes=changes,
        also=store_grant,
    )
    if not voted:
        wake(moved.waiter)
    return moved


def _may_extend(a: Approval, policy: Policy | None, who: Decider) -> None:
    """Refuse an extension by someone the budget's own `approval.approvers` do not name.

    A rule's approvers decide an approval a rule and a spent budget asked for together; the
    budget's money is still the budget approvers' to give.
    """
    scope = next((r.removeprefix("budget:") for r in a.rule_ids if r.startswith("budget:")), None)
    if scope is None or policy is None or who.trusted:
        return
    groups = policy.budget_approval(scope).approvers
    if not groups:
        return
    roles = {g.removeprefix("role:") for g in groups if g.startswith("role:")}
    people = {g.removeprefix("user:") for g in groups if g.startswith("user:")}
    if not (roles & who.roles or who.person in people):
        raise GrantRejected(a.id, a.tool, [f"extend: only {', '.join(groups)} may extend the {scope} budget"])


def _granted(
    db: Database,
    a: Approval,
    grant: _granting.GrantRequest | None,
    extend: _granting.BudgetExtension | None,
    *,
    approve: bool,
    who: Decider,
    note: str | None,
    at: int,
    edit: dict[str, Any],
) -> dict[str, Any] | None:
    """The grant row the decision stores with it, checked against the rule that asked; or None."""
    if grant is None and extend is None:
        return None
    if not approve:
        raise GrantRejected(a.id, a.tool, ["only an approval can grant"])
    if grant is not None and extend is not None:
        raise GrantRejected(a.id, a.tool, ["grant similar calls or extend the budget, not both at once"])
    rev = policies.get(db, a.policy_revision) if a.policy_revision else None
    try:
        policy = parse_policy(rev.text, rev.source) if rev is not None else None
    except ClearanceError:
        policy = None
    if extend is not None:
        _may_extend(a, policy, who)
        return _granting.extension_row(a, extend, by=who.name, note=note, at=at)
    assert grant is not None
    runs = json.loads(edit["edited_args_json"]) if edit else a.args
    return _granting.grant_row(a, policy, grant, by=who.name, note=note, at=at, args=runs)


def _edit(db: Database, a: Approval, args: dict[str, Any], policy_for: PolicyFor) -> dict[str, Any]:
    """The columns of an accepted edit, or ApprovalEditRejected."""
    if INEXACT_ARGS in a.degraded:  # the edit would be merged into a marked copy, not the call
        raise ApprovalEditRejected(a.id, a.tool, [f"{INEXACT_ARGS}: approve or deny it as it is"])
    policy = policy_for(a)
    if policy is None:
        raise ApprovalEditRejected(a.id, a.tool, ["no active policy to check the edited call against"])
    plan = policy.plan(a.tool)
    full, problems = _edits.merge(a.args, args, redacted=plan.redact, params=plan.params)
    if problems:
        raise ApprovalEditRejected(a.id, a.tool, problems)
    decision = _decide_again(db, policy, a, full)
    if decision.effect is Effect.BLOCK:
        raise ApprovalEditRejected(a.id, a.tool, [f"policy blocks the edited call: {decision.reason}"])
    text = canonical_json(full)
    too_big = check_size(text)
    if too_big is not None:
        raise ApprovalEditRejected(a.id, a.tool, [str(too_big)])
    shown, _ = redact(full, plan.redact)
    return {
        "edited_args_json": text,
        "edited_args_hash": args_hash(full, text),
        "edited_shown_json": canonical_json(shown),
    }


def _decide_again(db: Database, policy: Policy, a: Approval, args: dict[str, Any]) -> Decision:
    """The decision policy makes now on the edited call, with facts that leave out the call itself."""
    plan = policy.plan(a.tool)
    values: dict[str, Any] = {}
    if plan.facts:
        with db.read() as cur:
            values, _ = facts.compute(
                db,
                cur,
                plan.facts,
                agent=a.agent,
                environment=a.environment,
                session=a.session,
                tool=a.tool,
                now_us=now_us(),
                exclude=a.call_id,
                args=args,
                requester=a.requested_by,
            )
    return policy.decide(a.tool, args, values)


def _redactions(db: Database, a: Approval) -> tuple[str, ...]:
    policy = active_policy(db, a.agent, a.environment)
    return tuple(policy.plan(a.tool).redact) if policy is not None else ()


def active_policy(db: Database, agent: str, environment: str) -> Policy | None:
    """The policy an agent decides by now.

    The server's assignment, else the last one the agent itself activated on this store
    (embedded mode).
    """
    rev = policies.resolve(db, agent=agent, environment=environment)
    if rev is None:
        with db.read() as cur:
            cur.execute(
                db.sql(
                    "SELECT body FROM events WHERE kind = 'policy.activated' AND agent = :agent"
                    " ORDER BY seq DESC LIMIT 1"
                ),
                {"agent": agent},
            )
            row = cur.fetchone()
        if row is not None:
            rev = policies.get(db, json.loads(row[0])["policy_revision"])
    if rev is None:
        return None
    try:
        return parse_policy(rev.text, rev.source)
    except ClearanceError:
        return None


def _fields(a: Approval, at: int, *, decision: str, by: str | None, note: str | None) -> dict[str, Any]:
    return {
        "agent": a.agent,
        "environment": a.environment,
        "session": a.session,
        "tool": a.tool,
        "call_id": a.call_id,
        "approval_id": a.id,
        "decision": decision,
        "by": by or a.agent,
        "note": note,
        "waited_ms": round((at - a.created_at_us) / 1000, 3),
    }


def expire(db: Database, approval_id: str, *, by_waiter: bool = False) -> Approval:
    """Expire a pending approval whose time is up (once, across processes) and wake its waiter.

    With `on_timeout: escalate` and not yet escalated, it stays pending for the rule's
    `escalate_to` approvers, with a new expiry, instead. An approval whose waiter is gone is
    abandoned instead, unless `by_waiter`: its own waiter is looking, so it is not gone, however
    old its last heartbeat.

    Raises:
        ApprovalAlreadyDecided: It was decided first.
    """
    at = now_us()
    current = approvals.get(db, approval_id)
    # nobody to run it or tell: closed, saying why
    if not by_waiter and waiters.gone(current, at) and not current.resumable:
        return abandon(db, current.id)
    if current.on_timeout is OnTimeout.ESCALATE and current.escalated_at_us is None:
        return _escalate(db, current, at)

    def check(a: Approval) -> None:
        if a.expires_at_us > at:  # escalated meanwhile (another process, its waiter): a new expiry
            raise ApprovalAlreadyDecided(a.id, a.tool, "pending (escalated, with a later expiry)", "system")

    def record(a: Approval) -> list[Event]:
        outcome = "allowed_on_timeout" if a.on_timeout is OnTimeout.ALLOW else ApprovalStatus.EXPIRED
        fields = _fields(a, at, decision=outcome, by="system", note=None)
        fields["on_timeout"] = a.on_timeout
        return [make_event("approval.expired", at, fields)]

    moved = approvals.transition(
        db, approval_id, to=ApprovalStatus.EXPIRED, by="system", note=None, now_us=at, events=record, check=check
    )
    wake(moved.waiter)
    return moved


def _escalate(db: Database, current: Approval, at: int) -> Approval:
    seconds = current.escalation_timeout_s or max(1, (current.expires_at_us - current.created_at_us) // 1_000_000)
    expires = at + seconds * 1_000_000

    def check(a: Approval) -> None:
        if a.escalated_at_us is not None:
            raise ApprovalAlreadyDecided(a.id, a.tool, "pending (already escalated)", "system")

    def record(a: Approval) -> list[Event]:
        fields = _fields(a, at, decision="escalated", by="system", note=None)
        fields["escalate_to"] = list(a.escalate_to)
        fields["expires_at_us"] = expires
        return [make_event("approval.escalated", at, fields)]

    moved = approvals.transition(
        db,
        current.id,
        to="escalated",
        by="system",
        note=None,
        now_us=at,
        events=record,
        check=check,
        changes=lambda a: {"escalated_at_us": at, "expires_at_us": expires},
    )
    wake(moved.waiter)  # a waiting agent learns the new expiry
    return moved


def cancel(db: Database, approval_id: str, *, why: str) -> Approval:
    """Cancel a pending approval whose caller stopped waiting (recorded as by its own agent).

    Raises:
        ApprovalAlreadyDecided: It was decided first.
    """
    at = now_us()

    def record(a: Approval) -> list[Event]:
        return [
            make_event("approval.decided", at, _fields(a, at, decision=ApprovalStatus.CANCELLED, by=None, note=why))
        ]

    moved = approvals.transition(
        db, approval_id, to=ApprovalStatus.CANCELLED, by=None, note=why, now_us=at, events=record
    )
    wake(moved.waiter)
    return moved


def abandon(db: Database, approval_id: str) -> Approval:
    """Cancel an approval whose waiter is gone and whose call nothing can run, once its time is up.

    Recorded as `approval.abandoned`, saying why ("waiter gone: …"); a pending one counts as
    decided by `system`, an approved one keeps its approver.

    Raises:
        ApprovalNotFound: No such approval.
        ApprovalAlreadyDecided: It ran, was decided otherwise, or its waiter came back first.
    """
    at = now_us()
    with db.write() as cur:
        current = approvals._get(db, cur, approval_id)
        if current is None:
            raise ApprovalNotFound(f"no approval has the id {approval_id!r}")
        why = waiters.why(current)
        if not waiters.close(db, cur, approval_id, now_us=at, note=why):
            raise ApprovalAlreadyDecided(approval_id, current.tool, current.status, current.decided_by)
        fields = _fields(current, at, decision=ApprovalStatus.CANCELLED, by="system", note=why)
        fields.update(was=current.status, waiter_seen_at_us=current.waiter_seen_at_us)
        append(db, cur, [make_event("approval.abandoned", at, fields)])
        approvals._redraw(db, cur, approval_id)
        db.notify(cur, "approvals")
        moved = approvals._get(db, cur, approval_id)
    assert moved is not None
    return moved


def sweep(db: Database) -> list[Approval]:
    """Expire (or escalate) every pending approval whose time is up; returns those it moved.

    An approval whose waiter is gone and whose call nothing can run is cancelled instead, also
    once approved (see `abandon`).
    """
    done = []
    at = now_us()
    for approval_id in approvals.expired_ids(db, at):
        try:
            done.append(expire(db, approval_id))
        except ApprovalAlreadyDecided:
            continue
    for approval_id in waiters.abandoned(db, at):
        try:
            done.append(abandon(db, approval_id))
        except ApprovalAlreadyDecided:
            continue
    return done
