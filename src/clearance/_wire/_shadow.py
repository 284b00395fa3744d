"""Shadow policies on the wire: which shadows are active, and where they differed from enforcement."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ._base import Sent


class ShadowActiveOut(Sent):
    """A scope and the revision decided in shadow for it."""

    scope: str = Field(description="`default`, `environment:<name>` or `agent:<name>`")
    revision_id: str
    activated_at_us: int
    activated_by: str | None


class ShadowExampleOut(Sent):
    """One call of a group, as recorded (its arguments redacted and cut as the record keeps them)."""

    call_id: str | None
    at_us: int | None
    agent: str | None
    environment: str | None
    session: str | None
    tool: str | None
    args: Any = Field(description="The arguments as recorded and shown")
    enforced_rule_ids: list[str]
    enforced_reason: str | None
    shadow_rule_ids: list[str] = Field(description="The shadow's deciding rules; for a monitor hit, the rule")
    shadow_reason: str | None


class ShadowDifferenceOut(Sent):
    """Calls the shadow decided otherwise than the enforced policy, by the shadow's deciding rule."""

    enforced: str = Field(description="allow, block or require_approval")
    shadow: str = Field(description="allow, block or require_approval")
    rule_id: str | None = Field(description="The shadow's first deciding rule; null when its default decided")
    count: int
    examples: list[ShadowExampleOut] = Field(description="The newest calls of the group, newest first")


class MonitorHitOut(Sent):
    """Calls a `mode: monitor` rule matched: recorded as what it would have done, and allowed."""

    policy: str = Field(description="`enforced` or `shadow`: whose monitor rule it is")
    rule_id: str
    would: str = Field(description="block or require_approval")
    count: int
    examples: list[ShadowExampleOut]


class ShadowReportOut(Sent):
    """Where the shadow and the enforced policy differed over a window, and the monitor rules' hits."""

    since_us: int
    until_us: int = Field(description="The window's end (exclusive)")
    calls: int = Field(description="Calls decided by a shadow beside the enforced policy")
    differing: int = Field(description="Of those, calls the shadow decided otherwise")
    differences: list[ShadowDifferenceOut] = Field(description="By enforced -> shadow and rule, most calls first")
    monitored: list[MonitorHitOut]
    revisions: dict[str, int] = Field(description="Shadow revisions that decided calls in the window, and how many")
    unreadable: int = Field(description="Records with a shadow or monitor hits this version could not read")
    active: list[ShadowActiveOut] = Field(description="The shadows active now, per scope")


class ShadowCleared(Sent):
    """A shadow that was cleared."""

    scope: str
    revision_id: str
