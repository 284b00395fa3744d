"""Deciding a call on the agent, from its snapshot: the policy, the grants it holds, the shadow.

The same decisions the server's recorder makes (`_guard._record.call_recorder`) for a call that
needs no facts: a call policy puts to approval (not a budget's) that a held grant covers is
allowed with it, and the shadow policy decides beside, seeing the same grants. Where the answer
depends on what only the server knows (facts, the counter of a limited grant), these say so and
the call is decided there.
"""

from __future__ import annotations

from typing import Any

from .._guard._record import decide_shadow
from .._store import _grants as grants
from ..policy import Decision, Effect
from ._grants import HeldGrant
from ._snapshot import Synced


def decide(
    synced: Synced, tool: str, args: dict[str, Any], *, session: str, requester: str | None, at: int
) -> tuple[Decision, grants.Use | None]:
    """The policy's decision on a call that needs no facts, and the held grant it uses (if any)."""
    decision = synced.policy.decide(tool, args, {})
    held = _covering(synced, decision, tool, args, session=session, requester=requester, at=at)
    if held is None:
        return decision, None
    return _granted(decision, held), grants.Use(
        held.id, held.granted_by, None, None
    )  # uncounted: the record is the use


def shadow(
    synced: Synced, tool: str, args: dict[str, Any], *, session: str, requester: str | None, at: int
) -> Decision | None:
    """What the shadow policy decides on a call; None when only the server can say.

    That is when the shadow needs facts for the tool, or asks for an approval that no held grant
    covers but a limited one (counted on the server) might.
    """
    assert synced.shadow is not None
    if synced.shadow.plan(tool).facts:
        return None
    decided = decide_shadow(synced.shadow, tool, args, {})
    held = _covering(synced, decided, tool, args, session=session, requester=requester, at=at)
    if held is not None:
        return _granted(decided, held)
    if decided.effect is Effect.REQUIRE_APPROVAL and synced.grants.counts(tool):
        return None
    return decided


def _covering(
    synced: Synced,
    decision: Decision,
    tool: str,
    args: dict[str, Any],
    *,
    session: str,
    requester: str | None,
    at: int,
) -> HeldGrant | None:
    if decision.effect is not Effect.REQUIRE_APPROVAL or decision.budget is not None:
        return None  # a grant only ever answers a rule's approval, never a block or a budget
    if not synced.policy.permits_grants(tool, decision.rule_ids):
        return None  # the rule as the policy in force says it, not as it was when granted
    return synced.grants.covering(
        tool, session=session, requester=requester, rule_ids=decision.rule_ids, args=args, at=at
    )


def _granted(decision: Decision, held: HeldGrant) -> Decision:
    return Decision(  # not dataclasses.replace: this is the hot path of a granted call
        Effect.ALLOW,
        f"{decision.reason}; allowed by grant {held.id} from {held.granted_by}",
        decision.rule_ids,
        decision.errors,
        None,
        decision.revision,
        decision.monitored,
        None,
        held.id,
    )
