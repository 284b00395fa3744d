"""The policy document as validated data: what a policy file may say, and nothing else."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Effect(StrEnum):
    """What a matching rule does to the call."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        """Rank for most-restrictive-wins: block > require_approval > allow."""
        return _SEVERITY[self]


_SEVERITY = {Effect.ALLOW: 0, Effect.REQUIRE_APPROVAL: 1, Effect.BLOCK: 2}


def parse_duration(value: object) -> int:
    """Seconds in a duration written as `90s`, `30m`, `2h`, `1d` (or a whole number of seconds).

    Raises:
        ValueError: When the value is not such a duration.
    """
    if isinstance(value, bool):
        raise ValueError("a duration must look like 30s, 15m, 2h or 1d")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return value
    if isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= 0:
            raise ValueError("a duration must be positive")
        return seconds
    raise ValueError(f"{value!r} is not a duration; write it like 30s, 15m, 2h or 1d")


Duration = Annotated[int, BeforeValidator(parse_duration)]

# The CEL type a declared tool parameter is checked against at load time.
ParamType = Literal["string", "number", "integer", "boolean", "list", "map", "any"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_GROUP = re.compile(r"^(role|user):[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")


def _groups(value: object) -> object:
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str) or not _GROUP.match(item):
                raise ValueError(f"{item!r} is not an approver: write role:NAME (a role people have) or user:NAME")
    return value


Approvers = Annotated[tuple[str, ...], BeforeValidator(_groups)]


class ApprovalSpec(_Strict):
    """How a `require_approval` rule's approval behaves.

    `approvers` names who may decide (`role:support-lead`, `user:alice`; empty: any approver);
    `quorum` how many different approvers must approve (any one denial denies); on timeout the
    call is denied, allowed, or escalated to `escalate_to` for `escalation_timeout` more
    (then denied).
    """

    timeout: Duration = 3600
    on_timeout: Literal["deny", "allow", "escalate"] = "deny"
    approvers: Approvers = ()
    quorum: int = Field(default=1, ge=1, le=20)
    escalate_to: Approvers = ()
    escalation_timeout: Duration | None = None

    @model_validator(mode="after")
    def _escalation_needs_a_target(self) -> ApprovalSpec:
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise ValueError("on_timeout: escalate needs escalate_to (who decides after the timeout)")
        if self.escalate_to and self.on_timeout != "escalate":
            raise ValueError("escalate_to only applies with on_timeout: escalate")
        return self


class Rule(_Strict):
    """One rule of a tool: a condition, an effect and why."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    when: str | None = None
    effect: Effect
    reason: str | None = None
    on_error: Effect = Effect.BLOCK
    approval: ApprovalSpec | None = None

    @field_validator("when")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("'when' is empty; leave it out to match every call")
        return value

    @model_validator(mode="after")
    def _approval_only_when_needed(self) -> Rule:
        if self.approval is not None and self.effect is not Effect.REQUIRE_APPROVAL:
            raise ValueError("'approval' settings only apply to effect require_approval")
        return self


class ToolPolicy(_Strict):
    """The rules of one tool name or glob."""

    default: Effect | None = None
    params: dict[str, ParamType] | None = None
    rules: tuple[Rule, ...] = ()
    # Remote mode: what a call that needs the server (facts, approval) does when it cannot be
    # reached. Fail closed unless the policy says otherwise.
    when_server_unreachable: Literal["block", "allow"] = "block"


class SessionBudget(_Strict):
    """Limits on one session's LLM spend."""

    max_cost_usd: Decimal | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)


class AgentBudget(SessionBudget):
    """Limits on one agent's LLM spend over a rolling window."""

    window: Duration = 86400


class Budgets(_Strict):
    """Budgets that block an over-spent session's or agent's next tool call."""

    session: SessionBudget | None = None
    agent: AgentBudget | None = None


JsonPointer = Annotated[str, Field(pattern=r"^(/([^/~]|~[01])*)+$")]


class PolicyDocument(_Strict):
    """A whole policy file."""

    version: Literal[1]
    default: Effect = Effect.ALLOW
    tools: dict[str, ToolPolicy] = Field(default_factory=dict)
    budgets: Budgets | None = None
    redact: dict[str, tuple[JsonPointer, ...]] = Field(default_factory=dict)
