"""API keys: created with a random secret shown once, stored as the secret's SHA-256.

A key reads `clr_<environment>_<id>_<secret>`: the id finds the row, the secret is compared in
constant time against the stored hash. The secret has 256 bits of entropy, so a fast hash is
the right tool (a slow password hash protects guessable secrets; this one is not guessable).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from .._clock import now_us
from .._names import checked_name
from ._db import Database
from ._events import Event, append, make_event
from ._kinds import Kind

Scope = Literal["agent", "approver", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = ("agent", "approver", "admin", "metrics")
_KEY = re.compile(r"^clr_([a-z0-9-]{1,40})_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_ENVIRONMENT = re.compile(r"^[a-z0-9-]{1,40}$")
_FIELDS = (
    "id",
    "secret_hash",
    "name",
    "scopes",
    "agent",
    "environment",
    "created_at_us",
    "created_by",
    "revoked_at_us",
    "last_used_at_us",
)
_TOUCH_EVERY_US = 60_000_000  # last-used time is written at most once a minute per key


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never its secret).

    Attributes:
        id: Public id, part of the key.
        name: What it is for.
        scopes: agent, approver, admin and/or metrics (reads `/metrics`, nothing else).
        agent: The agent an agent-scoped key acts as.
        environment: test, live, …
        created_at_us: When it was created.
        created_by: Who created it.
        revoked_at_us: When it was revoked, if it was.
        last_used_at_us: When it was last used (to the minute).
    """

    id: str
    name: str
    scopes: tuple[Scope, ...]
    agent: str | None
    environment: str
    created_at_us: int
    created_by: str | None
    revoked_at_us: int | None
    last_used_at_us: int | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _from_row(row: Sequence[Any]) -> ApiKey:
    r = dict(zip(_FIELDS, row, strict=True))
    return ApiKey(
        id=r["id"],
        name=r["name"],
        scopes=tuple(r["scopes"].split(",")),
        agent=r["agent"],
        environment=r["environment"],
        created_at_us=r["created_at_us"],
        created_by=r["created_by"],
        revoked_at_us=r["revoked_at_us"],
        last_used_at_us=r["last_used_at_us"],
    )


def create(
    db: Database, *, name: str, scopes: Iterable[str], agent: str | None, environment: str, created_by: str | None
) -> tuple[ApiKey, str]:
    """Create a key; returns it and the full key text, which is never stored and cannot be shown again.

    Raises:
        ValueError: Unknown scope, no scope, an agent-scoped key without an agent, an agent name
            outside the boundary's rule for names, or a bad environment name.
    """
    chosen = tuple(dict.fromkeys(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(chosen) or 'none'}")
    if "agent" in chosen and not agent:
        raise ValueError("an agent-scoped key must name the agent it acts as")
    if agent is not None:
        agent = checked_name(agent, "the agent name")  # it names the agent on every record
    if not _ENVIRONMENT.match(environment):
        raise ValueError("an environment is 1-40 lower-case letters, digits or '-'")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = {
        "id": key_id,
        "secret_hash": _digest(secret),
        "name": name,
        "scopes": ",".join(chosen),
        "agent": agent,
        "environment": environment,
        "created_at_us": now_us(),
        "created_by": created_by,
        "revoked_at_us": None,
        "last_used_at_us": None,
    }
    key = _from_row([row[f] for f in _FIELDS])
    with db.write() as cur:
        cur.execute(
            db.sql(f"INSERT INTO api_keys ({', '.join(_FIELDS)}) VALUES ({', '.join(':' + f for f in _FIELDS)})"), row
        )
        append(db, cur, [_event("key.created", key, created_by)])
    return key, f"clr_{environment}_{key_id}_{secret}"


def listing(db: Database) -> list[ApiKey]:
    """Every key, newest first (revoked ones included)."""
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM api_keys ORDER BY created_at_us DESC"))
        return [_from_row(r) for r in cur.fetchall()]


def revoke(db: Database, key_id: str, *, by: str | None = None) -> ApiKey | None:
    """Revoke a key (idempotent); None when there is no such key."""
    with db.write() as cur:
        cur.execute(
            db.sql("UPDATE api_keys SET revoked_at_us = :now WHERE id = :id AND revoked_at_us IS NULL"),
            {"now": now_us(), "id": key_id},
        )
        changed = cur.rowcount == 1
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM api_keys WHERE id = :id"), {"id": key_id})
        row = cur.fetchone()
        key = _from_row(row) if row else None
        if key is not None and changed:
            append(db, cur, [_event("key.revoked", key, by)])
    return key


def _event(kind: Kind, key: ApiKey, by: str | None) -> Event:
    """An audit record of an admin action on a key (never its secret or hash)."""
    fields = {
        "agent": key.agent or "*",
        "environment": key.environment,
        "session": None,
        "key_id": key.id,
        "key_name": key.name,
        "scopes": list(key.scopes),
        "by": by,
    }
    return make_event(kind, now_us(), fields)


def authenticate(db: Database, presented: str) -> ApiKey | None:
    """The live key `presented` is, or None (malformed, unknown, wrong secret or revoked).

    Records the last use, at most once a minute per key.
    """
    m = _KEY.match(presented.strip())
    if m is None:
        return None
    environment, key_id, secret = m.groups()
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM api_keys WHERE id = :id"), {"id": key_id})
        row = cur.fetchone()
    if row is None:
        return None
    stored = dict(zip(_FIELDS, row, strict=True))
    if not hmac.compare_digest(stored["secret_hash"], _digest(secret)):
        return None
    key = _from_row(row)
    if key.revoked_at_us is not None or key.environment != environment:
        return None
    now = now_us()
    if key.last_used_at_us is None or now - key.last_used_at_us >= _TOUCH_EVERY_US:
        with db.write() as cur:
            cur.execute(db.sql("UPDATE api_keys SET last_used_at_us = :now WHERE id = :id"), {"now": now, "id": key_id})
        key = replace(key, last_used_at_us=now)
    return key
