"""The snapshot an agent decides from, read from the store with the ETag that says when it changed.

Version 1 is the enforced revision; its ETag is the revision id, as agents before grants expect.
Version 2 adds the agent's live grants of kind `calls` and its shadow revision; its ETag is the
revision id and a digest of both, so it changes when a grant is given, revoked, used up or
expires, or a shadow is activated or cleared. A v1 ETag never equals a v2 one, so an agent that
sends one to the other version is answered at once and learns the right one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .._canonical import canonical_json
from .._store import Database
from .._store import _grants as grants
from .._store import _policies as policies
from .._store._policies import Revision
from .._store._shadow import resolve_shadow
from .._wire._snapshot import ShadowSnapshot, Snapshot, SnapshotGrant

MOST_GRANTS = 500  # an agent decides locally with its newest grants; any others are used on the server


@dataclass(frozen=True)
class Read:
    """What the store holds for an agent now, and its ETag."""

    revision: Revision
    etag: str
    grants: tuple[SnapshotGrant, ...] | None = None
    shadow: Revision | None = None

    def snapshot(self) -> Snapshot:
        """The answer's body."""
        rev, shadow = self.revision, self.shadow
        return Snapshot(
            revision=rev.id,
            content_hash=rev.content_hash,
            source=rev.source,
            text=rev.text,
            grants=list(self.grants) if self.grants is not None else None,
            shadow=(
                ShadowSnapshot(
                    revision=shadow.id, content_hash=shadow.content_hash, source=shadow.source, text=shadow.text
                )
                if shadow is not None
                else None
            ),
        )


def read(db: Database, *, agent: str | None, environment: str, version: int) -> Read | None:
    """The snapshot of `version` for an agent in an environment, or None when no policy is active."""
    rev = policies.resolve(db, agent=agent, environment=environment)
    if rev is None:
        return None
    if version == 1:
        return Read(rev, rev.id)
    held = tuple(sorted(live_grants(db, agent, environment), key=lambda g: g.id)) if agent is not None else ()
    shadow = resolve_shadow(db, agent=agent, environment=environment)
    digest = hashlib.sha256(
        canonical_json({"grants": [g.model_dump() for g in held], "shadow": shadow.id if shadow else None}).encode()
    ).hexdigest()
    return Read(rev, f"{rev.id}.{digest[:20]}", held, shadow)


def live_grants(db: Database, agent: str, environment: str) -> list[SnapshotGrant]:
    """The agent's newest live grants of kind `calls` in its environment (at most `MOST_GRANTS`)."""
    found = [
        g
        for g in grants.listing(db, agent=agent, live=True, limit=MOST_GRANTS * 2)
        if g.environment == environment  # a staging grant never lets production calls through
    ]
    return [
        SnapshotGrant.model_validate(
            {
                "id": g.id,
                "scope": g.scope,
                "session": g.session,
                "requester": g.requester,
                "tool": g.tool,
                "rule_ids": list(g.rule_ids),
                "constraints": g.constraints,
                "max_calls": g.max_calls,
                "total_arg": g.total_arg,
                "max_total": str(g.max_total) if g.max_total is not None else None,
                "granted_by": g.granted_by,
                "created_at_us": g.created_at_us,
                "expires_at_us": g.expires_at_us,
            }
        )
        for g in found
        if g.kind == "calls" and g.tool
    ][:MOST_GRANTS]
