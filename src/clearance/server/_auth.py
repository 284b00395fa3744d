"""Who is calling: API keys (`X-API-Key`, or `Authorization: Bearer`) and their scopes."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from ..store import Database
from ..store import _keys as keys
from ..store._keys import ApiKey, Scope
from ._caches import TTLCache, fingerprint
from ._errors import APIError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="clearance"'}


def database(request: Request) -> Database:
    """The store the app opened at startup."""
    db: Database = request.app.state.db
    return db


def _presented(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def current_key(request: Request, db: Database = Depends(database)) -> ApiKey:  # noqa: B008
    """The calling key.

    Raises:
        APIError: 401 when no key is given, or it is unknown, malformed or revoked.
    """
    presented = _presented(request)
    if presented is None:
        raise APIError(401, "an API key is required (X-API-Key or Authorization: Bearer)", headers=_CHALLENGE)
    cache: TTLCache[str, ApiKey | None] = request.app.state.__dict__.setdefault("key_cache", TTLCache())
    key = cache.get(fingerprint(presented), lambda: keys.authenticate(db, presented))
    if key is None:
        raise APIError(401, "the API key is not valid (unknown, revoked or malformed)", headers=_CHALLENGE)
    return key


def require(scope: Scope) -> Callable[..., ApiKey]:
    """A dependency that admits only keys with `scope`."""

    def check(key: ApiKey = Depends(current_key)) -> ApiKey:  # noqa: B008
        if scope not in key.scopes:
            raise APIError(403, f"this key lacks the '{scope}' scope")
        return key

    return check
