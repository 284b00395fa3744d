"""Shadow activation on the store, on SQLite and PostgreSQL: scopes, compiling, clearing, promoting."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clearance._store import Database, EventFilter
from clearance._store import _policies as policies
from clearance._store import _shadow as shadows
from clearance._store._events import query, verify
from clearance._store._policies import Revision

from ._policies import ENFORCED, SHADOW, UNCOMPILABLE


def _kinds(db: Database, kind: str) -> list[dict[str, Any]]:
    return [e.body for e in query(db, EventFilter(kind=kind))]


def _stored_valid(db: Database, text: str) -> str:
    """A revision an older version stored as valid, which this version cannot compile."""
    with db.write() as cur:
        cur.execute(
            db.sql(
                "INSERT INTO policy_revisions (id, content_hash, source, text, author, parent, created_at_us, status)"
                " VALUES ('rev_0123456789ab', 'h', 'old.yaml', :text, 'old', NULL, 1, 'valid')"
            ),
            {"text": text},
        )
    return "rev_0123456789ab"


@pytest.fixture
def revs(db: Database) -> tuple[Revision, Revision]:
    enforced = policies.create(db, ENFORCED, source="enforced.yaml", author="ops")
    shadow = policies.create(db, SHADOW, source="shadow.yaml", author="ops")
    policies.activate(db, enforced.id, scope="default", by="ops")
    return enforced, shadow


def test_shadow_resolves_agent_over_environment_over_default(db: Database, revs: tuple[Revision, Revision]) -> None:
    enforced, shadow = revs
    other = policies.create(db, SHADOW + "\n# another\n", source="other.yaml", author="ops")
    assert shadows.resolve_shadow(db, agent="bot", environment="live") is None
    shadows.activate_shadow(db, shadow.id, scope="default", by="ops")
    shadows.activate_shadow(db, other.id, scope="environment:live", by="ops")
    assert shadows.resolve_shadow(db, agent="bot", environment="test").id == shadow.id  # type: ignore[union-attr]
    assert shadows.resolve_shadow(db, agent="bot", environment="live").id == other.id  # type: ignore[union-attr]
    shadows.activate_shadow(db, enforced.id, scope="agent:bot", by="ops")
    assert shadows.resolve_shadow(db, agent="bot", environment="live").id == enforced.id  # type: ignore[union-attr]
    assert shadows.resolve_shadow(db, agent=None, environment="live").id == other.id  # type: ignore[union-attr]
    # The enforced assignments see none of it.
    assert [(a.scope, a.revision_id) for a in policies.assignments(db)] == [("default", enforced.id)]
    assert policies.resolve(db, agent="bot", environment="live").id == enforced.id  # type: ignore[union-attr]
    assert [(s.scope, s.revision_id) for s in shadows.shadows(db)] == [
        ("default", shadow.id),
        ("environment:live", other.id),
        ("agent:bot", enforced.id),
    ]
    activated = _kinds(db, "policy.shadow_activated")
    assert [(a["scope"], a["policy_revision"], a["by"]) for a in activated] == [
        ("default", shadow.id, "ops"),
        ("environment:live", other.id, "ops"),
        ("agent:bot", enforced.id, "ops"),
    ]
    assert activated[2]["agent"] == "bot" and activated[1]["environment"] == "live"
    assert verify(db).ok


def test_a_revision_that_does_not_compile_is_never_shadowed(db: Database, revs: tuple[Revision, Revision]) -> None:
    rev_id = _stored_valid(db, UNCOMPILABLE)
    with pytest.raises(shadows.NotCompiled) as caught:
        shadows.activate_shadow(db, rev_id, scope="environment:test", by="ops")
    assert str(caught.value).startswith(f"revision {rev_id} does not compile, so it cannot be activated in shadow: ")
    assert caught.value.problems and all(p.source == "old.yaml" for p in caught.value.problems)
    assert "old.yaml:7" in str(caught.value)  # located: the line of the broken condition
    assert shadows.shadows(db) == [] and _kinds(db, "policy.shadow_activated") == []


def test_a_rejected_draft_an_unknown_revision_or_a_bad_scope_is_refused(
    db: Database, revs: tuple[Revision, Revision]
) -> None:
    draft = policies.create(db, UNCOMPILABLE, source="draft.yaml", author="ops")
    assert draft.status == "rejected"
    with pytest.raises(ValueError, match="rejected draft"):
        shadows.activate_shadow(db, draft.id, scope="default", by="ops")
    with pytest.raises(LookupError, match="rev_ffffffffffff"):
        shadows.activate_shadow(db, "rev_ffffffffffff", scope="default", by="ops")
    for scope in ("shadow:default", "agent:", "team:x", "", "environment"):
        with pytest.raises(ValueError, match="is not a scope"):
            shadows.activate_shadow(db, revs[1].id, scope=scope, by="ops")
    assert shadows.shadows(db) == []


def test_clear_records_it_and_a_second_clear_says_there_is_none(db: Database, revs: tuple[Revision, Revision]) -> None:
    shadows.activate_shadow(db, revs[1].id, scope="environment:test", by="ops")
    assert shadows.clear_shadow(db, scope="environment:test", by="ann") == revs[1].id
    assert shadows.resolve_shadow(db, agent="bot", environment="test") is None
    cleared = _kinds(db, "policy.shadow_cleared")
    assert [(c["scope"], c["policy_revision"], c["by"]) for c in cleared] == [("environment:test", revs[1].id, "ann")]
    with pytest.raises(LookupError, match="no shadow policy is active for environment:test"):
        shadows.clear_shadow(db, scope="environment:test", by="ann")


def test_promote_makes_the_shadow_enforced_and_empties_the_slot_at_once(
    db: Database, revs: tuple[Revision, Revision]
) -> None:
    enforced, shadow = revs
    shadows.activate_shadow(db, shadow.id, scope="environment:test", by="ops")
    before = len(_kinds(db, "policy.activated"))
    promoted = shadows.promote(db, scope="environment:test", by="lead")
    assert promoted.id == shadow.id
    assert policies.resolve(db, agent="bot", environment="test").id == shadow.id  # type: ignore[union-attr]
    assert policies.resolve(db, agent="bot", environment="live").id == enforced.id  # type: ignore[union-attr]
    assert shadows.resolve_shadow(db, agent="bot", environment="test") is None
    activated = _kinds(db, "policy.activated")[before:]
    assert [(a["scope"], a["policy_revision"], a["by"], a["environment"]) for a in activated] == [
        ("environment:test", shadow.id, "lead", "test")
    ]
    cleared = _kinds(db, "policy.shadow_cleared")
    assert [(c["policy_revision"], c.get("promoted")) for c in cleared] == [(shadow.id, True)]
    # One transaction: the activation and the clearing are adjacent in the chain.
    seqs = [e.seq for e in query(db, EventFilter()) if e.body["kind"] in ("policy.activated", "policy.shadow_cleared")]
    assert seqs[-1] == seqs[-2] + 1
    # Rollback knows what was enforced before the promotion.
    assert policies.previous(db, "environment:test") is None  # nothing was enforced for it before
    with pytest.raises(LookupError, match="nothing to promote"):
        shadows.promote(db, scope="environment:test", by="lead")
    assert verify(db).ok


def test_a_promotion_that_fails_changes_nothing(db: Database, revs: tuple[Revision, Revision]) -> None:
    enforced, _ = revs
    rev_id = _stored_valid(db, UNCOMPILABLE)
    # A shadow row written by a version whose compiler accepted the revision.
    with db.write() as cur:
        cur.execute(
            db.sql(
                "INSERT INTO policy_assignments (scope, revision_id, activated_at_us, activated_by)"
                " VALUES ('shadow:default', :rev, 1, 'old')"
            ),
            {"rev": rev_id},
        )
    with pytest.raises(shadows.NotCompiled, match="cannot be promoted"):
        shadows.promote(db, scope="default", by="lead")
    assert policies.resolve(db, agent="bot", environment="test").id == enforced.id  # type: ignore[union-attr]
    assert [s.revision_id for s in shadows.shadows(db)] == [rev_id]
    assert len(_kinds(db, "policy.activated")) == 1 and _kinds(db, "policy.shadow_cleared") == []


def test_an_enforced_scope_named_like_a_shadow_stays_apart(db: Database, revs: tuple[Revision, Revision]) -> None:
    enforced, shadow = revs
    # An agent called "shadow:default" has the scope agent:shadow:default, never shadow:default.
    policies.activate(db, shadow.id, scope=policies.scope_of("shadow:default", None), by="ops")
    assert shadows.resolve_shadow(db, agent="bot", environment="test") is None
    assert shadows.shadows(db) == []
    body = json.loads(json.dumps([a.scope for a in policies.assignments(db)]))
    assert body == ["default", "agent:shadow:default"]
