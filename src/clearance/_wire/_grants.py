"""Grants on the wire: what an approver gives with an approval, and a grant as the API shows it.

`GrantIn` (let similar calls through) and `ExtendIn` (add to the exhausted budget that asked)
are parts of an approval's body. They bound what a hostile client can send (sizes, types, no
NUL or lone surrogate, numbers a store keeps); whether a grant is narrower than the rule
permits is decided by `clearance._granting`, which audits a refused one. `GrantOut` is a stored
grant; `GrantLimitsOut` is what the rule that asked for an approval permits an approver to grant.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from .._text import checked_text
from ..policy._model import GRANT_SCOPES, MAX_GRANT_CALLS, ParamType
from ._base import Sent

_MOST = 10**15  # the largest magnitude a limit or constraint may name (as the policy's amounts)

ArgName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(checked_text)]
Whole = Annotated[int, Strict()]
_Short = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(checked_text)]
# A number as JSON writes it, or as a decimal string ("2.50"); whether it is finite, positive and
# within the rule's limit is the grant's check, so a refused value is audited with the reason.
Amount = Annotated[Annotated[int, Strict()] | Annotated[float, Strict()] | _Short, Field(union_mode="left_to_right")]
_Bound = Annotated[
    Annotated[int, Strict(), Field(ge=-_MOST, le=_MOST)]
    | Annotated[float, Strict(), Field(ge=-_MOST, le=_MOST, allow_inf_nan=False)]
    | _Short,
    Field(union_mode="left_to_right"),
]
_Scalar = Annotated[
    Annotated[str, Field(max_length=1000), AfterValidator(checked_text)]
    | Annotated[bool, Strict()]
    | Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, Strict(), Field(allow_inf_nan=False)]
    | None,
    Field(union_mode="left_to_right"),
]


class ConstraintIn(BaseModel):
    """What one argument of a granted call must be: the policy's `params` constraints."""

    model_config = ConfigDict(extra="forbid")

    type: ParamType | None = None
    required: bool | None = None
    nullable: bool | None = None
    minimum: _Bound | None = Field(default=None, description="inclusive")
    maximum: _Bound | None = Field(default=None, description="inclusive, like 150 for `amount` at most 150")
    enum: list[_Scalar] | None = Field(default=None, min_length=1, max_length=100)
    pattern: Annotated[str, Field(max_length=500), AfterValidator(checked_text)] | None = Field(
        default=None, description="searched like JSON Schema's; anchor it with ^…$"
    )
    max_length: Annotated[int, Strict(), Field(ge=0, le=_MOST)] | None = None
    format: Literal["email"] | None = None

    def spec(self) -> dict[str, Any]:
        """The constraint in the policy's `params` syntax (only what was given)."""
        return self.model_dump(exclude_none=True)


class GrantIn(BaseModel):
    """Let similar calls through without asking, within what the rule's `approval.grants` permits.

    Similar calls are of the same tool that the same rules put to approval, within the scope,
    until the grant expires, is revoked or reaches a limit.
    """

    model_config = ConfigDict(extra="forbid")

    scope: Annotated[
        str, Field(max_length=40, json_schema_extra={"enum": list(GRANT_SCOPES)}), AfterValidator(checked_text)
    ] = Field(
        description="`session` (this session), `agent` (this agent) or `requester` (the person the agent acts for)"
    )
    duration: Whole | _Short = Field(
        description="How long: seconds, or like `30m`, `8h`, `1d` (at most the rule's `max_duration`)"
    )
    max_calls: Whole | None = Field(
        default=None,
        description=f"At most this many calls, 1 to {MAX_GRANT_CALLS} (default: the rule's limit, if any)",
    )
    max_total: dict[ArgName, Amount] | None = Field(
        default=None,
        max_length=8,
        description='The running total of one numeric argument may reach this, like `{"amount": 500}`'
        " (default: the rule's limit, if any)",
    )
    constraints: dict[ArgName, ConstraintIn | ParamType] = Field(
        default_factory=dict,
        max_length=64,
        description='Argument constraints in the policy\'s `params` syntax, like `{"amount": {"maximum": 150}}`',
    )
    same: list[ArgName] = Field(
        default_factory=list,
        max_length=64,
        description="Arguments that must equal the approved call's (as it runs, edits included)",
    )

    def specs(self) -> dict[str, Any]:
        """The constraints in the policy's `params` syntax."""
        return {n: c.spec() if isinstance(c, ConstraintIn) else c for n, c in self.constraints.items()}


class ExtendIn(BaseModel):
    """Add to the session's (or agent's) exhausted budget that asked for this approval."""

    model_config = ConfigDict(extra="forbid")

    usd: Amount | None = Field(default=None, description='US dollars to add, like 2.5 or "2.50"')
    tokens: Whole | None = Field(default=None, description="Tokens to add")


class GrantLimitsOut(Sent):
    """What the rule that asked for an approval lets an approver grant with it."""

    scopes: list[Literal["session", "agent", "requester"]] = Field(description="The scopes a grant may name")
    max_duration: int = Field(description="The longest a grant may last, in seconds")
    max_calls: int | None = Field(description="The most calls one grant may let through (null: no limit)")
    max_total: dict[str, str] | None = Field(
        description="The most the running total of one numeric argument may reach, as a decimal string"
    )


GrantStatus = Literal["live", "revoked", "expired", "exhausted"]


class GrantOut(Sent):
    """A grant: similar calls let through (`kind: calls`) or a budget extended (`kind: budget`)."""

    id: str = Field(description="Its id (`grt_…`)")
    kind: Literal["calls", "budget"]
    scope: Literal["session", "agent", "requester"] = Field(
        description="Whom it covers: this session, this agent, or the person the agent acts for"
    )
    agent: str
    environment: str
    session: str | None = Field(description="The session it covers (scope session)")
    requester: str | None = Field(description="The person it covers (scope requester)")
    tool: str | None = Field(description="The tool whose calls it lets through (null for a budget)")
    rule_ids: list[str] = Field(description="The rules whose approval it answers")
    constraints: dict[str, Any] = Field(description="Argument constraints a covered call meets (`params` syntax)")
    max_calls: int | None
    calls_used: int
    total_arg: str | None = Field(description="The numeric argument whose running total is limited")
    max_total: str | None = Field(description="The most that total may reach, as a decimal string")
    total_used: str = Field(description="The total so far, as a decimal string")
    extend_usd: str | None = Field(description="A budget extension's US dollars, as a decimal string")
    extend_tokens: int | None = Field(description="A budget extension's tokens")
    approval_id: str | None = Field(description="The approval it was given with")
    policy_revision: str | None = Field(description="The policy revision whose rule permitted it")
    granted_by: str
    note: str | None
    created_at_us: int
    expires_at_us: int
    revoked_at_us: int | None
    revoked_by: str | None
    revoke_reason: str | None
    ended_at_us: int | None = Field(description="When it stopped letting calls through (revoked, expired, used up)")
    status: GrantStatus = Field(description="`live` while it lets calls through; else why it does not")
