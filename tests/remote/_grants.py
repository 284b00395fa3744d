"""Giving and ending grants straight on a server's store, as an approval or a revoke would."""

from __future__ import annotations

import json
from typing import Any

from clearance._clock import now_us
from clearance._store import Database
from clearance._store import _grants as grants


def give(
    db: Database,
    *,
    agent: str = "refunds",
    tool: str = "issue_refund",
    scope: str = "agent",
    session: str | None = None,
    requester: str | None = None,
    rule_ids: tuple[str, ...] = ("big",),
    constraints: dict[str, Any] | None = None,
    seconds: float = 3600,
    **more: Any,
) -> grants.Grant:
    """Store a live grant of kind `calls` (its `grant.created` record too) and return it."""
    at = now_us()
    row = {
        "id": grants.new_grant_id(),
        "kind": "calls",
        "scope": scope,
        "agent": agent,
        "environment": "test",
        "session": session,
        "requester": requester,
        "tool": tool,
        "rule_ids": json.dumps(list(rule_ids)),
        "constraints_json": json.dumps(constraints) if constraints else None,
        "granted_by": "user:gina",  # not the person the calls are made for
        "created_at_us": at,
        "expires_at_us": at + int(seconds * 1e6),
        **more,
    }
    with db.write() as cur:
        return grants.insert(db, cur, row)
