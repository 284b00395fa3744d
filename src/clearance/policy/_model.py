"""The policy document as validated data: what a policy file may say, and nothing else."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

import regex
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .._names import MODEL_CALL, fold_tool

# ASCII digits and spaces only, the whole text (`$` would also take a trailing newline).
_DURATION = re.compile(r"[ \t]*([0-9]{1,12})[ \t]*(s|m|h|d)[ \t]*")
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
    if isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= 0:
            raise ValueError("a duration must be positive")
        return seconds
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "") if isinstance(value, str) else repr(value)[:40]
    raise ValueError(f"{shown} is not a duration; write it like 30s, 15m, 2h or 1d")


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


class OnTimeout(StrEnum):
    """What an approval's expiry does to the call."""

    DENY = "deny"
    ALLOW = "allow"
    ESCALATE = "escalate"


GrantScope = Literal["session", "agent", "requester"]
GRANT_SCOPES: tuple[GrantScope, ...] = ("session", "agent", "requester")
MAX_GRANT_SECONDS = 30 * 86400  # the longest any grant may last, whatever a rule says
MAX_GRANT_CALLS = 1_000_000


def _amount(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("must be a number")
    return value


Amount = Annotated[Decimal, BeforeValidator(_amount), Field(gt=0, le=Decimal("1e15"))]


class GrantLimits(_Strict):
    """How far an approver may go when granting similar calls (`approval.grants`).

    A grant given under these may only be narrower.

    Attributes:
        scopes: The scopes a grant may name: `session` (this session), `agent` (this agent),
            `requester` (the person the agent acts for).
        max_duration: The longest a grant may last (at most `30d`).
        max_calls: The most calls one grant may let through (none: no limit on the count).
        max_total: One numeric argument and the most its running total over the grant's calls may
            reach, like `{amount: 500}`.
    """

    scopes: tuple[GrantScope, ...] = Field(default=("session",), min_length=1)
    max_duration: Duration = 3600
    max_calls: int | None = Field(default=None, ge=1, le=MAX_GRANT_CALLS)
    max_total: dict[str, Amount] | None = None

    @field_validator("scopes", mode="before")
    @classmethod
    def _known_scopes(cls, value: object) -> object:
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, list | tuple):
            for item in value:
                if item not in GRANT_SCOPES:
                    raise ValueError(f"{item!r} is not a grant scope: write session, agent or requester")
            return tuple(dict.fromkeys(value))
        return value

    @field_validator("max_calls", mode="before")
    @classmethod
    def _whole(cls, value: object) -> object:
        if isinstance(value, bool):  # YAML's true would otherwise count as 1
            raise ValueError("must be a whole number, not true or false")
        return value

    @field_validator("max_duration")
    @classmethod
    def _bounded(cls, value: int) -> int:
        if value > MAX_GRANT_SECONDS:
            raise ValueError("a grant may last at most 30d")
        return value

    @field_validator("max_total")
    @classmethod
    def _one_argument(cls, value: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        if value is not None:
            if len(value) != 1:
                raise ValueError("max_total names one numeric argument and its limit, like {amount: 500}")
            (name,) = value
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"{name!r} is not an argument name")
        return value


class ApprovalSpec(_Strict):
    """How a `require_approval` rule's approval behaves.

    `approvers` names who may decide (`role:support-lead`, `user:alice`; empty: any approver);
    `quorum` how many different approvers must approve (any one denial denies); on timeout the
    call is denied, allowed, or escalated to `escalate_to` for `escalation_timeout` more
    (then denied). `grants` lets an approver also grant similar calls, within its limits
    (none may be granted without it).

    Attributes:
        timeout: How long the approval waits for a decision.
        on_timeout: What the expiry does: `deny` the call, `allow` it, or `escalate` it.
        approvers: Who may decide, as `role:NAME` or `user:NAME` (empty: any approver).
        quorum: How many different approvers must approve (one denial denies); 1 to 20.
        escalate_to: Who decides once the timeout passes, with `on_timeout: escalate`.
        escalation_timeout: How long the escalated approval waits (then it is denied); default:
            `timeout` again.
        grants: Lets an approver also grant similar calls, within these limits.
    """

    timeout: Duration = 3600
    on_timeout: OnTimeout = OnTimeout.DENY
    approvers: Approvers = ()
    quorum: int = Field(default=1, ge=1, le=20)
    escalate_to: Approvers = ()
    escalation_timeout: Duration | None = None
    grants: GrantLimits | None = None

    @model_validator(mode="after")
    def _one_approver_grants(self) -> ApprovalSpec:
        if self.grants is not None and self.quorum > 1:
            raise ValueError(
                f"grants and quorum: {self.quorum} do not mix: one approver's grant would let later calls"
                " through that need several"
            )
        return self

    @model_validator(mode="after")
    def _escalation_needs_a_target(self) -> ApprovalSpec:
        if self.on_timeout is OnTimeout.ESCALATE and not self.escalate_to:
            raise ValueError("on_timeout: escalate needs escalate_to (who decides after the timeout)")
        if self.escalate_to and self.on_timeout is not OnTimeout.ESCALATE:
            raise ValueError("escalate_to only applies with on_timeout: escalate")
        return self


class Rule(_Strict):
    """One rule of a tool: a condition, an effect and why.

    Attributes:
        id: The rule's name, recorded with every decision it takes part in (letters, digits and
            `_ . : -`, at most 128).
        when: A CEL condition over `args` and `facts`; left out, the rule matches every call.
        effect: What a match does: `allow`, `require_approval` or `block` (the most restrictive
            matching rule wins).
        reason: Why, shown to the agent and the approver and recorded.
        on_error: The effect when the condition cannot be evaluated (a missing argument, a wrong
            type).
        approval: How the approval behaves, for `effect: require_approval`.
        mode: `enforce`, or `monitor`: decided and recorded ("would block") but never enforced.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=128)
    when: str | None = None
    effect: Effect
    reason: str | None = None
    on_error: Effect = Effect.BLOCK
    approval: ApprovalSpec | None = None
    # monitor: decided and recorded ("would block"), never enforced
    mode: Literal["enforce", "monitor"] = "enforce"

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


JsonScalar = str | bool | int | float | None


def _short_form(value: object) -> object:
    return {"type": value} if isinstance(value, str) else value


class ParamSpec(_Strict):
    """What one argument may be: checked on every call before any rule runs.

    A subset of JSON Schema: `type`, `required`, `nullable` (a null counts as not given),
    `minimum`/`maximum` (inclusive, exact decimals), `enum`, `pattern` (searched like JSON
    Schema's, `$` the end of the value, classes ASCII; anchor it with ^…$), `max_length`
    (characters of a string, items of a list) and `format: email` (exactly one plain address).
    Written `amount: number` it is just a type.

    Attributes:
        type: The argument's type: `string`, `number`, `integer`, `boolean`, `list`, `map` or `any`.
        required: The call is blocked when the argument is not given.
        nullable: A null is accepted (and counts as not given).
        minimum: The smallest number allowed (inclusive, compared as an exact decimal).
        maximum: The largest number allowed (inclusive, compared as an exact decimal).
        enum: The only values allowed.
        pattern: A regular expression the string must contain a match of (anchor it with ^…$).
        max_length: The most characters of a string or items of a list.
        format: `email`: exactly one plain address.
    """

    type: ParamType = "any"
    required: bool = False
    nullable: bool = False
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    enum: tuple[JsonScalar, ...] | None = Field(default=None, min_length=1)
    pattern: str | None = None
    max_length: int | None = Field(default=None, ge=0)
    format: Literal["email"] | None = None

    @field_validator("minimum", "maximum", mode="before")
    @classmethod
    def _plain_number(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise ValueError("must be a number")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            from ._params import compiled  # as calls will be matched against it

            try:
                compiled(value)
            except regex.error as exc:
                raise ValueError(f"is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fits_the_type(self) -> ParamSpec:
        numeric = self.type in ("number", "integer", "any")
        if (self.minimum is not None or self.maximum is not None) and not numeric:
            raise ValueError(f"minimum and maximum apply to numbers, not to a {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        if (self.pattern is not None or self.format is not None) and self.type not in ("string", "any"):
            raise ValueError(f"pattern and format apply to strings, not to a {self.type}")
        if self.max_length is not None and self.type not in ("string", "list", "any"):
            raise ValueError(f"max_length applies to strings and lists, not to a {self.type}")
        return self


Param = Annotated[ParamSpec, BeforeValidator(_short_form)]


class ToolPolicy(_Strict):
    """The rules of one tool name or glob.

    `params` declares the tool's arguments (checked before the rules on every call);
    `additional` says what an argument that `params` does not declare does: `block` (the
    default once `params` is given) or `allow`.

    Attributes:
        default: The effect when none of the tool's rules matches (none: a matching glob's, else the
            policy's `default`).
        params: The tool's arguments and what each may be, checked before the rules.
        additional: What an argument `params` does not declare does: `block` (the default once
            `params` is given) or `allow`.
        rules: The tool's rules, each decided on every call.
        when_server_unreachable: Remote mode: what a call that needs the server (facts, an
            approval) does when it cannot be reached: `block` (fail closed) or `allow`.
    """

    default: Effect | None = None
    params: dict[str, Param] | None = None
    additional: Literal["block", "allow"] | None = None
    rules: tuple[Rule, ...] = ()
    # Remote mode: what a call that needs the server (facts, approval) does when it cannot be
    # reached. Fail closed unless the policy says otherwise.
    when_server_unreachable: Literal["block", "allow"] = "block"

    @model_validator(mode="after")
    def _additional_needs_params(self) -> ToolPolicy:
        if self.additional is not None and self.params is None:
            raise ValueError("'additional' says what undeclared arguments do: declare the tool's 'params' too")
        return self

    def param_types(self) -> dict[str, ParamType] | None:
        """The declared type of each argument (None when `params` is not given)."""
        return None if self.params is None else {n: p.type for n, p in self.params.items()}


class SessionBudget(_Strict):
    """Limits on one session's LLM spend.

    `on_exceed` says what the next call does once the budget is spent: `block`, or
    `require_approval` — wait for a human who may extend the budget (`approval` says who).

    Attributes:
        max_cost_usd: The most LLM cost, in USD, recorded before the next tool call is held.
        max_tokens: The most tokens (input and output) recorded before the next tool call is held.
        on_exceed: What the next tool call does once the budget is spent: `block` or
            `require_approval`.
        approval: How that approval behaves (who may extend the budget), with
            `on_exceed: require_approval`.
    """

    max_cost_usd: Decimal | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    on_exceed: Literal["block", "require_approval"] = "block"
    approval: ApprovalSpec | None = None

    @model_validator(mode="after")
    def _approval_only_when_asking(self) -> SessionBudget:
        if self.approval is not None and self.on_exceed != "require_approval":
            raise ValueError("'approval' settings only apply with on_exceed: require_approval")
        if self.approval is not None and self.approval.grants is not None:
            raise ValueError("a budget's approval extends the budget; 'grants' apply to rules")
        return self


class AgentBudget(SessionBudget):
    """Limits on one agent's LLM spend over a rolling window.

    Attributes:
        window: The rolling window the agent's spend is summed over.
    """

    window: Duration = 86400


class Budgets(_Strict):
    """Budgets that block (or put to approval) an over-spent session's or agent's next tool call.

    Attributes:
        session: Limits on one session's LLM spend.
        agent: Limits on one agent's LLM spend over a rolling window.
    """

    session: SessionBudget | None = None
    agent: AgentBudget | None = None


JsonPointer = Annotated[str, Field(pattern=r"^(/([^/~]|~[01])*)+$")]


class PolicyDocument(_Strict):
    """A whole policy file.

    Attributes:
        version: The format's version: 1.
        default: The effect for a call no tool entry or rule decides.
        tools: Each tool name or glob (`refunds.*`) and its rules; names are compared in lower
            case, with `-` and spaces as `_`.
        budgets: LLM spend limits per session and per agent.
        redact: Per tool name or glob, the JSON pointers (`/card_number`) of arguments recorded as
            `[REDACTED]`.
    """

    version: Literal[1]
    default: Effect = Effect.ALLOW
    tools: dict[str, ToolPolicy] = Field(default_factory=dict)
    budgets: Budgets | None = None
    redact: dict[str, tuple[JsonPointer, ...]] = Field(default_factory=dict)

    @field_validator("tools", "redact", mode="before")
    @classmethod
    def _tool_names(cls, value: object) -> object:
        """Tool names and globs as the boundary writes them: ASCII, folded (see `fold_tool`)."""
        if not isinstance(value, dict):
            return value
        seen: dict[str, str] = {}
        for key in value:
            if not isinstance(key, str) or _TOOL_KEY.fullmatch(key) is None:
                raise ValueError(
                    f"{key!r} is not a tool name or glob: tool names are ASCII letters, digits, _ . : / ' -"
                    " and single inner spaces (globs add * ? [ ])"
                )
            folded = fold_tool(key)
            if folded == MODEL_CALL:
                raise ValueError(f"{key!r} is reserved for Clearance's model-call gate (budgets decide it)")
            if folded in seen:
                raise ValueError(
                    f"{seen[folded]!r} and {key!r} name the same tool (names are compared in lower case,"
                    " with - and spaces as _)"
                )
            seen[folded] = key
        return {fold_tool(k): v for k, v in value.items()}

    def approver_groups(self) -> frozenset[str]:
        """Every `role:…` and `user:…` its approvals name (rules' and budgets', escalations too)."""
        specs = [r.approval for t in self.tools.values() for r in t.rules]
        if self.budgets is not None:
            specs += [b.approval for b in (self.budgets.session, self.budgets.agent) if b is not None]
        return frozenset(g for spec in specs if spec is not None for g in (*spec.approvers, *spec.escalate_to))


_TOOL_KEY = re.compile(r"[A-Za-z0-9_.:/'*?\[\]!-]+(?: [A-Za-z0-9_.:/'*?\[\]!-]+)*")
