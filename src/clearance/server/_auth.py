"""Who is calling: API keys (`X-API-Key`, or `Authorization: Bearer`) and their scopes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from .._store import Database
from .._store import _keys as keys
from .._store import _users as users
from .._store._keys import ApiKey, Scope
from ._caches import TTLCache, fingerprint
from ._errors import APIError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="clearance"'}


async def database(request: Request) -> Database:
    """The store the app opened at startup (async: no worker thread just to read app state)."""
    db: Database = request.app.state.db
    return db


def _presented(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


SESSION_COOKIE = "clearance_session"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _from_session(request: Request, db: Database, token: str) -> ApiKey:
    """A signed-in person, as a principal with their roles for scopes (never an agent)."""
    found = users.session_user(db, token)
    if found is None:
        raise APIError(401, "the session has ended; sign in again", headers=_CHALLENGE)
    user, csrf = found
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), csrf.encode()):
            raise APIError(403, "a signed-in request that changes something needs its X-CSRF-Token header")
    return ApiKey(
        id=user.id,
        name=f"user:{user.username}",
        scopes=user.roles,  # type: ignore[arg-type]
        agent=None,
        environment="*",
        created_at_us=user.created_at_us,
        created_by=None,
        revoked_at_us=None,
        last_used_at_us=None,
    )


def actor(key: ApiKey) -> str:
    """Who acted, for the audit log: `user:alice` or `key:<name>:<id>`."""
    return key.name if key.id.startswith("usr_") else f"key:{key.name}:{key.id}"


async def current_key(request: Request, db: Database = Depends(database)) -> ApiKey:  # noqa: B008
    """The caller: an API key, or a signed-in person (session cookie, CSRF-checked).

    A key seen in the last second is answered from memory; the store is read on a worker thread.

    Raises:
        APIError: 401 when no key or session is given, or it is unknown, malformed, revoked or
            ended; 403 for a signed-in change without its CSRF token, or a key that only reads
            `/metrics` (it acts as no agent, so no route may take it for one).
    """
    key = await _caller(request, db)
    if not key.id.startswith("usr_") and set(key.scopes) == {"metrics"}:
        raise APIError(403, "this key only reads /metrics")
    return key


async def metrics_reader(request: Request, db: Database = Depends(database)) -> ApiKey:  # noqa: B008
    """A caller who may read `/metrics`: a key with the `metrics` scope, or an admin.

    Raises:
        APIError: 401 as `current_key`; 403 for anyone else (an agent's key among them).
    """
    key = await _caller(request, db)
    if "admin" in key.scopes or (not key.id.startswith("usr_") and "metrics" in key.scopes):
        return key
    raise APIError(403, "this key lacks the 'metrics' scope")


async def _caller(request: Request, db: Database) -> ApiKey:
    presented = _presented(request)
    if presented is None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            return await run_in_threadpool(_from_session, request, db, token)
        raise APIError(401, "an API key is required (X-API-Key or Authorization: Bearer)", headers=_CHALLENGE)
    cache: TTLCache[str, ApiKey | None] = request.app.state.__dict__.setdefault("key_cache", TTLCache())
    key = await cache.aget(fingerprint(presented), lambda: keys.authenticate(db, presented))
    if key is None:
        raise APIError(401, "the API key is not valid (unknown, revoked or malformed)", headers=_CHALLENGE)
    return key


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that admits only keys with `scope`."""

    async def check(key: ApiKey = Depends(current_key)) -> ApiKey:  # noqa: B008
        if scope not in key.scopes:
            raise APIError(403, f"this key lacks the '{scope}' scope")
        return key

    return check
