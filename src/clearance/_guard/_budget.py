"""The model-call gate: a spent budget stops or pauses the model call itself, not only the next tool call.

Frameworks with a hook before each model call call `Backend.before_model_call` there. With no
budgets in the policy it returns at once and reads nothing. Otherwise the embedded store reads
the budgets' facts in one read transaction and returns while none is spent; a remote agent has
no facts of its own, so the server decides every model call.

A spent budget is decided as a call to the reserved tool `MODEL_CALL` with arguments
`{model}`, through the path a tool call takes (`Backend.begin`). The policy decides that name by
its budgets alone, inside the write transaction that records the call, so the decision is
exact and the record, the reason, the approval and its approvers are those the next tool call
would get. `on_exceed: block` raises `ModelCallBlocked`; `require_approval` waits for the
approval as a tool call waits (woken by push), and once it is approved — the budget extended,
or this one call let through — records the approved call executed: the model call went ahead.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .._clock import now_us
from .._names import MODEL_CALL, admit_names, model_call_gate
from .._store import _facts as facts
from .._text import escaped
from ..errors import ModelCallBlocked
from ..policy import Effect, FactSpec, Policy
from ._governor import Governor
from ._steps import Step, Steps

if TYPE_CHECKING:
    from ._backend import Backend

MAX_MODEL_NAME = 200  # a model name is recorded, never decided on: a longer one is cut


@functools.lru_cache(maxsize=16)
def _budget_facts(policy: Policy) -> tuple[FactSpec, ...]:
    return policy.budget_facts()  # a policy never changes


def gate(backend: Backend, session: str | None, model: str | None) -> Steps[None]:
    """Let a model call go ahead, stop it, or wait until an approver lets it go ahead.

    Raises:
        ModelCallBlocked: A spent budget blocks it (or, remote, the server that keeps the
            budgets cannot be reached), or an approver edited its arguments (recorded failed).
        ApprovalDenied: The approver denied it.
        ApprovalTimeout: Nobody decided in time and the budget's `on_timeout` denies.
    """
    policy = backend.policy
    name = _model_name(model)
    if isinstance(backend, Governor) and not _spent(backend, policy, session):
        return
    with model_call_gate():
        ticket = backend.begin(MODEL_CALL, {"model": name} if name is not None else {}, session)
    decision = ticket.decision
    if decision.effect is Effect.BLOCK:
        raise ModelCallBlocked(decision.reason, decision.rule_ids, ticket.call_id, tool=ticket.tool, model=name)
    if ticket.approval_id is None:  # an approver extended the budget since it was read
        return
    approved = yield Step(functools.partial(backend.wait, ticket), functools.partial(backend.wait_async, ticket))
    if approved.args is not None:  # nothing here can make the model call an approver wrote instead
        why = f"approved by {approved.decided_by} with edited arguments, which a model call cannot take; not made"
        refused = ModelCallBlocked(why, decision.rule_ids, ticket.call_id, tool=ticket.tool, model=name)
        backend.finish(ticket, error=refused, duration_s=0.0)  # recorded failed
        raise refused
    backend.finish(ticket, error=None, duration_s=0.0)


def _spent(governor: Governor, policy: Policy, session: str | None) -> bool:
    """Whether a budget is spent, read in one transaction; True for a session id the boundary refuses.

    A refused session id is decided (and recorded, blocked) by `begin`, never read with.
    """
    _, checked, refusal = admit_names(MODEL_CALL, session or governor.default_session, reserved=True)
    if refusal is not None:
        return True
    db = governor.db
    with db.read() as cur:
        values, _ = facts.compute(
            db, cur, _budget_facts(policy), agent=governor.agent, session=checked, tool=MODEL_CALL, now_us=now_us()
        )
    return policy.budget_state(values) is not None


def _model_name(model: object) -> str | None:
    """The model's name as recorded: text any store keeps, at most `MAX_MODEL_NAME` characters."""
    if model is None:
        return None
    return escaped(str(model))[:MAX_MODEL_NAME] or None
