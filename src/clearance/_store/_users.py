"""People: argon2id password hashes, roles, and sign-in sessions (cookie token + CSRF token)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._clock import now_us
from .._text import text_problem
from . import _channels as channels
from ._db import Database
from ._events import Event, append, make_event
from ._kinds import Kind

ROLES = ("approver", "admin")  # what the server grants; any other role is an approver group
_ROLE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SESSION_SECONDS = 12 * 3600
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")
_FIELDS = ("id", "username", "password_hash", "roles", "created_at_us", "disabled_at_us")
_UNSET: Any = object()


@dataclass(frozen=True)
class User:
    """A person (never their password hash).

    Attributes:
        identities: Who they are in each approval channel (`{"slack": "U…", "email": "a@b"}`);
            read by `get`, `listing` and `update`, left empty by the sign-in checks.
    """

    id: str
    username: str
    roles: tuple[str, ...]
    created_at_us: int
    disabled_at_us: int | None
    identities: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def slack_user_id(self) -> str | None:
        """Their Slack user id, if mapped."""
        return self.identities.get("slack")


def _hasher() -> Any:
    from argon2 import PasswordHasher  # the server extra

    return PasswordHasher()


def _user(row: Sequence[Any], identities: Mapping[str, str] | None = None) -> User:
    r = dict(zip(_FIELDS, row, strict=True))
    return User(
        r["id"], r["username"], tuple(r["roles"].split(",")), r["created_at_us"], r["disabled_at_us"], identities or {}
    )


def _users(db: Database, cur: Any, rows: Sequence[Sequence[Any]]) -> list[User]:
    """People from their rows, with their identities (inside the same transaction)."""
    found = channels.identities_of(db, cur, [r[0] for r in rows])
    return [_user(r, found[r[0]]) for r in rows]


def assignable_role(name: str) -> bool:
    """Whether a person can hold the role `name` (lower case: letters, digits, '.', '_', '-')."""
    return name != "agent" and _ROLE.match(name) is not None


def _checked_roles(roles: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(roles))
    if not chosen:
        raise ValueError(f"give at least one role: {', '.join(ROLES)}, or an approver group")
    if "agent" in chosen:
        raise ValueError("'agent' is a scope of API keys, never a person's role")
    bad = [r for r in chosen if not _ROLE.match(r)]
    if bad:
        raise ValueError(
            f"{bad[0]!r} is not a role: use {', '.join(ROLES)} or a group name"
            " (lower-case letters, digits, '.', '_' or '-', like support-lead)"
        )
    return chosen


def _checked_password(password: str) -> str:
    if len(password) < 12:
        raise ValueError("a password needs at least 12 characters")
    if (problem := text_problem(password)) is not None:
        raise ValueError(f"the password {problem}")
    return password


def create(db: Database, username: str, password: str, roles: Iterable[str], *, by: str | None = None) -> User:
    """Create a user.

    Raises:
        ValueError: A bad username, a password under 12 characters, an unknown role, or a
            username that is taken.
    """
    if not _USERNAME.fullmatch(username):  # match() would let a final newline through
        raise ValueError("a username is 1-200 letters, digits or . _ @ -, starting with a letter or digit")
    _checked_password(password)
    chosen = _checked_roles(roles)
    row = {
        "id": f"usr_{secrets.token_hex(8)}",
        "username": username,
        "password_hash": _hasher().hash(password),
        "roles": ",".join(chosen),
        "created_at_us": now_us(),
        "disabled_at_us": None,
    }
    with db.write() as cur:
        cur.execute(db.sql("SELECT 1 FROM users WHERE username = :u"), {"u": username})
        if cur.fetchone():
            raise ValueError(f"the username {username!r} is taken")
        cur.execute(
            db.sql(f"INSERT INTO users ({', '.join(_FIELDS)}) VALUES ({', '.join(':' + f for f in _FIELDS)})"), row
        )
        user = _user([row[f] for f in _FIELDS])
        append(db, cur, [_event("user.created", user, by, {"roles": list(user.roles)})])
    return user


def get(db: Database, username: str) -> User | None:
    """One user by username."""
    if text_problem(username) is not None:  # nobody is called that; PostgreSQL could not even look
        return None
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM users WHERE username = :u"), {"u": username})
        row = cur.fetchone()
        return _users(db, cur, [row])[0] if row else None


def update(
    db: Database,
    username: str,
    *,
    roles: Iterable[str] | None = None,
    password: str | None = None,
    disabled: bool | None = None,
    identities: Mapping[str, str | None] | None = None,
    slack_user_id: str | None = _UNSET,
    by: str | None = None,
) -> User:
    """Change a user's roles, password, channel identities or whether they may sign in.

    A new password or disabling ends every session of theirs. The last enabled admin cannot be
    disabled or lose the admin role (nobody could sign in to undo it). `identities` sets who they
    are in each approval channel (None removes one; the channel checks its form before);
    `slack_user_id` is its `slack` entry.

    Raises:
        LookupError: No such user.
        ValueError: An unknown role, a short password, the last enabled admin, or an identity
            someone else has.
    """
    wanted = dict(identities or {})
    if slack_user_id is not _UNSET:
        wanted["slack"] = slack_user_id
    if text_problem(username) is not None:
        raise LookupError(f"no user is called {ascii(username)}")
    new_roles = _checked_roles(roles) if roles is not None else None
    new_hash = _hasher().hash(_checked_password(password)) if password is not None else None
    with db.write() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM users WHERE username = :u"), {"u": username})
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"no user is called {username!r}")
        user = _users(db, cur, [row])[0]
        after_roles = new_roles if new_roles is not None else user.roles
        after_disabled = disabled if disabled is not None else user.disabled_at_us is not None
        if "admin" in user.roles and user.disabled_at_us is None and ("admin" not in after_roles or after_disabled):
            cur.execute(db.sql("SELECT roles FROM users WHERE disabled_at_us IS NULL AND id != :id"), {"id": user.id})
            if not any("admin" in r[0].split(",") for r in cur.fetchall()):
                raise ValueError(f"{username} is the last enabled admin; make another admin first")
        changes: dict[str, Any] = {}
        if new_roles is not None and new_roles != user.roles:
            changes["roles"] = list(new_roles)
        if new_hash is not None:
            changes["password"] = "changed"  # that it changed; never the hash
        if after_disabled != (user.disabled_at_us is not None):
            changes["disabled"] = after_disabled
        moved = {c: x for c, x in wanted.items() if user.identities.get(c) != x}
        if moved:
            channels.set_identities(db, cur, user.id, moved)
            changes.update({"slack_user_id" if c == "slack" else f"identity.{c}": x for c, x in moved.items()})
        if not changes:
            return user
        now = now_us()
        cur.execute(
            db.sql(
                "UPDATE users SET roles = :roles, password_hash = COALESCE(:hash, password_hash),"
                " disabled_at_us = :disabled WHERE id = :id"
            ),
            {
                "roles": ",".join(after_roles),
                "hash": new_hash,
                "disabled": (user.disabled_at_us or now) if after_disabled else None,
                "id": user.id,
            },
        )
        if new_hash is not None or after_disabled:
            cur.execute(db.sql("DELETE FROM user_sessions WHERE user_id = :id"), {"id": user.id})
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM users WHERE id = :id"), {"id": user.id})
        updated = _users(db, cur, [cur.fetchone()])[0]
        append(db, cur, [_event("user.updated", updated, by, changes)])
    return updated


def by_identity(db: Database, channel: str, external_id: str) -> User | None:
    """The enabled person who is `external_id` in an approval channel, if any."""
    username = channels.person(db, channel, external_id)
    user = get(db, username) if username is not None else None
    return user if user is not None and user.disabled_at_us is None else None


def _event(kind: Kind, user: User, by: str | None, changes: dict[str, Any]) -> Event:
    """An audit record of an admin action on a person (never a password or its hash)."""
    fields = {"agent": "*", "environment": "*", "session": None, "username": user.username, "by": by, **changes}
    return make_event(kind, now_us(), fields)


def listing(db: Database) -> list[User]:
    """Every user."""
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM users ORDER BY username"))
        return _users(db, cur, cur.fetchall())


def verify(db: Database, username: str, password: str) -> User | None:
    """The user, when the password is theirs and they are not disabled."""
    from argon2.exceptions import InvalidHashError, VerificationError

    if text_problem(username) is not None or text_problem(password) is not None:
        _hasher().hash("an unusable password")  # as slow as a real check
        return None
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM users WHERE username = :u"), {"u": username})
        row = cur.fetchone()
    hasher = _hasher()
    if row is None:
        hasher.hash(password)  # as slow as a real check, so timing does not reveal who exists
        return None
    try:
        hasher.verify(row[2], password)
    except (VerificationError, InvalidHashError):
        return None
    user = _user(row)
    return None if user.disabled_at_us is not None else user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Database, user: User) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token). Only the cookie token's hash is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = now_us()
    with db.write() as cur:
        cur.execute(
            db.sql(
                "INSERT INTO user_sessions (token_hash, user_id, csrf_token, created_at_us, expires_at_us)"
                " VALUES (:h, :u, :c, :now, :exp)"
            ),
            {"h": _digest(token), "u": user.id, "c": csrf, "now": now, "exp": now + SESSION_SECONDS * 1_000_000},
        )
    return token, csrf


def session_user(db: Database, token: str) -> tuple[User, str] | None:
    """The signed-in user and the session's CSRF token, for a live session of an enabled user."""
    with db.read() as cur:
        cur.execute(
            db.sql(
                f"SELECT {', '.join('u.' + f for f in _FIELDS)}, s.csrf_token, s.expires_at_us FROM user_sessions s"
                " JOIN users u ON u.id = s.user_id WHERE s.token_hash = :h"
            ),
            {"h": _digest(token)},
        )
        row = cur.fetchone()
    if row is None or row[-1] <= now_us():
        return None
    user = _user(row[: len(_FIELDS)])
    return None if user.disabled_at_us is not None else (user, row[-2])


def end_session(db: Database, token: str) -> None:
    """Sign out."""
    with db.write() as cur:
        cur.execute(db.sql("DELETE FROM user_sessions WHERE token_hash = :h"), {"h": _digest(token)})
