"""API keys: create (the secret is shown once), list, revoke; and who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..._store import Database
from ..._store import _keys as keys
from ..._store._keys import ApiKey, Scope
from ..._text import Text, checked_text
from ..._wire import Sent
from .._auth import actor, current_key, database, require
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["keys"])


class KeyOut(Sent):
    """A key as the API shows it: never its secret."""

    id: str
    name: str
    scopes: list[Scope]
    agent: str | None
    environment: str
    created_at_us: int
    created_by: str | None
    revoked_at_us: int | None
    last_used_at_us: int | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        """The view of a stored key."""
        return cls(
            id=key.id,
            name=key.name,
            scopes=list(key.scopes),
            agent=key.agent,
            environment=key.environment,
            created_at_us=key.created_at_us,
            created_by=key.created_by,
            revoked_at_us=key.revoked_at_us,
            last_used_at_us=key.last_used_at_us,
        )


class KeyCreate(BaseModel):
    """A new key."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    agent: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(checked_text)] | None = None
    environment: str = Field(default="test", pattern=r"^[a-z0-9-]{1,40}$")


class KeyCreated(Sent):
    """A created key and its full text, shown this once."""

    key: KeyOut
    secret: str


Admin = Annotated[ApiKey, Depends(require("admin"))]
Db = Annotated[Database, Depends(database)]


@router.get("/me", summary="The calling key")
def me(key: Annotated[ApiKey, Depends(current_key)]) -> KeyOut:
    """The key this request was made with."""
    return KeyOut.of(key)


@router.post("/keys", status_code=status.HTTP_201_CREATED, summary="Create a key (admin)")
def create_key(body: KeyCreate, admin: Admin, db: Db) -> KeyCreated:
    """Create a key; its secret is in this response only and cannot be shown again."""
    try:
        key, secret = keys.create(
            db,
            name=body.name,
            scopes=body.scopes,
            agent=body.agent,
            environment=body.environment,
            created_by=actor(admin),
        )
    except ValueError as exc:
        raise APIError(422, str(exc)) from None
    return KeyCreated(key=KeyOut.of(key), secret=secret)


@router.get("/keys", summary="List keys (admin)")
def list_keys(_: Admin, db: Db) -> list[KeyOut]:
    """Every key, newest first, revoked ones included; never a secret."""
    return [KeyOut.of(k) for k in keys.listing(db)]


@router.delete("/keys/{key_id}", summary="Revoke a key (admin)")
def revoke_key(key_id: Annotated[Text, Path()], request: Request, admin: Admin, db: Db) -> KeyOut:
    """Revoke a key at once (idempotent)."""
    key = keys.revoke(db, key_id, by=actor(admin))
    cache = getattr(request.app.state, "key_cache", None)
    if cache is not None:
        cache.clear()  # revoked here: refused here at once (other replicas within a second)
    if key is None:
        raise APIError(404, f"no key has the id {key_id!r}")
    return KeyOut.of(key)
