"""Shadow policies on the store: a revision decided beside the enforced one, never enforced.

A shadow is activated per scope like a policy (`default`, `environment:<name>`,
`agent:<name>`; agent > environment > default) and kept in `policy_assignments` under
`shadow:<scope>`, which no enforced scope can be. Only a revision that compiles is ever
activated in shadow; `promote` makes a scope's shadow its enforced revision and empties the
shadow slot in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._clock import now_us
from ..errors import PolicyError, PolicyProblem
from ..policy import Policy, parse_policy
from . import _policies as policies
from ._db import Database
from ._events import append, make_event
from ._kinds import Kind
from ._policies import Revision, store_compiled
from ._shadow_report import Difference, Example, MonitorHit, ShadowReport, report

__all__ = [
    "Difference",
    "Example",
    "MonitorHit",
    "NotCompiled",
    "ShadowAssignment",
    "ShadowReport",
    "activate_for_agent",
    "activate_shadow",
    "clear_shadow",
    "promote",
    "report",
    "resolve_shadow",
    "shadows",
]

PREFIX = "shadow:"
_RECENT = 10_000  # records searched for an embedded agent's last shadow activation
_KINDS = ("environment", "agent")


class NotCompiled(ValueError):
    """A revision that does not compile (now), so it cannot be decided from, in shadow or enforced.

    Attributes:
        revision: Its id.
        problems: Every problem the compiler found.
    """

    def __init__(self, revision: str, problems: list[PolicyProblem], what: str) -> None:
        self.revision = revision
        self.problems = problems
        listed = "; ".join(str(p) for p in problems)
        super().__init__(f"revision {revision} does not compile, so it cannot be {what}: {listed}")


@dataclass(frozen=True)
class ShadowAssignment:
    """Which revision is decided in shadow for a scope, since when and by whom."""

    scope: str
    revision_id: str
    activated_at_us: int
    activated_by: str | None


def check_scope(scope: str) -> str:
    """`scope` if it is one a policy can be activated for, else ValueError."""
    kind, colon, name = scope.partition(":")
    if scope == "default" or (colon and kind in _KINDS and name):
        return scope
    raise ValueError(f"{scope!r} is not a scope: say default, environment:<name> or agent:<name>")


def compile_revision(revision: Revision, what: str = "activated in shadow") -> Policy:
    """The revision compiled, or `NotCompiled` naming every problem (and ValueError for a rejected draft)."""
    if revision.status != "valid":
        raise ValueError(f"revision {revision.id} is a rejected draft and cannot be {what}")
    try:
        return parse_policy(revision.text, revision.source)
    except PolicyError as exc:
        raise NotCompiled(revision.id, exc.problems, what) from None


def _event(kind: Kind, at: int, scope: str, revision: Revision | None, by: str | None, **more: Any) -> Any:
    scope_kind, _, name = scope.partition(":")
    fields = {
        "agent": name if scope_kind == "agent" else "*",
        "environment": name if scope_kind == "environment" else "*",
        "session": None,
        "policy_revision": revision.id if revision else None,
        "source": revision.source if revision else None,
        "scope": scope,
        "by": by,
        **more,
    }
    return make_event(kind, at, fields)


def _shadow_row(db: Database, cur: Any, scope: str) -> str | None:
    cur.execute(db.sql("SELECT revision_id FROM policy_assignments WHERE scope = :scope"), {"scope": PREFIX + scope})
    row = cur.fetchone()
    return str(row[0]) if row else None


def _put(db: Database, cur: Any, scope: str, revision: Revision, by: str | None, at: int) -> None:
    cur.execute(db.sql("DELETE FROM policy_assignments WHERE scope = :scope"), {"scope": PREFIX + scope})
    cur.execute(
        db.sql(
            "INSERT INTO policy_assignments (scope, revision_id, activated_at_us, activated_by)"
            " VALUES (:scope, :rev, :at, :by)"
        ),
        {"scope": PREFIX + scope, "rev": revision.id, "at": at, "by": by},
    )


def activate_shadow(db: Database, rev_id: str, *, scope: str, by: str | None) -> Revision:
    """Decide `rev_id` in shadow for `scope` from now on, and record `policy.shadow_activated`.

    Raises:
        LookupError: No such revision.
        ValueError: Not a scope, or a rejected draft.
        NotCompiled: The revision does not compile (nothing is activated).
    """
    check_scope(scope)
    revision = policies.get(db, rev_id)
    if revision is None:
        raise LookupError(f"no policy revision has the id {rev_id!r}")
    compile_revision(revision)  # outside the write lock: revisions are immutable
    at = now_us()
    with db.write() as cur:
        _put(db, cur, scope, revision, by, at)
        append(db, cur, [_event("policy.shadow_activated", at, scope, revision, by)])
        db.notify(cur, "policy")
    return revision


def activate_for_agent(db: Database, policy: Policy, *, agent: str, environment: str, author: str | None) -> None:
    """Store the shadow an embedded agent decides beside its policy, and record it for that agent.

    As `_policies.activate_for_agent` does for the enforced policy: the embedded agent's shadow
    is its configuration's, not a scope's, so no assignment is made; the revision is inserted
    if no revision has its content, and `policy.shadow_activated` is appended unless the
    agent's last one among the latest `_RECENT` records names this revision.
    """
    with db.write() as cur:
        store_compiled(db, cur, policy, author=author)
        # No index finds these records: only the latest ones are searched (at worst, a repeat).
        cur.execute(
            db.sql(
                "SELECT body FROM events WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events) - :recent"
                " AND agent = :agent AND kind = 'policy.shadow_activated' ORDER BY seq DESC LIMIT 1"
            ),
            {"agent": agent, "recent": _RECENT},
        )
        last = cur.fetchone()
        if last is None or json.loads(last[0]).get("policy_revision") != policy.revision:
            fields = {
                "agent": agent,
                "environment": environment,
                "session": None,
                "policy_revision": policy.revision,
                "source": policy.source,
            }
            append(db, cur, [make_event("policy.shadow_activated", now_us(), fields)])


def clear_shadow(db: Database, *, scope: str, by: str | None) -> str:
    """Stop deciding in shadow for `scope`; record `policy.shadow_cleared`. Returns the revision it was.

    Raises:
        LookupError: No shadow is active for the scope.
    """
    check_scope(scope)
    at = now_us()
    with db.write() as cur:
        rev_id = _shadow_row(db, cur, scope)
        if rev_id is None:
            raise LookupError(f"no shadow policy is active for {scope}")
        cur.execute(db.sql("DELETE FROM policy_assignments WHERE scope = :scope"), {"scope": PREFIX + scope})
        append(db, cur, [_event("policy.shadow_cleared", at, scope, None, by, policy_revision=rev_id)])
        db.notify(cur, "policy")
    return rev_id


def promote(db: Database, *, scope: str, by: str | None) -> Revision:
    """Make the scope's shadow its enforced revision and empty the shadow slot, in one transaction.

    Records `policy.activated` (as `_policies.activate` does) and `policy.shadow_cleared`.

    Raises:
        LookupError: No shadow is active for the scope.
        NotCompiled: The shadow no longer compiles (nothing changes).
    """
    check_scope(scope)
    with db.write() as cur:
        rev_id = _shadow_row(db, cur, scope)
        if rev_id is None:
            raise LookupError(f"no shadow policy is active for {scope}; there is nothing to promote")
        revision = policies._get(db, cur, rev_id)
        if revision is None:
            raise LookupError(f"the shadow of {scope} names revision {rev_id}, which is not stored")
        compile_revision(revision, "promoted")
        policies.assign(db, cur, revision, scope=scope, by=by)
        cur.execute(db.sql("DELETE FROM policy_assignments WHERE scope = :scope"), {"scope": PREFIX + scope})
        append(
            db,
            cur,
            [_event("policy.shadow_cleared", now_us(), scope, None, by, policy_revision=rev_id, promoted=True)],
        )
    return revision


def resolve_shadow(db: Database, *, agent: str | None, environment: str) -> Revision | None:
    """The revision decided in shadow for an agent in an environment (agent > environment > default)."""
    order = [*([f"agent:{agent}"] if agent else []), f"environment:{environment}", "default"]
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT scope, revision_id FROM policy_assignments WHERE scope IN (:a, :e, :d)"),
            {"a": PREFIX + order[0], "e": PREFIX + f"environment:{environment}", "d": PREFIX + "default"},
        )
        active = dict(cur.fetchall())
    for scope in order:
        if PREFIX + scope in active:
            return policies.get(db, active[PREFIX + scope])
    return None


def shadows(db: Database) -> list[ShadowAssignment]:
    """Every shadow activation: the default first, then environments, then agents."""
    with db.read() as cur:
        cur.execute(
            db.sql(
                "SELECT scope, revision_id, activated_at_us, activated_by FROM policy_assignments"
                " WHERE scope LIKE :shadow"
            ),
            {"shadow": PREFIX + "%"},
        )
        found = [ShadowAssignment(row[0].removeprefix(PREFIX), *row[1:]) for row in cur.fetchall()]
    rank = {"default": 0, "environment": 1, "agent": 2}
    return sorted(found, key=lambda a: (rank.get(a.scope.partition(":")[0], 3), a.scope))
