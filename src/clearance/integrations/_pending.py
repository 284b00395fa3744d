"""What a paused run waits for, in one shape for every framework's `pending_approvals`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """A governed tool call a paused run waits on.

    Decide `approval_id` anywhere (dashboard, `clearance approvals approve|deny`, the API,
    Slack), then resume the run with the framework's `resume`.

    Attributes:
        approval_id: The Clearance approval to decide (`apr_…`).
        tool: The tool the call would run.
        call_id: The framework's id of the paused tool call (None when it gave none).
        reason: Why it needs approval: the policy rule's reason (None when not known).
    """

    approval_id: str
    tool: str
    call_id: str | None = None
    reason: str | None = None
