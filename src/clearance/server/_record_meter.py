"""Counting the audit log: every committed decision and approval outcome, as an event sink.

The server's own checks, its approvals and remote agents' locally decided calls (ingested) all
end up as records in the log, so counting there counts every decision once, whoever decided it —
and an embedded agent writing to the same store too. The sink is the built-in use of the
post-commit hook every exporter uses (`_sinks`): at least once, so a crash between counting
and saving the position counts that batch again in the next process (its counters start from
zero anyway; `rate()` is what to read). It starts at the newest record the first time, and one
process delivers it at a time (a lease on SQLite, a lock on PostgreSQL): sum the counters
across replicas.

Tool labels are bounded whatever agents send: a tool is named in a label only when an active
policy names it (a glob pattern labels the calls it matches, `db.*`); every other call is
counted under `other`.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram

from .._names import fold_tool
from .._sinks import Record
from .._store import Database
from .._store import _policies as policies
from .._wire import ApprovalStatus
from ..errors import ClearanceError
from ..policy import Effect
from ..policy._load import read_document

log = logging.getLogger("clearance.server")

OTHER = "other"
MAX_TOOLS = 1000  # labels kept from the policies; a policy that names more counts the rest as `other`
_EFFECTS = frozenset(e.value for e in Effect)
_OUTCOMES = frozenset(
    str(s) for s in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED, ApprovalStatus.CANCELLED, ApprovalStatus.EXPIRED)
) | {"allowed_on_timeout"}
_WAITED = ("approval.decided", "approval.expired")
_CHANGES_POLICIES = ("policy.activated",)


class ToolLabels:
    """The tool label of a call: its name when an active policy names it, the glob that matches it, or `other`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._names: frozenset[str] | None = None
        self._globs: tuple[str, ...] = ()

    def forget(self) -> None:
        """Read the active policies again before the next label (a policy was activated)."""
        self._names = None

    def label(self, tool: object) -> str:
        """The label for `tool`.

        Raises:
            StoreError: The active policies cannot be read.
        """
        if self._names is None:
            self._load()
        assert self._names is not None
        if not isinstance(tool, str):
            return OTHER
        folded = fold_tool(tool)
        if folded in self._names:
            return folded
        return next((g for g in self._globs if fnmatch.fnmatchcase(folded, g)), OTHER)

    def _load(self) -> None:
        names: dict[str, None] = {}
        for assignment in policies.assignments(self._db):
            revision = policies.get(self._db, assignment.revision_id)
            if revision is None:
                continue
            try:
                document, _ = read_document(revision.text, revision.source)
            except ClearanceError:  # an active revision validated when it was activated; never fail counting on one
                continue
            names.update(dict.fromkeys(fold_tool(t) for t in document.tools))
        kept = list(names)[:MAX_TOOLS]
        self._globs = tuple(n for n in kept if any(c in n for c in "*?["))
        self._names = frozenset(n for n in kept if n not in self._globs)


class RecordMeter:
    """The sink that counts decisions by effect and tool, and approvals' waits by outcome.

    Args:
        db: The store, to read which tools the active policies name.
        decisions: `clearance_decisions_total{effect, tool}`.
        waits: `clearance_approval_wait_seconds{outcome}`.
    """

    name = "metrics"

    def __init__(self, db: Database, decisions: Counter, waits: Histogram) -> None:
        self.labels = ToolLabels(db)
        self._decisions = decisions
        self._waits = waits

    def deliver(self, batch: Sequence[Record]) -> None:
        """Count a batch (labels are worked out first: a store error counts nothing, and the batch comes again)."""
        if any(r.kind in _CHANGES_POLICIES for r in batch):
            self.labels.forget()
        decided: list[tuple[str, str]] = []
        waited: list[tuple[str, float]] = []
        for record in batch:
            if record.kind == "tool_call.decided":
                body = record.event()
                decided.append((_effect(body.get("decision")), self.labels.label(body.get("tool"))))
            elif record.kind in _WAITED:
                body = record.event()
                ms = body.get("waited_ms")
                if isinstance(ms, int | float) and not isinstance(ms, bool) and 0 <= ms < 1e12:
                    waited.append((_outcome(body.get("decision")), ms / 1000))
        for effect, tool in decided:
            self._decisions.labels(effect=effect, tool=tool).inc()
        for outcome, seconds in waited:
            self._waits.labels(outcome=outcome).observe(seconds)


def _effect(value: Any) -> str:
    return value if isinstance(value, str) and value in _EFFECTS else OTHER


def _outcome(value: Any) -> str:
    return value if isinstance(value, str) and value in _OUTCOMES else OTHER
