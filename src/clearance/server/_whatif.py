"""Test a draft policy against history: decide recorded calls again and list what would change.

Each recorded `tool_call.decided` event carries the arguments as recorded and the facts its
policy asked for, so a draft is decided on exactly that. Where the record cannot reproduce the
call faithfully — redacted arguments, or facts the draft needs that were not recorded — the
row says so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._guard._record import decide_admitted
from .._store import Database
from ..policy import Policy


@dataclass(frozen=True)
class Replayed:
    """One recorded call decided again by the draft."""

    seq: int
    at_us: int
    agent: str
    session: str | None
    tool: str
    args: dict[str, Any]
    recorded: str
    recorded_rule_ids: list[str]
    recorded_revision: str | None
    draft: str
    draft_rule_ids: list[str]
    draft_reason: str
    changed: bool
    uncertain: str | None


@dataclass
class Report:
    """What a draft would have decided on the last recorded calls."""

    checked: int = 0
    changed: int = 0
    uncertain: int = 0
    transitions: dict[str, int] = field(default_factory=dict)  # "allow → block": count
    rows: list[Replayed] = field(default_factory=list)


def replay(db: Database, draft: Policy, *, last: int, agent: str | None = None, only_changed: bool = True) -> Report:
    """Decide the last `last` recorded calls (of `agent`, or all) with `draft`."""
    where = "kind = 'tool_call.decided'"
    params: dict[str, Any] = {"n": last}
    if agent is not None:
        where += " AND agent = :agent"
        params["agent"] = agent
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT seq, body FROM events WHERE {where} ORDER BY seq DESC LIMIT :n"), params)
        rows = cur.fetchall()
    report = Report()
    for seq, text in rows:
        body = json.loads(text)
        tool, args, facts = body.get("tool") or "", body.get("args") or {}, body.get("facts") or {}
        needed = {spec.name for spec in draft.plan(tool).facts}
        missing = sorted(needed - set(facts))
        doubts = []
        if body.get("args_redacted"):
            doubts.append("arguments were redacted before storage: " + ", ".join(body["args_redacted"]))
        if body.get("args_truncated"):
            doubts.append("long arguments were cut for the record")
        if missing:
            doubts.append("the draft needs facts that were not recorded: " + ", ".join(missing))
        decision = decide_admitted(draft, tool, args, facts)
        recorded, now = body.get("decision") or "", decision.effect.value
        report.checked += 1
        changed = recorded != now
        if changed:
            report.changed += 1
            step = f"{recorded} → {now}"
            report.transitions[step] = report.transitions.get(step, 0) + 1
        if doubts:
            report.uncertain += 1
        if changed or not only_changed:
            report.rows.append(
                Replayed(
                    seq=seq,
                    at_us=body["at_us"],
                    agent=body.get("agent") or "",
                    session=body.get("session"),
                    tool=tool,
                    args=args,
                    recorded=recorded,
                    recorded_rule_ids=list(body.get("rule_ids") or []),
                    recorded_revision=body.get("policy_revision"),
                    draft=now,
                    draft_rule_ids=list(decision.rule_ids),
                    draft_reason=decision.reason,
                    changed=changed,
                    uncertain="; ".join(doubts) or None,
                )
            )
    return report
