"""An approval as the API sends it, read back by the remote client and the dashboard alike."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..policy._model import OnTimeout
from ._base import Sent
from ._statuses import ApprovalMode, ApprovalStatus, DeliveryStatus


class VoteOut(Sent):
    """One approver's vote toward a quorum."""

    by: str
    at_us: int
    note: str | None = None


class ApprovalOut(Sent):
    """An approval as the API shows it (arguments redacted as recorded)."""

    id: str
    call_id: str
    status: ApprovalStatus
    tool: str
    agent: str
    environment: str
    session: str | None
    args: dict[str, Any]
    args_hash: str
    rule_ids: list[str]
    reason: str
    policy_revision: str
    approvers: list[str]
    on_timeout: OnTimeout
    created_at_us: int
    expires_at_us: int
    decided_by: str | None
    decided_at_us: int | None
    note: str | None
    requested_by: str | None = None
    edited_args: dict[str, Any] | None = None
    edited_args_hash: str | None = None
    quorum: int = 1
    votes: list[VoteOut] = Field(default_factory=list)
    escalate_to: list[str] = Field(default_factory=list)
    escalated_at_us: int | None = None
    mode: ApprovalMode = ApprovalMode.WAIT
    claimed_by: str | None = None
    finished_at_us: int | None = None
    result: Any = None
    error: str | None = None
    executed_args: dict[str, Any] | None = Field(
        default=None, description="The full arguments to run, as approved (only to the requesting agent's key)"
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="How the arguments or result shown differ from those stored (empty: they do not)",
    )


class AttemptOut(Sent):
    """One delivery attempt."""

    at_us: int
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryOut(Sent):
    """A webhook of an approval and how its delivery went."""

    id: str
    event_type: str
    url: str
    status: DeliveryStatus
    attempts: list[AttemptOut]
    next_attempt_at_us: int | None
    delivered_at_us: int | None
    last_error: str | None
