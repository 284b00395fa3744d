"""An approval as text for people outside the dashboard: the lines every channel shows.

What an agent controls (tool, arguments, session, reason) is shown with hidden,
direction-changing and look-alike characters as named tokens (`⟨U+202E RLO⟩`, see `_visible`),
and a large value by its size first.
"""

from __future__ import annotations

import time
from typing import Any

from ..._canonical import canonical_json
from ..._store import Approval
from ..._visible import shown, visible
from ..._wire import ApprovalStatus

LONG = 300  # characters of a text value shown before it is cut (its size is said first)
_MANY = 20  # entries of an object or array written out before it is shown by its size


def value(v: Any) -> str:
    """A value as an approver reads it: hazards as tokens, a large object, array or text by its size."""
    if isinstance(v, dict) and len(v) > _MANY:
        return f"{{{len(v):,} keys}} " + canonical_json(shown(v))
    if isinstance(v, list) and len(v) > _MANY:
        return f"[{len(v):,} items] " + canonical_json(shown(v))
    if isinstance(v, str) and len(v) > LONG:
        return f"({len(v):,} characters) " + visible(v)
    return visible(v) if isinstance(v, str) else canonical_json(shown(v))


def cut(text: str, limit: int) -> str:
    """`text`, ending in `…` when it is longer than `limit`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(us: int | None) -> str:
    """A time for people: `2026-11-25 10:00:00 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(us / 1e6)) if us else "-"


def head(a: Approval) -> str:
    """The title: `Approval needed: tool`, or its outcome."""
    tool = visible(a.tool)
    return f"Approval needed: {tool}" if a.status is ApprovalStatus.PENDING else f"{a.status.capitalize()}: {tool}"


def facts(a: Approval) -> list[str]:
    """Who asks, in which session, under which rule and why, until when, and who may decide."""
    lines = [
        f"Agent: {visible(a.agent)} ({a.environment})",
        f"Session: {visible(a.session or '-')}",
        f"Rule: {', '.join(a.rule_ids) or '-'}",
        f"Reason: {visible(a.reason)}",
        f"Expires: {when(a.expires_at_us)}",
    ]
    if a.approvers or a.escalated_at_us:
        lines.append(f"Who may decide: {', '.join(a.deciders) or 'any approver'}")
    if a.quorum > 1:
        lines.append(f"Approvals: {len(a.votes)} of {a.quorum}")
    return lines


def arguments(a: Approval) -> dict[str, Any]:
    """The arguments people see: the approver's edit, else as proposed (redacted either way)."""
    return a.edited_shown if a.edited_shown is not None else a.shown_args


def outcome(a: Approval) -> str:
    """How it ended: `denied by user:lena at … — note`."""
    by = f" by {visible(a.decided_by)}" if a.decided_by else ""
    note = f" — {visible(a.note)}" if a.note else ""
    return f"{a.status}{by} at {when(a.decided_at_us)}{note}"
