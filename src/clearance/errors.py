"""Every exception Clearance raises.

```
ClearanceError
├── ConfigurationError          a developer mistake: bad settings, bad tool registration
│   └── PolicyError             a policy file that does not validate or compile
├── StoreError                  the audit store cannot be opened, written or read
│   └── ChainBroken             `audit verify` found a record that does not match its hash
├── ServerError                 remote mode: the Clearance server is unreachable or refused
├── ToolCallBlocked             policy blocked this call (an outcome the agent handles)
│   └── ModelCallBlocked        a spent budget stopped a model call before it was made
├── ApprovalError               outcomes of a call that needed a human
│   ├── ApprovalDenied          a human denied it
│   ├── ApprovalTimeout         nobody decided in time and the rule's `on_timeout` denies
│   ├── ApprovalAlreadyDecided  someone else decided first (who, and what)
│   ├── ApprovalForbidden       this decider may not decide it (the requester, the agent, no role)
│   ├── ApprovalEditRejected    edited arguments that do not fit the tool or that policy blocks
│   ├── GrantRejected           a grant or budget extension wider than the rule permits
│   └── ApprovalAlreadyExecuted its call already ran (exactly once), or is running elsewhere
├── ApprovalNotFound            no approval has that id
├── GrantNotFound               no grant has that id
└── WebhookError                a webhook that is not valid, fresh and signed with the secret
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApprovalAlreadyDecided",
    "ApprovalAlreadyExecuted",
    "ApprovalDenied",
    "ApprovalEditRejected",
    "ApprovalError",
    "ApprovalForbidden",
    "ApprovalNotFound",
    "ApprovalTimeout",
    "ChainBroken",
    "ClearanceError",
    "ConfigurationError",
    "GrantNotFound",
    "GrantRejected",
    "ModelCallBlocked",
    "PolicyError",
    "PolicyProblem",
    "ServerError",
    "StoreError",
    "ToolCallBlocked",
    "WebhookError",
]


class ClearanceError(Exception):
    """Root of every exception Clearance raises."""


class ConfigurationError(ClearanceError):
    """A developer mistake: invalid settings, a tool that cannot be governed, and the like."""


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy, located in its source file.

    Attributes:
        message: One sentence saying what is wrong.
        source: The file name (or ``<string>``).
        line: 1-based line, or None when the position is unknown.
        column: 1-based column, or None when the position is unknown.
        rule_id: The id of the rule the problem is in, when it is in one.
        path: Where in the policy's keys, like ``tools.issue_refund.rules[0].effect``, when known.
    """

    message: str
    source: str = "<string>"
    line: int | None = None
    column: int | None = None
    rule_id: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        rule = f"rule '{self.rule_id}': " if self.rule_id else ""
        return f"{where}: {rule}{self.message}"


class PolicyError(ConfigurationError):
    """A policy that does not validate or compile; `problems` lists every problem found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StoreError(ClearanceError):
    """The audit store cannot be opened, written or read."""


class ChainBroken(StoreError):
    """A record of the audit log does not match the hash chain.

    Attributes:
        seq: Chain position of the first record that does not verify.
    """

    def __init__(self, seq: int, message: str) -> None:
        self.seq = seq
        super().__init__(message)


class ServerError(ClearanceError):
    """Remote mode: the Clearance server could not be reached, or answered with an error.

    Attributes:
        status: The HTTP status, or None when the server was not reached.
        code: The API's error code, when it answered with one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class ToolCallBlocked(ClearanceError):
    """Policy blocked the tool call; it did not run.

    Attributes:
        tool: The tool's name.
        reason: Why, as the policy says it.
        rule_ids: The rules that decided.
        call_id: The recorded call's id.
    """

    def __init__(self, tool: str, reason: str, rule_ids: tuple[str, ...], call_id: str) -> None:
        self.tool = tool
        self.reason = reason
        self.rule_ids = rule_ids
        self.call_id = call_id
        super().__init__(f"{tool} blocked: {reason}")


class ModelCallBlocked(ToolCallBlocked):
    """A spent budget stopped a model call before it was made (the budget's `on_exceed: block`).

    Raised from a framework's hook before each model call. Its `reason` and `rule_ids` are
    those the next tool call would get (`budget:session`, `budget:agent`; remote mode also
    `server_unreachable`: the budgets are kept on a server that cannot be reached, and the call
    fails closed); `tool` is the reserved name the model call is recorded under.

    Attributes:
        model: The model that was to be called, when the framework named it.
    """

    def __init__(self, reason: str, rule_ids: tuple[str, ...], call_id: str, *, tool: str, model: str | None) -> None:
        super().__init__(tool, reason, rule_ids, call_id)
        self.model = model
        self.args = (f"model call{f' to {model}' if model else ''} blocked: {reason}",)


class ApprovalError(ClearanceError):
    """A call that needed human approval did not get it.

    Attributes:
        approval_id: The approval's id.
        tool: The tool's name.
    """

    def __init__(self, approval_id: str, tool: str, message: str) -> None:
        self.approval_id = approval_id
        self.tool = tool
        super().__init__(message)


class ApprovalDenied(ApprovalError):
    """A human denied the call; it did not run.

    Attributes:
        decided_by: Who denied it.
        note: The note they left for the agent, if any.
    """

    def __init__(self, approval_id: str, tool: str, decided_by: str, note: str | None) -> None:
        self.decided_by = decided_by
        self.note = note
        suffix = f": {note}" if note else ""
        super().__init__(approval_id, tool, f"{tool} denied by {decided_by}{suffix}")


class ApprovalPending(ApprovalError):
    """Nobody has decided the approval yet, so the call cannot run (or resume) now."""


class ApprovalTimeout(ApprovalError):
    """Nobody decided before the approval expired, and its `on_timeout` denies the call."""


class ApprovalAlreadyDecided(ApprovalError):
    """The approval was already decided (or expired) by someone else.

    Attributes:
        status: Its status now.
        decided_by: Who decided it.
    """

    def __init__(self, approval_id: str, tool: str, status: str, decided_by: str | None) -> None:
        self.status = status
        self.decided_by = decided_by
        by = f" by {decided_by}" if decided_by else ""
        super().__init__(approval_id, tool, f"approval {approval_id} is already {status}{by}")


class ApprovalForbidden(ApprovalError):
    """This decider may not decide this approval.

    They are the requesting agent or person, or lack the approver group the rule names.
    """


class ApprovalEditRejected(ApprovalError):
    """Edited arguments were refused: unknown names, wrong types, or a call policy blocks.

    Attributes:
        problems: What is wrong, one line each (`amount: expected a number, got "ten"`).
    """

    def __init__(self, approval_id: str, tool: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(approval_id, tool, f"the edited {tool} call was refused: " + "; ".join(problems))


class GrantRejected(ApprovalError):
    """A grant (or budget extension) given with an approval was refused; nothing was decided.

    Attributes:
        problems: What is wrong, one line each (`max_calls: 50 is above the rule's 20`).
    """

    def __init__(self, approval_id: str, tool: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(approval_id, tool, "the grant was refused: " + "; ".join(problems))


class ApprovalAlreadyExecuted(ApprovalError):
    """The approved call already ran, or another process is running it: it runs exactly once.

    Attributes:
        status: executed, failed, or approved (claimed by another executor).
        claimed_by: Who ran (or is running) it.
        result: What it returned, as recorded (status executed; None when not known here).
        error: Why it failed, as recorded (status failed).
        dead: Set when its claimant died running it (its lease expired): what a person must
            confirm (`clearance approvals resolve`) before anything runs it again.
    """

    def __init__(
        self,
        approval_id: str,
        tool: str,
        status: str,
        claimed_by: str | None,
        *,
        result: Any = None,
        error: str | None = None,
        dead: str | None = None,
    ) -> None:
        self.status = status
        self.claimed_by = claimed_by
        self.result = result
        self.error = error
        self.dead = dead
        state = "is running" if status == "approved" else f"already ran ({status})"
        said = f"approval {approval_id}: its {tool} call {state} in {claimed_by}"
        if dead is not None:
            said = f"approval {approval_id}: its {tool} call was {dead}"
        super().__init__(approval_id, tool, said)


class ApprovalNotFound(ClearanceError):
    """No approval has that id."""


class GrantNotFound(ClearanceError):
    """No grant has that id."""


class WebhookError(ClearanceError):
    """A webhook request that is not a valid, fresh Clearance event signed with the secret."""
