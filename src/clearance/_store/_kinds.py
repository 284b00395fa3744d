"""Every kind of audit record Clearance writes, listed once.

`make_event` takes only a `Kind` (mypy checks every writer), and readers offer `KINDS` (the
CLI's `audit tail|export --kind`), so a new kind cannot be written yet refused by a filter.
"""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal[
    "tool_call.decided",
    "tool_call.finished",
    "approval.requested",
    "approval.voted",
    "approval.decided",
    "approval.refused",
    "approval.escalated",
    "approval.expired",
    "approval.executed",
    "approval.failed",
    "approval.abandoned",
    "approval.claim_resolved",
    "llm.call",
    "policy.activated",
    "policy.shadow_activated",
    "policy.shadow_cleared",
    "grant.created",
    "grant.revoked",
    "grant.expired",
    "grant.exhausted",
    "key.created",
    "key.revoked",
    "user.created",
    "user.updated",
    "ingest.refused",
    "checkpoint.key_introduced",
    "checkpoint.signed",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
