"""The current session, on contextvars: safe under asyncio tasks and threads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from ._names import checked_name

if TYPE_CHECKING:
    from ._guard._tickets import Approved

_SESSION: ContextVar[str | None] = ContextVar("clearance_session", default=None)
_USER: ContextVar[str | None] = ContextVar("clearance_user", default=None)
APPROVAL: ContextVar[Approved | None] = ContextVar("clearance_approval", default=None)


def current_approval() -> Approved | None:
    """The approval the running tool call was approved under: who, their note, edited arguments.

    None outside a guarded tool's body, and in calls that needed no approval.
    """
    return APPROVAL.get()


def get_user() -> str | None:
    """The person the agent acts for here (set by `session(user=...)`), or None."""
    return _USER.get()


def get_session() -> str | None:
    """The session id calls are recorded under here, or None (the process's default session)."""
    return _SESSION.get()


def set_session(session_id: str | None) -> Token[str | None]:
    """Record calls in this context under `session_id`; returns a token for `reset_session`."""
    if session_id is not None:
        session_id = checked_name(session_id, "a session id")
    return _SESSION.set(session_id)


def reset_session(token: Token[str | None]) -> None:
    """Undo a `set_session`."""
    _SESSION.reset(token)


@contextmanager
def session(session_id: str | None = None, *, user: str | None = None) -> Iterator[str]:
    """Group the calls made inside the block into one session (a new id when none is given).

    `user` names the person the agent acts for: recorded with every approval it requests, and
    never allowed to approve them. Works in sync and async code; each asyncio task and thread
    sees its own session.

    Yields:
        The session id.
    """
    if user is not None:
        user = checked_name(user, "a user")
    sid = session_id or f"ses_{uuid.uuid4().hex}"
    token = set_session(sid)
    user_token = _USER.set(user) if user is not None else None
    try:
        yield sid
    finally:
        if user_token is not None:
            _USER.reset(user_token)
        _SESSION.reset(token)
