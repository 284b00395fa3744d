"""Where a shadow policy and the enforced one differed over a window, from the calls' own records.

One pass over the `tool_call.decided` records of the window that carry `shadow` or
`monitored`, a page at a time (each page its own short read, so a long report never holds the
store's connection): counts by (enforced -> shadow, the shadow's rule) and by monitor rule,
with the newest few calls of each as examples. Records written by any version, or by hand, are
read through `_shown.shown`; a field that is missing or not what this version writes is
counted as unreadable, never an error.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._clock import now_us
from ._db import Database
from ._shown import shown

PAGE = 500
MAX_GROUPS = 200  # distinct groups kept; a record by hand can name any rule, the report stays small
OTHER = "(other rules)"  # the group the calls past MAX_GROUPS are counted in
_EFFECTS = frozenset({"allow", "block", "require_approval"})
_NAME = 200  # characters of a rule id, tool, agent or session kept


@dataclass(frozen=True)
class Example:
    """One call of a group, as recorded.

    Attributes:
        call_id: The call.
        at_us: When it was decided.
        agent: Who called.
        environment: Where.
        session: Its session.
        tool: The tool.
        args: The arguments as recorded and shown (redacted, maybe cut).
        enforced_rule_ids: The enforced policy's deciding rules.
        enforced_reason: Why the enforced policy decided as it did.
        shadow_rule_ids: The shadow's deciding rules (for a monitor hit: the rule).
        shadow_reason: Why the shadow (or the monitor rule) decided as it would have.
    """

    call_id: str | None
    at_us: int | None
    agent: str | None
    environment: str | None
    session: str | None
    tool: str | None
    args: Any
    enforced_rule_ids: list[str]
    enforced_reason: str | None
    shadow_rule_ids: list[str]
    shadow_reason: str | None


@dataclass
class Difference:
    """Calls the shadow decided otherwise: enforced -> shadow, by the shadow's deciding rule.

    Attributes:
        enforced: The enforced decision (`allow`, `block`, `require_approval`).
        shadow: The shadow's decision.
        rule_id: The shadow's first deciding rule (None: its default decided).
        count: How many calls.
        examples: The newest calls of the group, newest first.
    """

    enforced: str
    shadow: str
    rule_id: str | None
    count: int = 0
    examples: list[Example] = field(default_factory=list)


@dataclass
class MonitorHit:
    """Calls a `mode: monitor` rule matched: decided, recorded, allowed.

    Attributes:
        policy: `enforced` (a monitor rule of the enforced policy) or `shadow`.
        rule_id: The monitor rule.
        would: What it would have done: `block` or `require_approval`.
        count: How many calls.
        examples: The newest calls, newest first.
    """

    policy: str
    rule_id: str
    would: str
    count: int = 0
    examples: list[Example] = field(default_factory=list)


@dataclass
class ShadowReport:
    """Where shadow and enforced differed in `[since_us, until_us)`.

    Attributes:
        since_us: The window's start.
        until_us: Its end (exclusive).
        calls: Calls decided by a shadow beside the enforced policy.
        differing: Of those, the calls whose shadow decision differs from the enforced one.
        differences: By (enforced -> shadow, rule), most calls first.
        monitored: Monitor rule hits, most calls first.
        revisions: The shadow revisions that decided, and how many calls each.
        unreadable: Records that carry a shadow or monitor hits but could not be read as such.
    """

    since_us: int
    until_us: int
    calls: int = 0
    differing: int = 0
    differences: list[Difference] = field(default_factory=list)
    monitored: list[MonitorHit] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0


def _name(value: Any) -> str | None:
    """A recorded name as text, cut (a record by hand may hold anything there)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= _NAME else text[: _NAME - 1] + "…"


def _rule_ids(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [n for n in (_name(v) for v in value[:20]) if n is not None]


def _reason(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class _Group:
    """Counts and the newest examples of one group."""

    __slots__ = ("count", "examples")

    def __init__(self, keep: int) -> None:
        self.count = 0
        self.examples: deque[dict[str, Any]] = deque(maxlen=keep)


class _Groups:
    """Groups by key, at most MAX_GROUPS of them; the rest share one."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.found: dict[tuple[str, ...], _Group] = {}

    def add(self, key: tuple[str, ...], other: tuple[str, ...], record: dict[str, Any], extra: dict[str, Any]) -> None:
        group = self.found.get(key)
        if group is None:
            if len(self.found) >= MAX_GROUPS:
                key = other
                group = self.found.get(key)
            if group is None:
                group = self.found[key] = _Group(self.keep)
        group.count += 1
        if self.keep:
            group.examples.append({"record": record, **extra})


def _example(record: dict[str, Any], shadow_rule_ids: list[str], shadow_reason: str | None) -> Example:
    at = record.get("at_us")
    return Example(
        call_id=_name(record.get("call_id")),
        at_us=at if isinstance(at, int) and not isinstance(at, bool) else None,
        agent=_name(record.get("agent")),
        environment=_name(record.get("environment")),
        session=_name(record.get("session")),
        tool=_name(record.get("tool")),
        args=record.get("args"),
        enforced_rule_ids=_rule_ids(record.get("rule_ids")) or [],
        enforced_reason=_reason(record.get("reason")),
        shadow_rule_ids=shadow_rule_ids,
        shadow_reason=shadow_reason,
    )


def _examples(group: _Group) -> list[Example]:
    return [_example(e["record"], e["rule_ids"], e["reason"]) for e in reversed(group.examples)]


def _monitor_hits(hits: Any, policy: str, record: dict[str, Any], groups: _Groups) -> bool:
    """Count a record's monitor hits; False when they are not what a version writes."""
    if not isinstance(hits, list):
        return False
    for hit in hits[:50]:
        if not isinstance(hit, dict):
            return False
        rule, would = _name(hit.get("rule_id")), hit.get("would")
        if rule is None or would not in _EFFECTS:
            return False
        groups.add(
            (policy, rule, would),
            (policy, OTHER, would),
            record,
            {"rule_ids": [rule], "reason": _reason(hit.get("reason"))},
        )
    return True


def report(
    db: Database,
    *,
    since_us: int,
    until_us: int | None = None,
    environment: str | None = None,
    agent: str | None = None,
    examples: int = 3,
) -> ShadowReport:
    """Where shadow and enforced decisions differed, and monitor rules' hits, in `[since_us, until_us)`.

    Args:
        db: The store.
        since_us: The window's start.
        until_us: Its end (exclusive); default now.
        environment: Only calls in this environment.
        agent: Only this agent's calls.
        examples: Calls kept per group (the newest), 0 for none.
    """
    until = now_us() if until_us is None else until_us
    keep = max(0, min(examples, 50))
    out = ShadowReport(since_us=since_us, until_us=until)
    differences, monitors = _Groups(keep), _Groups(keep)
    clauses = ["kind = 'tool_call.decided'", "at_us >= :since", "at_us < :until", "seq > :after"]
    params: dict[str, Any] = {"since": since_us, "until": until, "after": 0, "page": PAGE}
    if environment is not None:
        clauses.append("environment = :environment")
        params["environment"] = environment
    if agent is not None:
        clauses.append("agent = :agent")
        params["agent"] = agent
    # A cheap filter first: only records whose text names a shadow or a monitor hit are decoded.
    clauses.append("(body LIKE '%\"shadow\"%' OR body LIKE '%\"monitored\"%')")
    sql = db.sql(f"SELECT seq, body FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT :page")
    while True:
        with db.read() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        for seq, body in rows:
            _count(shown(body, record=True).value, out, differences, monitors)
            params["after"] = seq
        if len(rows) < PAGE:
            break
    for (enforced, shadow, rule), group in differences.found.items():
        out.differences.append(Difference(enforced, shadow, rule or None, group.count, _examples(group)))
    for (policy, rule, would), group in monitors.found.items():
        out.monitored.append(MonitorHit(policy, rule, would, group.count, _examples(group)))
    out.differences.sort(key=lambda d: (-d.count, d.enforced, d.shadow, d.rule_id or ""))
    out.monitored.sort(key=lambda m: (-m.count, m.policy, m.rule_id, m.would))
    return out


def _count(record: Any, out: ShadowReport, differences: _Groups, monitors: _Groups) -> None:
    """Count one record (anything a store may hold) into the report."""
    if not isinstance(record, dict) or "$unreadable" in record:  # not JSON, or not an object
        out.unreadable += 1
        return
    # The text filter also lets through records that only name the words (in their arguments, say).
    readable = True
    if record.get("monitored") is not None:
        readable = _monitor_hits(record["monitored"], "enforced", record, monitors)
    if record.get("shadow") is not None:
        readable = _shadow(record, out, differences, monitors) and readable
    out.unreadable += not readable


def _shadow(record: dict[str, Any], out: ShadowReport, differences: _Groups, monitors: _Groups) -> bool:
    shadow, enforced = record["shadow"], record.get("decision")
    if not isinstance(shadow, dict) or enforced not in _EFFECTS or shadow.get("decision") not in _EFFECTS:
        return False
    decided, rule_ids = shadow["decision"], _rule_ids(shadow.get("rule_ids"))
    if rule_ids is None:
        return False
    out.calls += 1
    revision = _name(shadow.get("revision")) or "?"
    if revision in out.revisions or len(out.revisions) < MAX_GROUPS:
        out.revisions[revision] = out.revisions.get(revision, 0) + 1
    if decided != enforced:
        out.differing += 1
        rule = rule_ids[0] if rule_ids else ""
        differences.add(
            (enforced, decided, rule),
            (enforced, decided, OTHER),
            record,
            {"rule_ids": rule_ids, "reason": _reason(shadow.get("reason"))},
        )
    if shadow.get("monitored") is not None:
        return _monitor_hits(shadow["monitored"], "shadow", record, monitors)
    return True
