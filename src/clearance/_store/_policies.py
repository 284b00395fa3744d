"""Policy revisions on the store: immutable, content-addressed; activation per scope.

A scope is `default`, `environment:<name>` or `agent:<name>`; an agent's policy is its agent
assignment, else its environment's, else the default. Activation replaces the assignment and
appends a `policy.activated` event in the same transaction, so the chain records every change.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._clock import now_us
from ..errors import PolicyError, PolicyProblem
from ..policy import Policy, parse_policy
from ._db import Database
from ._events import append, make_event

_FIELDS = ("id", "content_hash", "source", "text", "author", "parent", "created_at_us", "status", "problems")


@dataclass(frozen=True)
class Revision:
    """A stored policy revision.

    Attributes:
        id: `rev_` + the first 12 hex digits of its content hash.
        content_hash: SHA-256 of its text.
        source: The file name it came from, if any.
        text: The policy as written.
        author: Who created it.
        parent: The newest revision when it was created.
        created_at_us: When.
        status: `valid`, or `rejected` (a draft that never validated; it cannot be activated).
        problems: For a rejected draft, every problem, located.
    """

    id: str
    content_hash: str
    source: str
    text: str
    author: str | None
    parent: str | None
    created_at_us: int
    status: str
    problems: tuple[PolicyProblem, ...]


def _from_row(row: Sequence[Any]) -> Revision:
    r = dict(zip(_FIELDS, row, strict=True))
    problems = tuple(PolicyProblem(**p) for p in json.loads(r["problems"] or "[]"))
    return Revision(
        id=r["id"],
        content_hash=r["content_hash"],
        source=r["source"],
        text=r["text"],
        author=r["author"],
        parent=r["parent"],
        created_at_us=r["created_at_us"],
        status=r["status"],
        problems=problems,
    )


def scope_of(agent: str | None = None, environment: str | None = None) -> str:
    """The scope string for an assignment."""
    if agent and environment:
        raise ValueError("assign a policy to an agent or to an environment, not both")
    return f"agent:{agent}" if agent else f"environment:{environment}" if environment else "default"


def create(db: Database, text: str, *, source: str, author: str | None) -> Revision:
    """Store `text` as a revision (or return the existing one with the same content).

    A policy that does not validate is stored as a rejected draft with its problems.
    """
    # Ids and hashes depend on the text alone, valid or not (as `Policy.revision` does).
    digest = hashlib.sha256(text.encode()).hexdigest()
    rev_id, status, problems = f"rev_{digest[:12]}", "valid", None
    try:
        parse_policy(text, source)
    except PolicyError as exc:
        status, problems = "rejected", json.dumps([dataclasses.asdict(p) for p in exc.problems])
    with db.write() as cur:
        existing = _get(db, cur, rev_id)
        if existing is not None:
            return existing
        cur.execute(db.sql("SELECT id FROM policy_revisions ORDER BY created_at_us DESC LIMIT 1"))
        newest = cur.fetchone()
        row = {
            "id": rev_id,
            "content_hash": digest,
            "source": source,
            "text": text,
            "author": author,
            "parent": newest[0] if newest else None,
            "created_at_us": now_us(),
            "status": status,
            "problems": problems,
        }
        cur.execute(
            db.sql(
                f"INSERT INTO policy_revisions ({', '.join(_FIELDS)}) VALUES ({', '.join(':' + f for f in _FIELDS)})"
            ),
            row,
        )
    return _from_row([row[f] for f in _FIELDS])


def _get(db: Database, cur: Any, rev_id: str) -> Revision | None:
    cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM policy_revisions WHERE id = :id"), {"id": rev_id})
    row = cur.fetchone()
    return _from_row(row) if row else None


def get(db: Database, rev_id: str) -> Revision | None:
    """The revision with this id, or None."""
    with db.read() as cur:
        return _get(db, cur, rev_id)


def listing(db: Database) -> list[Revision]:
    """Every revision, newest first."""
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM policy_revisions ORDER BY created_at_us DESC"))
        return [_from_row(r) for r in cur.fetchall()]


def diff(old: Revision, new: Revision) -> str:
    """A unified diff from `old` to `new`."""
    return "".join(
        difflib.unified_diff(
            old.text.splitlines(keepends=True), new.text.splitlines(keepends=True), fromfile=old.id, tofile=new.id
        )
    )


def activate(db: Database, rev_id: str, *, scope: str, by: str | None) -> Revision:
    """Make `rev_id` the active revision for `scope`, atomically, and record it in the chain.

    Raises:
        LookupError: No such revision.
        ValueError: It is a rejected draft.
    """
    with db.write() as cur:
        revision = _get(db, cur, rev_id)
        if revision is None:
            raise LookupError(f"no policy revision has the id {rev_id!r}")
        if revision.status != "valid":
            raise ValueError(f"revision {rev_id} is a rejected draft and cannot be activated")
        assign(db, cur, revision, scope=scope, by=by)
    return revision


def assign(db: Database, cur: Any, revision: Revision, *, scope: str, by: str | None) -> None:
    """Inside a write transaction: make `revision` the one active for `scope` and record `policy.activated`."""
    at = now_us()
    cur.execute(db.sql("DELETE FROM policy_assignments WHERE scope = :scope"), {"scope": scope})
    cur.execute(
        db.sql(
            "INSERT INTO policy_assignments (scope, revision_id, activated_at_us, activated_by)"
            " VALUES (:scope, :rev, :at, :by)"
        ),
        {"scope": scope, "rev": revision.id, "at": at, "by": by},
    )
    kind, _, name = scope.partition(":")
    fields = {
        "agent": name if kind == "agent" else "*",
        "environment": name if kind == "environment" else "*",
        "session": None,
        "policy_revision": revision.id,
        "source": revision.source,
        "scope": scope,
        "by": by,
    }
    append(db, cur, [make_event("policy.activated", at, fields)])
    db.notify(cur, "policy")


def store_compiled(db: Database, cur: Any, policy: Policy, *, author: str | None) -> None:
    """Insert a compiled policy as a revision, in `cur`'s transaction, unless one has its content."""
    cur.execute(db.sql("SELECT id FROM policy_revisions WHERE content_hash = :h"), {"h": policy.content_hash})
    if cur.fetchone() is None:
        cur.execute(
            db.sql(
                "INSERT INTO policy_revisions (id, content_hash, source, text, author, parent, created_at_us)"
                " VALUES (:id, :h, :source, :text, :author, NULL, :at)"
            ),
            {
                "id": policy.revision,
                "h": policy.content_hash,
                "source": policy.source,
                "text": policy.source_text,
                "author": author,
                "at": now_us(),
            },
        )


def activate_for_agent(db: Database, policy: Policy, *, agent: str, environment: str, author: str | None) -> None:
    """Store the policy an embedded agent runs (once) and record its activation for that agent.

    The revision is inserted only if no revision has its content; a `policy.activated` event is
    appended only when the agent's last activation was of another revision.
    """
    with db.write() as cur:
        store_compiled(db, cur, policy, author=author)
        cur.execute(
            db.sql(
                "SELECT body FROM events WHERE agent = :agent AND kind = 'policy.activated' ORDER BY seq DESC LIMIT 1"
            ),
            {"agent": agent},
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
            append(db, cur, [make_event("policy.activated", now_us(), fields)])


def previous(db: Database, scope: str) -> str | None:
    """The revision that was active for `scope` before the current one, from the audit log."""
    return previous_revisions(db).get(scope)


def previous_revisions(db: Database) -> dict[str, str]:
    """For each scope with one, the revision active before its current one (what rollback activates)."""
    current: dict[str, str] = {}
    earlier: dict[str, str] = {}
    with db.read() as cur:
        cur.execute(db.sql("SELECT body FROM events WHERE kind = 'policy.activated' ORDER BY seq DESC"))
        for (body,) in cur:
            data = json.loads(body)
            scope, rev = data.get("scope"), data.get("policy_revision")
            if not isinstance(scope, str) or not isinstance(rev, str) or scope in earlier:
                continue  # an embedded agent's own activation has no scope
            if scope not in current:
                current[scope] = rev
            elif rev != current[scope]:
                earlier[scope] = rev
    return earlier


def resolve(db: Database, *, agent: str | None, environment: str) -> Revision | None:
    """The revision active for an agent in an environment (agent > environment > default)."""
    # Without an agent, the environment's assignment still comes before the default.
    order = [f"agent:{agent}" if agent else f"environment:{environment}", f"environment:{environment}", "default"]
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT scope, revision_id FROM policy_assignments WHERE scope IN (:a, :e, :d)"),
            dict(zip("aed", order, strict=True)),
        )
        active = dict(cur.fetchall())
        for scope in order:
            if scope in active:
                return _get(db, cur, active[scope])
    return None


@dataclass(frozen=True)
class Assignment:
    """Which revision is active for a scope, since when and by whom."""

    scope: str
    revision_id: str
    activated_at_us: int
    activated_by: str | None


def assignments(db: Database) -> list[Assignment]:
    """Every active assignment: the default first, then environments, then agents."""
    with db.read() as cur:
        # Shadow policies share the table under `shadow:<scope>` (`_store/_shadow.py`); they are not active.
        cur.execute(
            db.sql(
                "SELECT scope, revision_id, activated_at_us, activated_by FROM policy_assignments"
                " WHERE scope NOT LIKE :shadow"
            ),
            {"shadow": "shadow:%"},
        )
        found = [Assignment(*row) for row in cur.fetchall()]
    rank = {"default": 0, "environment": 1, "agent": 2}
    return sorted(found, key=lambda a: (rank.get(a.scope.partition(":")[0], 3), a.scope))
