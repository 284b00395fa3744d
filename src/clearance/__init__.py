"""Clearance: runtime governance for AI agents' tool calls.

Policy on every tool call an agent makes, human approvals, a tamper-evident audit log and
LLM cost — self-hosted.

```python
import clearance

clearance.configure(policy="policy.yaml", agent="support-bot")

@clearance.guard
def issue_refund(order_id: str, amount: float) -> str: ...
```
"""

from __future__ import annotations

from . import integrations  # noqa: F401  registers the frameworks' installer to run after configure()
from ._context import current_approval, get_session, reset_session, session, set_session
from ._guard._modes import approval_mode, run_due
from ._guard._resume import resume, resume_async
from ._guard._runtime import NOT_GIVEN, configure, flush, shutdown
from ._guard._tickets import Approved, PendingApproval, UsageRecord
from ._guard._wrap import guard, guard_tool
from ._remote._status import SpoolStatus, spool_status
from ._settings import Settings
from ._usage import record_usage
from ._version import __version__
from ._webhooks import WebhookOutcome, handle_webhook, verify_webhook
from .errors import (
    ApprovalAlreadyDecided,
    ApprovalAlreadyExecuted,
    ApprovalDenied,
    ApprovalEditRejected,
    ApprovalError,
    ApprovalForbidden,
    ApprovalNotFound,
    ApprovalPending,
    ApprovalTimeout,
    ChainBroken,
    ClearanceError,
    ConfigurationError,
    GrantNotFound,
    GrantRejected,
    ModelCallBlocked,
    PolicyError,
    ServerError,
    StoreError,
    ToolCallBlocked,
    WebhookError,
)
from .policy import Decision, Effect, Policy, load_policy, parse_policy

__all__ = [
    "NOT_GIVEN",
    "PendingApproval",
    "Approved",
    "ApprovalAlreadyDecided",
    "ApprovalAlreadyExecuted",
    "ApprovalDenied",
    "ApprovalEditRejected",
    "ApprovalError",
    "ApprovalForbidden",
    "ApprovalNotFound",
    "ApprovalPending",
    "ApprovalTimeout",
    "ChainBroken",
    "ClearanceError",
    "ConfigurationError",
    "Decision",
    "Effect",
    "GrantNotFound",
    "GrantRejected",
    "ModelCallBlocked",
    "Policy",
    "PolicyError",
    "ServerError",
    "Settings",
    "SpoolStatus",
    "StoreError",
    "ToolCallBlocked",
    "UsageRecord",
    "WebhookError",
    "WebhookOutcome",
    "__version__",
    "approval_mode",
    "configure",
    "current_approval",
    "flush",
    "get_session",
    "guard",
    "guard_tool",
    "handle_webhook",
    "load_policy",
    "parse_policy",
    "record_usage",
    "reset_session",
    "resume",
    "resume_async",
    "run_due",
    "session",
    "set_session",
    "shutdown",
    "spool_status",
    "verify_webhook",
]
