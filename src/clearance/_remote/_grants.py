"""The grants a remote agent holds: calls they cover are let through without asking the server.

The snapshot (`v=2`) carries the agent's live grants. A grant without a call or total limit
covers a call exactly as the server's `grants.use` would (same tool, scope, every rule that
asked among the grant's, its constraints, not expired by this agent's clock), so the agent
decides it on its own. A grant with a limit is counted on the server, atomically: the agent
never uses one, so such calls still go to `POST /v1/check`, and fail closed when the server
cannot be reached.

A grant the agent cannot read whole (a field missing, of the wrong type, constraints that do
not parse) is dropped: the calls it would cover go to the server, which decides them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .._text import text_problem
from .._wire._snapshot import SnapshotGrant
from ..policy._model import ParamSpec
from ..policy._params import check as check_params

log = logging.getLogger("clearance.remote")
_ID = re.compile(r"grt_[0-9a-f]{32}")


@dataclass(frozen=True)
class HeldGrant:
    """A grant this agent may use on its own: no call or total limit."""

    id: str
    scope: str
    session: str | None
    requester: str | None
    rule_ids: frozenset[str]
    constraints: Mapping[str, ParamSpec]
    granted_by: str
    created_at_us: int
    expires_at_us: int

    def covers(
        self, *, session: str, requester: str | None, rule_ids: Sequence[str], args: Mapping[str, Any], at: int
    ) -> bool:
        """Whether it lets this call of its tool through now (`at`, on this agent's clock)."""
        if self.expires_at_us <= at:
            return False
        if self.scope == "session" and self.session != session:
            return False
        if self.scope == "requester" and (requester is None or self.requester != requester):
            return False
        if not self.rule_ids.issuperset(rule_ids):
            return False
        return not (self.constraints and check_params(self.constraints, "allow", args))


class HeldGrants:
    """An agent's usable grants, by tool, oldest first (as the server picks). Immutable.

    Attributes:
        count: How many grants are held.
        counted: The tools with a grant that has a limit (counted, so used on the server only).
        dropped: How many grants of the snapshot could not be read (never used).
    """

    def __init__(
        self, held: Iterable[tuple[str, HeldGrant]] = (), *, counted: Iterable[str] = (), dropped: int = 0
    ) -> None:
        by_tool: dict[str, list[HeldGrant]] = {}
        for tool, grant in held:
            by_tool.setdefault(tool, []).append(grant)
        self._by_tool = {t: tuple(sorted(gs, key=lambda g: (g.created_at_us, g.id))) for t, gs in by_tool.items()}
        self.count = sum(len(gs) for gs in self._by_tool.values())
        self.counted = frozenset(counted)
        self.dropped = dropped

    def counts(self, tool: str) -> bool:
        """Whether a grant with a limit (which only the server can use) names this tool."""
        return tool in self.counted

    def covering(
        self,
        tool: str,
        *,
        session: str,
        requester: str | None,
        rule_ids: Sequence[str],
        args: Mapping[str, Any],
        at: int,
    ) -> HeldGrant | None:
        """The oldest held grant that covers this call now, or None (the server decides it)."""
        for grant in self._by_tool.get(tool, ()):
            if requester is not None and grant.granted_by.removeprefix("user:") == requester:
                continue  # the person who granted may not approve their own calls
            if grant.covers(session=session, requester=requester, rule_ids=rule_ids, args=args, at=at):
                return grant
        return None

    def ids(self) -> list[str]:
        """The ids of the held grants."""
        return [g.id for gs in self._by_tool.values() for g in gs]

    @classmethod
    def read(cls, items: object) -> HeldGrants:
        """The grants of a snapshot's `grants` field (absent in v1: none)."""
        if items is None:
            return cls()
        if not isinstance(items, list):
            log.warning("the snapshot's grants are not a list; none is used here")
            return cls()
        held: list[tuple[str, HeldGrant]] = []
        counted: set[str] = set()
        dropped = 0
        for item in items:
            try:
                wire = SnapshotGrant.model_validate(item)
                grant = _held(wire)
            except (ValidationError, ValueError, TypeError, RecursionError):
                dropped += 1
                continue
            if grant is None:
                counted.add(wire.tool)
            else:
                held.append((wire.tool, grant))
        if dropped:
            log.warning("%d grant(s) of the snapshot could not be read; their calls are decided on the server", dropped)
        return cls(held, counted=counted, dropped=dropped)


def _held(g: SnapshotGrant) -> HeldGrant | None:
    """The grant as this agent uses it; None for one with a limit. ValueError for one it cannot read."""
    if not _ID.fullmatch(g.id):
        raise ValueError("not a grant id")
    if g.max_calls is not None or g.max_total is not None or g.total_arg is not None:
        return None
    texts = [g.tool, g.granted_by, g.session or "", g.requester or "", *g.rule_ids, *g.constraints]
    if any(text_problem(t) for t in texts):
        raise ValueError("text no store keeps")  # its records could not be written
    if g.scope == "session" and not g.session:
        raise ValueError("a session grant names no session")
    if g.scope == "requester" and not g.requester:
        raise ValueError("a requester grant names no person")
    constraints = {}
    for name, spec in g.constraints.items():
        if not isinstance(spec, dict):
            raise ValueError(f"constraint {name[:50]!r} is not an object")
        constraints[name] = ParamSpec.model_validate(spec)
    return HeldGrant(
        id=g.id,
        scope=g.scope,
        session=g.session,
        requester=g.requester,
        rule_ids=frozenset(g.rule_ids),
        constraints=constraints,
        granted_by=g.granted_by,
        created_at_us=g.created_at_us,
        expires_at_us=g.expires_at_us,
    )
