"""People: argon2id password hashes, roles, and sign-in sessions (cookie token + CSRF token)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._clock import now_us
from ._db import Database

ROLES = ("approver", "admin")
SESSION_SECONDS = 12 * 3600
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")
_FIELDS = ("id", "username", "password_hash", "roles", "created_at_us", "disabled_at_us")


@dataclass(frozen=True)
class User:
    """A person (never their password hash)."""

    id: str
    username: str
    roles: tuple[str, ...]
    created_at_us: int
    disabled_at_us: int | None


def _hasher() -> Any:
    from argon2 import PasswordHasher  # the server extra

    return PasswordHasher()


def _user(row: Sequence[Any]) -> User:
    r = dict(zip(_FIELDS, row, strict=True))
    return User(r["id"], r["username"], tuple(r["roles"].split(",")), r["created_at_us"], r["disabled_at_us"])


def create(db: Database, username: str, password: str, roles: Iterable[str]) -> User:
    """Create a user.

    Raises:
        ValueError: A bad username, a password under 12 characters, an unknown role, or a
            username that is taken.
    """
    chosen = tuple(dict.fromkeys(roles))
    if not _USERNAME.match(username):
        raise ValueError("a username is 1-200 letters, digits or . _ @ -, starting with a letter or digit")
    if len(password) < 12:
        raise ValueError("a password needs at least 12 characters")
    if not chosen or any(r not in ROLES for r in chosen):
        raise ValueError(f"roles must be some of {', '.join(ROLES)}")
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
    return _user([row[f] for f in _FIELDS])


def listing(db: Database) -> list[User]:
    """Every user."""
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM users ORDER BY username"))
        return [_user(r) for r in cur.fetchall()]


def verify(db: Database, username: str, password: str) -> User | None:
    """The user, when the password is theirs and they are not disabled."""
    from argon2.exceptions import InvalidHashError, VerificationError

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
