"""The history of approval decisions: what was decided, by whom, with what note and edit, how fast.

Read from the approvals table, one row per approval, which keeps each approval's final state
(its status, decider, note, the arguments as proposed and as edited, when it was asked and
decided) and is indexed by when it was decided; the grant an approver gave with a decision is
the grants row naming the approval. (The audit log holds the same facts as events, hash-chained,
but spread over several records per approval among every other record.)

An outcome is one of `OUTCOMES`: a decided approval is `approved` (it may have run since:
executed or failed), `granted` (approved, and similar calls or more budget let through with it),
`denied`, `expired`, `allowed_on_timeout` (expired, and let through as its rule said) or `cancelled`.
Pages are newest decision first, by keyset (`Cursor`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .._canonical import REDACTED
from .._wire import ApprovalStatus
from . import _grants as grants
from ._db import Database
from ._grants import Grant
from ._shown import shown

Outcome = Literal["approved", "granted", "denied", "expired", "allowed_on_timeout", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
MAX_CHANGES = 50  # changes listed per decision; the rest are counted
Cursor = tuple[int, str]  # (decided_at_us, approval id) of the last decision of a page

_ALLOW = "allow"  # an approval's on_timeout that lets the call through when it expires
_RAN = (ApprovalStatus.APPROVED, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED)
_DECIDED = frozenset((*_RAN, ApprovalStatus.DENIED, ApprovalStatus.EXPIRED, ApprovalStatus.CANCELLED))
_STATUS = {f"st_{s}": s for s in _RAN}
_RAN_MARKS = ", ".join(f":st_{s}" for s in _RAN)
_GRANTED = "EXISTS (SELECT 1 FROM grants g WHERE g.approval_id = a.id)"
_COLUMNS = (
    "a.id",
    "a.call_id",
    "a.status",
    "a.tool",
    "a.agent",
    "a.environment",
    "a.session",
    "a.requested_by",
    "a.decided_by",
    "a.note",
    "a.created_at_us",
    "a.decided_at_us",
    "a.reason",
    "a.rule_ids",
    "a.on_timeout",
    "a.votes_json",
    "a.error",
    "a.finished_at_us",
    # The arguments only of edited approvals: the others' are not read from the row at all.
    "CASE WHEN a.edited_shown_json IS NULL THEN NULL ELSE a.shown_args_json END",
    "a.edited_shown_json",
    "CASE WHEN a.edited_shown_json IS NULL THEN NULL ELSE a.args_json END",
    "a.edited_args_json",
)


@dataclass(frozen=True)
class HistoryFilter:
    """Which decisions: every field given must match (times bound when it was decided, `until_us` excluded)."""

    outcome: Outcome | None = None
    decider: str | None = None
    tool: str | None = None
    agent: str | None = None
    session: str | None = None
    since_us: int | None = None
    until_us: int | None = None


@dataclass(frozen=True)
class Change:
    """One difference between the arguments proposed and those an approver approved instead.

    Attributes:
        path: Where: argument name, then keys and list positions inside it.
        kind: `changed`, `added` (not proposed) or `removed` (not approved).
        before: The value proposed, as people may see it (None when added).
        after: The value approved, as people may see it (None when removed).
        redacted: The value is redacted on either side: it changed, but what it is stays hidden.
    """

    path: tuple[str | int, ...]
    kind: Literal["changed", "added", "removed"]
    before: Any
    after: Any
    redacted: bool = False


@dataclass(frozen=True)
class Decided:
    """One decided approval as the history shows it."""

    approval_id: str
    call_id: str
    outcome: Outcome
    status: str
    tool: str
    agent: str
    environment: str
    session: str | None
    requested_by: str | None
    decided_by: str | None
    note: str | None
    requested_at_us: int
    decided_at_us: int
    reason: str
    rule_ids: tuple[str, ...]
    on_timeout: str
    votes: tuple[str, ...]
    error: str | None
    finished_at_us: int | None
    edited: bool
    changes: tuple[Change, ...]
    changes_left_out: int
    grant: Grant | None
    degraded: tuple[str, ...]

    @property
    def waited_us(self) -> int:
        """How long the agent waited: from the request to the decision."""
        return max(0, self.decided_at_us - self.requested_at_us)


def page(
    db: Database, f: HistoryFilter, *, after: Cursor | None = None, limit: int = 50
) -> tuple[list[Decided], Cursor | None]:
    """Decisions matching `f`, newest first, after `after`; and the cursor of the next page (None: no more)."""
    # Not `status IN (every decided status)`: SQLite would then read the status index and sort.
    clauses = ["a.decided_at_us IS NOT NULL", "a.status <> :pending"]
    params: dict[str, Any] = {"pending": ApprovalStatus.PENDING, "n": limit + 1}
    if f.outcome in ("approved", "granted"):
        clauses.append(f"a.status IN ({_RAN_MARKS})")
        clauses.append(_GRANTED if f.outcome == "granted" else f"NOT {_GRANTED}")
        params.update(_STATUS)
    elif f.outcome in ("expired", "allowed_on_timeout"):
        clauses.append("a.status = :expired")
        clauses.append("a.on_timeout = :allow" if f.outcome == "allowed_on_timeout" else "a.on_timeout <> :allow")
        params["expired"], params["allow"] = ApprovalStatus.EXPIRED, _ALLOW
    elif f.outcome is not None:
        clauses.append("a.status = :status")
        params["status"] = f.outcome
    for column, value in (("decided_by", f.decider), ("tool", f.tool), ("agent", f.agent), ("session", f.session)):
        if value is not None:
            clauses.append(f"a.{column} = :{column}")
            params[column] = value
    if f.since_us is not None:
        clauses.append("a.decided_at_us >= :since")
        params["since"] = f.since_us
    if f.until_us is not None:
        clauses.append("a.decided_at_us < :until")
        params["until"] = f.until_us
    if after is not None:
        clauses.append("(a.decided_at_us < :at OR (a.decided_at_us = :at AND a.id < :id))")
        params["at"], params["id"] = after
    sql = (
        f"SELECT {', '.join(_COLUMNS)} FROM approvals a WHERE {' AND '.join(clauses)}"
        " ORDER BY a.decided_at_us DESC, a.id DESC LIMIT :n"
    )
    with db.read() as cur:
        cur.execute(db.sql(sql), params)
        rows = cur.fetchall()
        # A status no version writes (a row put in by hand) is no outcome: left out, paging goes on past it.
        shown = [r for r in rows[:limit] if r[2] in _DECIDED]
        given = grants.of_approvals(db, cur, [r[0] for r in shown])
    found = [_readable(r, given.get(r[0])) for r in shown]
    last = rows[limit - 1] if len(rows) > limit else None
    if last is None:
        return found, None
    # A time stored as text (SQLite takes it) sorts above every number: go on from the numbers.
    at = last[11] if isinstance(last[11], int) else _AFTER_TEXT
    return found, (at, str(last[0]))


_AFTER_TEXT = 2**63 - 1


def _readable(row: Sequence[Any], grant: Grant | None) -> Decided:
    """The decision of a row; a row no version writes (put in by hand) shown as far as it reads, marked."""
    try:
        return _decided(row, grant)
    except Exception as e:  # noqa: BLE001 - whatever is stored, the history answers
        text = [v if isinstance(v, str) else None for v in row]
        return Decided(
            approval_id=str(row[0]),
            call_id=str(row[1]),
            outcome="cancelled" if row[2] not in _RAN and row[2] in _DECIDED else "approved",
            status=str(row[2]),
            tool=str(row[3]),
            agent=str(row[4]),
            environment=str(row[5]),
            session=text[6],
            requested_by=text[7],
            decided_by=text[8],
            note=text[9],
            requested_at_us=row[10] if isinstance(row[10], int) else 0,
            decided_at_us=row[11] if isinstance(row[11], int) else 0,
            reason=text[12] or "",
            rule_ids=(),
            on_timeout=text[14] or "",
            votes=(),
            error=text[16],
            finished_at_us=row[17] if isinstance(row[17], int) else None,
            edited=row[19] is not None,
            changes=(),
            changes_left_out=0,
            grant=grant,
            degraded=(f"the stored row is not one this version writes ({type(e).__name__}); see the record",),
        )


def iterate(db: Database, f: HistoryFilter, *, page_size: int = 500) -> Iterator[Decided]:
    """Every decision matching `f`, newest first, read a page at a time (for exports)."""
    after: Cursor | None = None
    while True:
        found, after = page(db, f, after=after, limit=page_size)
        yield from found
        if after is None:
            return


def _decided(row: Sequence[Any], grant: Grant | None) -> Decided:
    (approval_id, call_id, status, tool, agent, environment, session, requested_by, decided_by, note) = row[:10]
    (created, decided, reason, rule_ids, on_timeout, votes_json, error, finished) = row[10:18]
    shown_args, edited_shown, args, edited_args = row[18:22]
    notes: dict[str, None] = {}
    changes: list[Change] = []
    left_out = 0
    if edited_shown is not None:
        changes, left_out = _changes(shown_args, edited_shown, args, edited_args, notes)
    ran = status in _RAN
    outcome: Outcome = ("granted" if grant is not None else "approved") if ran else status
    if status == ApprovalStatus.EXPIRED and on_timeout == _ALLOW:
        outcome = "allowed_on_timeout"
    return Decided(
        approval_id=approval_id,
        call_id=call_id,
        outcome=outcome,
        status=status,
        tool=tool,
        agent=agent,
        environment=environment,
        session=session,
        requested_by=requested_by,
        decided_by=decided_by,
        note=note,
        requested_at_us=_int(created),
        decided_at_us=_int(decided),
        reason=reason,
        rule_ids=tuple(str(r) for r in _list(rule_ids, notes)),
        on_timeout=on_timeout,
        votes=tuple(str(v.get("by")) for v in _list(votes_json, notes) if isinstance(v, dict)),
        error=error,
        finished_at_us=None if finished is None else _int(finished),
        edited=edited_shown is not None,
        changes=tuple(changes),
        changes_left_out=left_out,
        grant=grant,
        degraded=tuple(notes),
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not a time: {type(value).__name__}")
    return int(value)


def _list(text: str | None, notes: dict[str, None]) -> list[Any]:
    if text is None:
        return []
    found = shown(text)
    notes.update(dict.fromkeys(found.notes))
    return found.value if isinstance(found.value, list) else []


# -- the edit, as changes --------------------------------------------------------------------

_MISSING: Any = object()


def _changes(
    shown_text: str | None,
    edited_shown_text: str,
    args_text: str | None,
    edited_args_text: str | None,
    notes: dict[str, None],
) -> tuple[list[Change], int]:
    """What the approver changed, as people may see it; and how many more changes were left out.

    The arguments as shown (redacted) say what to show; the full arguments say what changed,
    so a change under a redaction mark is listed too (marked `redacted`, its values hidden).
    Arguments stored in a form readers cannot return whole are compared as shown.
    """
    before, after = shown(shown_text or "{}"), shown(edited_shown_text)
    notes.update(dict.fromkeys((*before.notes, *after.notes)))
    full_before, full_after = before.value, after.value
    if not before.notes and not after.notes and args_text is not None and edited_args_text is not None:
        try:
            full_before, full_after = json.loads(args_text), json.loads(edited_args_text)
        except (RecursionError, ValueError):
            full_before, full_after = before.value, after.value
    found: list[Change] = []
    try:
        _walk((), full_before, full_after, before.value, after.value, found)
    except RecursionError:  # full arguments deeper than the stack: compare what is shown (at most 100 deep)
        found = []
        _walk((), before.value, after.value, before.value, after.value, found)
    return found[:MAX_CHANGES], max(0, len(found) - MAX_CHANGES)


def _walk(path: tuple[str | int, ...], full_a: Any, full_b: Any, shown_a: Any, shown_b: Any, out: list[Change]) -> None:
    """Add to `out` the differences of `full_a` and `full_b` below `path`, with the values shown.

    The shown values have the shape of the full ones, except where a redaction mark stands.
    """
    if full_a is _MISSING:
        out.append(Change(path, "added", None, shown_b, shown_b == REDACTED))
    elif full_b is _MISSING:
        out.append(Change(path, "removed", shown_a, None, shown_a == REDACTED))
    elif _same(full_a, full_b):
        return
    elif shown_a == REDACTED or shown_b == REDACTED:
        out.append(Change(path, "changed", shown_a, shown_b, True))
    elif (
        isinstance(full_a, dict)
        and isinstance(full_b, dict)
        and isinstance(shown_a, dict)
        and isinstance(shown_b, dict)
    ):
        for key in dict.fromkeys([*full_a, *full_b]):
            _walk(
                (*path, key),
                full_a.get(key, _MISSING),
                full_b.get(key, _MISSING),
                shown_a.get(key),
                shown_b.get(key),
                out,
            )
    elif (
        isinstance(full_a, list)
        and isinstance(full_b, list)
        and isinstance(shown_a, list)
        and isinstance(shown_b, list)
    ):
        for i in range(max(len(full_a), len(full_b))):
            _walk(
                (*path, i),
                full_a[i] if i < len(full_a) else _MISSING,
                full_b[i] if i < len(full_b) else _MISSING,
                shown_a[i] if i < len(shown_a) else None,
                shown_b[i] if i < len(shown_b) else None,
                out,
            )
    else:
        out.append(Change(path, "changed", shown_a, shown_b))


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 150 and 150.0 are one number, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
