"""An approval as the API sends it, read back by the remote client and the dashboard alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..policy._model import OnTimeout
from ._base import SENT, Sent
from ._grants import GrantLimitsOut
from ._statuses import ApprovalMode, ApprovalStatus, DeliveryStatus


class VoteOut(Sent):
    """One approver's vote toward a quorum."""

    by: str
    at_us: int
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalFields:
    """The fields an approval has alike where it is stored (`_store.Approval`) and where it is sent.

    What differs is declared by each: the store keeps the exact arguments, the waiter and the
    webhook; the API shows the arguments as recorded (redacted) and what a key may see.

    Attributes:
        id: Its id (`apr_…`).
        call_id: The call it holds.
        status: Where it is (`ApprovalStatus`).
        tool: The tool.
        agent: The requesting agent.
        environment: The agent's environment.
        session: The session of the call.
        args_hash: SHA-256 of the arguments' canonical JSON.
        reason: Why it was asked for.
        policy_revision: The revision that decided.
        on_timeout: What its expiry does.
        created_at_us: When it was requested.
        expires_at_us: When it expires.
        decided_by: Who decided.
        decided_at_us: When.
        note: The decider's note.
        requested_by: The person the agent acted for, who may not approve it.
        edited_args_hash: The hash of the arguments an approver set instead, when edited.
        quorum: How many approvers must approve.
        escalated_at_us: When it was escalated (None: not escalated).
        mode: How the agent waits for the decision.
        claimed_by: The executor that claimed the approved call (exactly once).
        finished_at_us: When the call finished.
        error: The call's error, if it failed.
        trace: The span the call was asked in, as a W3C traceparent, when the agent traced it:
            a resume elsewhere links its own span to it.
        waiter_seen_at_us: When the process waiting for it (wait mode) was last seen; it says so
            every few seconds while it waits (None: no process waits for it this way).
        resumable: Whether `clearance worker` can run the call if its waiter is gone (its tool is
            guarded with callbacks, so a worker importing the tool's module finishes it).
        claim_seen_at_us: When the process running the claimed call was last seen (its lease,
            renewed every few seconds while the tool runs; None: the claimant keeps no lease).
    """

    id: str
    call_id: str
    status: ApprovalStatus
    tool: str
    agent: str
    environment: str
    session: str | None
    args_hash: str
    reason: str
    policy_revision: str
    on_timeout: OnTimeout
    created_at_us: int
    expires_at_us: int
    decided_by: str | None
    decided_at_us: int | None
    note: str | None
    requested_by: str | None = None
    edited_args_hash: str | None = None
    quorum: int = 1
    escalated_at_us: int | None = None
    mode: ApprovalMode = ApprovalMode.WAIT
    claimed_by: str | None = None
    finished_at_us: int | None = None
    error: str | None = None
    trace: str | None = None
    waiter_seen_at_us: int | None = None
    resumable: bool = False
    claim_seen_at_us: int | None = None


class ApprovalOut(BaseModel, ApprovalFields, frozen=True):
    """An approval as the API shows it (arguments redacted as recorded): its `ApprovalFields`, then these.

    Sent like every `Sent` model (frozen: the fields it shares with the store's record are).
    """

    model_config = SENT

    args: dict[str, Any]
    rule_ids: list[str]
    approvers: list[str]
    edited_args: dict[str, Any] | None = None
    votes: list[VoteOut] = Field(default_factory=list)
    escalate_to: list[str] = Field(default_factory=list)
    result: Any = None
    executed_args: dict[str, Any] | None = Field(
        default=None, description="The full arguments to run, as approved (only to the requesting agent's key)"
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="How the arguments or result shown differ from those stored (empty: they do not)",
    )
    grant_limits: GrantLimitsOut | None = Field(
        default=None,
        description="What an approver may grant with it (approve with `grant`): the limits of the rule that "
        "asked; null when no grant may be given",
    )
    budget: Literal["session", "agent"] | None = Field(
        default=None,
        description="The exhausted budget that asked for it (approve with `extend` to add to it); "
        "null when a rule asked",
    )
    reads: list[str] = Field(
        default_factory=list,
        description="The arguments the conditions of the rules that asked read (`args.NAME`, and the argument a "
        "`sum_<window>_<arg>` fact adds up), in the order they appear: what is at stake, shown first. From the "
        "policy revision that asked; empty when only a budget asked or that revision is gone",
    )
    may_decide: bool = Field(
        default=False,
        description="The caller may decide it now: an approver among its approvers (the escalation's, once "
        "escalated), not its requester, not bound to its agent, and not one who voted for it already",
    )
    waiter_gone: bool = Field(
        default=False,
        description="The process waiting for it stopped (not seen for longer than the grace) and the call has "
        "not run: approving it runs the call only if `resumable` (in `clearance worker`); otherwise it is "
        "cancelled at its expiry",
    )
    claim_dead: bool = Field(
        default=False,
        description="The process that claimed the approved call stopped while running it (its lease expired): "
        "whether the tool ran is unknown, so nothing runs it again until a person resolves it "
        "(`POST /v1/approvals/{id}/resolve` with `ran`)",
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
