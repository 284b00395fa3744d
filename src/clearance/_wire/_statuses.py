"""The states and modes the API, the store and the clients name: one enum each.

Each is a `StrEnum`: a member equals its string and serializes as it, so what the store keeps
and the JSON the API sends stay the strings they always were. (`OnTimeout`, what a policy says
an expiry does, is the policy model's own; `_wire` exports it too.)
"""

from __future__ import annotations

from enum import StrEnum


class ApprovalStatus(StrEnum):
    """Where an approval is.

    `pending → approved | denied | expired | cancelled`, then `approved → executed | failed`.
    """

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTED = "executed"
    FAILED = "failed"

    @property
    def decided(self) -> bool:
        """Whether a decision (or the timeout) has been made."""
        return self is not ApprovalStatus.PENDING

    @property
    def final(self) -> bool:
        """Whether nothing more will happen to it (approved calls still run, then finish)."""
        return self not in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)


DECISIONS = frozenset(
    {ApprovalStatus.APPROVED, ApprovalStatus.DENIED, ApprovalStatus.EXPIRED, ApprovalStatus.CANCELLED}
)
"""The states a decision (a person's, or the timeout) moves a pending approval to."""


class ApprovalMode(StrEnum):
    """How the agent waits for an approval's decision."""

    WAIT = "wait"
    """The call blocks until it is decided."""
    ASYNC = "async"
    """The call returns at once; the decided call runs later (`handle_approvals`)."""
    WEBHOOK = "webhook"
    """The decision is POSTed to the agent's URL."""
    PAUSE = "pause"
    """The agent's framework pauses the run and resumes the call."""


class DeliveryStatus(StrEnum):
    """Where a webhook delivery (an outbox message) is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
