"""What `GET /v1/policy/snapshot` answers: the policy an agent decides from, and with `v=2` more.

Version 1 (the default) is the enforced revision alone; its ETag is the revision id. Version 2
adds the agent's live grants of kind `calls` and the revision decided in shadow for it, and its
ETag changes when any of the three does. An agent that asks for version 2 decides a call that
a grant without limits covers on its own, and decides the shadow beside the policy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Sent


class SnapshotGrant(Sent):
    """A live grant of this agent: what it needs to decide a covered call on its own."""

    id: str = Field(description="Its id (`grt_…`)")
    scope: Literal["session", "agent", "requester"]
    session: str | None = Field(description="The session it covers (scope session)")
    requester: str | None = Field(description="The person it covers (scope requester)")
    tool: str = Field(description="The tool whose calls it lets through")
    rule_ids: list[str] = Field(description="The rules whose approval it answers: a covered call asks no others")
    constraints: dict[str, object] = Field(description="Argument constraints a covered call meets (`params` syntax)")
    max_calls: int | None = Field(description="A call limit: such a grant is used on the server only")
    total_arg: str | None = Field(description="The numeric argument whose running total is limited")
    max_total: str | None = Field(description="A limit on that total: such a grant is used on the server only")
    granted_by: str
    created_at_us: int
    expires_at_us: int


class ShadowSnapshot(Sent):
    """The revision decided in shadow for the agent: recorded beside each call, never enforced."""

    revision: str
    content_hash: str
    source: str
    text: str


class Snapshot(Sent):
    """The policy an agent decides from (and, with `v=2`, its grants and shadow policy)."""

    revision: str
    content_hash: str
    source: str
    text: str
    grants: list[SnapshotGrant] | None = Field(
        default=None, description="v=2: this agent's live grants of kind calls (newest 500); null in v=1"
    )
    shadow: ShadowSnapshot | None = Field(default=None, description="v=2: the revision decided in shadow, if any")
