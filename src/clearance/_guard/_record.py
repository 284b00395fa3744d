"""Deciding one call and committing its record.

The SDK's guard and the server's `/v1/check` share this, so a call is decided and recorded the
same way wherever it is decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._canonical import canonical_json, for_record, redact, sha256_hex
from .._clock import now_us
from ..policy import Decision, Effect, Policy
from ..store import Database
from ..store import _approvals as approvals
from ..store import _events as events
from ..store import _facts as facts
from ..store._events import Event, make_event


@dataclass(frozen=True)
class RecordedCall:
    """A decided call whose record is committed.

    Attributes:
        call_id: Its id in the audit log.
        session: The session it was recorded under.
        decision: What policy decided.
        args_hash: SHA-256 of the canonical JSON of the full arguments.
        shown_args: The arguments as recorded and shown to people (redacted, maybe cut).
        approval_id: The approval created for it, when the decision requires one.
        expires_at_us: When that approval expires.
    """

    call_id: str
    session: str
    decision: Decision
    args_hash: str
    shown_args: dict[str, Any]
    approval_id: str | None = None
    expires_at_us: int | None = None


def record_call(
    db: Database,
    policy: Policy,
    *,
    agent: str,
    environment: str,
    tool: str,
    args: dict[str, Any],
    session: str,
    prepend: Sequence[Event] = (),
    waiter: Callable[[], str | None] | None = None,
) -> RecordedCall:
    """Decide a call from `policy` and commit its record, after the `prepend` records.

    Its pending approval, if the decision requires one, is committed in the same transaction.
    Facts are read inside that transaction, so two writers cannot both pass a cap. `waiter`
    gives the address the approval's waiter listens on (SDK only).
    """
    plan = policy.plan(tool)
    at = now_us()
    full = canonical_json(args)
    args_hash = sha256_hex(full)
    shown, hit = redact(args, plan.redact)
    recorded, truncated = for_record(shown) if hit or len(full) > 1024 else (shown, False)
    call_id = events.new_id("call")
    fact_values: dict[str, Any] = {}
    with db.write() as cur:
        if plan.facts:
            fact_values, fact_errors = facts.compute(
                db, cur, plan.facts, agent=agent, session=session, tool=tool, now_us=at
            )
        decision = policy.decide(tool, args, fact_values)
        if plan.facts and fact_errors:
            decision = _explain_fact_errors(decision, fact_errors)
        fields: dict[str, Any] = {
            "agent": agent,
            "environment": environment,
            "session": session,
            "tool": tool,
            "call_id": call_id,
            "decision": decision.effect.value,
            "args": recorded,
            "args_hash": args_hash,
            "rule_ids": list(decision.rule_ids),
            "reason": decision.reason,
            "policy_revision": decision.revision,
        }
        if decision.errors:
            fields["errors"] = list(decision.errors)
        if hit:
            fields["args_redacted"] = hit
        if truncated:
            fields["args_truncated"] = True
        if fact_values:
            fields["facts"] = fact_values
        approval_id = events.new_id("apr") if decision.effect is Effect.REQUIRE_APPROVAL else None
        if approval_id is not None:
            fields["approval_id"] = approval_id
        batch = [*prepend]
        # The arguments were serialised once for their hash; the record reuses that text.
        batch.append(make_event("tool_call.decided", at, fields, raw={"args": full} if recorded is args else None))
        expires = None
        if approval_id is not None:
            spec = decision.approval
            assert spec is not None
            expires = at + spec.timeout * 1_000_000
            approvals.insert(
                db,
                cur,
                {
                    "id": approval_id,
                    "call_id": call_id,
                    "status": "pending",
                    "tool": tool,
                    "agent": agent,
                    "environment": environment,
                    "session": session,
                    "args_json": full,
                    "args_hash": args_hash,
                    "shown_args_json": canonical_json(recorded),
                    "rule_ids": json.dumps(list(decision.rule_ids)),
                    "reason": decision.reason,
                    "policy_revision": decision.revision,
                    "approvers": json.dumps(list(spec.approvers)),
                    "on_timeout": spec.on_timeout,
                    "created_at_us": at,
                    "expires_at_us": expires,
                    "waiter": waiter() if waiter else None,
                },
            )
            batch.append(
                make_event(
                    "approval.requested",
                    at,
                    {
                        "agent": agent,
                        "environment": environment,
                        "session": session,
                        "tool": tool,
                        "call_id": call_id,
                        "approval_id": approval_id,
                        "expires_at": events.iso(expires),
                        "approvers": list(spec.approvers),
                        "on_timeout": spec.on_timeout,
                    },
                )
            )
        events.append(db, cur, batch)
    return RecordedCall(call_id, session, decision, args_hash, recorded, approval_id, expires)


def _explain_fact_errors(decision: Decision, fact_errors: dict[str, str]) -> Decision:
    """Say why a fact could not be computed where CEL only says the key was missing."""

    def better(text: str) -> str:
        for name, why in fact_errors.items():
            text = text.replace(f'Key not found in map : "{name}"', why)
        return text

    return replace(decision, reason=better(decision.reason), errors=tuple(better(e) for e in decision.errors))
