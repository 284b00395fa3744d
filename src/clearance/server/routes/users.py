"""People who sign in to the dashboard.

Admins list, create, change roles, reset passwords and disable; a signed-in person changes their
own password. Every change is an audit record.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..._store import Database
from ..._store import _policies as policies
from ..._store import _users as users
from ..._store._keys import ApiKey
from ..._store._users import User
from ..._text import Text, checked_text
from ..._wire import Sent
from ...errors import PolicyError
from ...policy._load import read_document
from .._auth import SESSION_COOKIE, actor, current_key, database, require
from .._errors import APIError
from ..channels import kinds

router = APIRouter(prefix="/v1", tags=["users"])
Admin = Annotated[ApiKey, Depends(require("admin"))]
Db = Annotated[Database, Depends(database)]
Role = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="approver, admin, or a group")]
Password = Annotated[str, Field(min_length=12, max_length=1024), AfterValidator(checked_text)]
ChannelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]
Identity = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(checked_text)]


class UserOut(Sent):
    """A person as the API shows them: never a password hash."""

    username: str
    roles: list[str]
    created_at_us: int
    disabled_at_us: int | None
    slack_user_id: str | None = Field(default=None, description="identities.slack, as older clients read it")
    identities: dict[str, str] = Field(
        default_factory=dict, description='who they are in each approval channel: {"slack": "U…", "email": "a@b"}'
    )

    @classmethod
    def of(cls, user: User) -> UserOut:
        """The view of a stored user."""
        return cls(
            username=user.username,
            roles=list(user.roles),
            created_at_us=user.created_at_us,
            disabled_at_us=user.disabled_at_us,
            slack_user_id=user.slack_user_id,
            identities=dict(user.identities),
        )


class UserCreate(BaseModel):
    """A new person."""

    model_config = ConfigDict(extra="forbid")

    username: Text = Field(min_length=1, max_length=200)
    password: Text = Field(min_length=12, max_length=1024)
    roles: list[Role] = Field(min_length=1)


class UserChange(BaseModel):
    """What to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    roles: list[Role] | None = Field(default=None, min_length=1)
    password: Password | None = None
    disabled: bool | None = None
    slack_user_id: Annotated[str, Field(max_length=40), AfterValidator(checked_text)] | None = Field(
        default=None, description="the Slack user who decides as this person (null: none); identities.slack"
    )
    identities: dict[ChannelName, Identity | None] | None = Field(
        default=None,
        max_length=20,
        description='who they are in approval channels, e.g. {"email": "lena@example.com"} (null removes one)',
    )


class PasswordChange(BaseModel):
    """A signed-in person's new password, with their current one."""

    model_config = ConfigDict(extra="forbid")

    current_password: Text = Field(min_length=1, max_length=1024)
    new_password: Text = Field(min_length=12, max_length=1024)


class RoleOut(Sent):
    """A role a person can be given, and where it comes from."""

    name: str
    description: str
    people: int = Field(description="how many people have it (disabled ones included)")
    named_by: list[str] = Field(description="the scopes whose active policy names role:NAME as approvers")
    assignable: bool = Field(description="whether a person can hold it (role names are lower case, like support-lead)")


_BUILT_IN = {
    "approver": "decides approvals (add a group, like support-lead, to decide those a policy reserves for it)",
    "admin": "manages keys, people, policies and settings",
}
_GROUPS: dict[str, frozenset[str]] = {}  # revision id -> the groups it names (revisions never change)


def _groups_of(db: Database, revision_id: str) -> frozenset[str]:
    found = _GROUPS.get(revision_id)
    if found is None:
        rev = policies.get(db, revision_id)
        try:
            found = read_document(rev.text, rev.source)[0].approver_groups() if rev is not None else frozenset()
        except PolicyError:
            found = frozenset()  # only valid revisions are ever active; nothing to name otherwise
        if len(_GROUPS) > 64:
            _GROUPS.clear()
        _GROUPS[revision_id] = found
    return found


def _roles(db: Database) -> list[RoleOut]:
    held: dict[str, int] = {}
    for user in users.listing(db):
        for role in user.roles:
            held[role] = held.get(role, 0) + 1
    named: dict[str, list[str]] = {}
    for a in policies.assignments(db):
        for group in sorted(_groups_of(db, a.revision_id)):
            if group.startswith("role:"):
                named.setdefault(group.removeprefix("role:"), []).append(a.scope)
    names = [*_BUILT_IN, *sorted((set(held) | set(named)) - set(_BUILT_IN))]
    return [
        RoleOut(
            name=name,
            description=_BUILT_IN.get(name)
            or (f"an approver group the active policy names (role:{name})" if name in named else "an approver group"),
            people=held.get(name, 0),
            named_by=named.get(name, []),
            assignable=users.assignable_role(name),
        )
        for name in names
    ]


@router.get("/roles", summary="The roles people can be given (admin)")
async def list_roles(_: Admin, db: Db) -> list[RoleOut]:
    """Approver and admin, then every approver group a person has or an active policy names."""
    return await run_in_threadpool(_roles, db)


@router.get("/users", summary="List people (admin)")
async def list_users(_: Admin, db: Db) -> list[UserOut]:
    """Everyone who can sign in, or could before being disabled."""
    return [UserOut.of(u) for u in await run_in_threadpool(users.listing, db)]


@router.post("/users", status_code=status.HTTP_201_CREATED, summary="Create a person (admin)")
async def create_user(body: UserCreate, admin: Admin, db: Db) -> UserOut:
    """Create someone who signs in with a password (at least 12 characters)."""
    try:
        user = await run_in_threadpool(
            lambda: users.create(db, body.username, body.password, body.roles, by=actor(admin))
        )
    except ValueError as exc:
        raise APIError(409 if "taken" in str(exc) else 422, str(exc)) from None
    return UserOut.of(user)


@router.patch("/users/{username}", summary="Change a person's roles, password or access (admin)")
async def change_user(username: Annotated[Text, Path()], body: UserChange, admin: Admin, db: Db) -> UserOut:
    """Change roles, set a new password, set identities in approval channels, or disable / re-enable.

    A new password or disabling signs them out everywhere at once. The last enabled admin
    cannot be disabled or lose the admin role (409).
    """
    try:
        user = await run_in_threadpool(
            lambda: users.update(
                db,
                username,
                roles=body.roles,
                password=body.password,
                disabled=body.disabled,
                identities=_identities(body),
                by=actor(admin),
            )
        )
    except LookupError as exc:
        raise APIError(404, str(exc)) from None
    except ValueError as exc:
        raise APIError(409 if "last enabled admin" in str(exc) else 422, str(exc)) from None
    return UserOut.of(user)


def _identities(body: UserChange) -> dict[str, str | None]:
    """The identities a change sets, each checked by its channel (unknown channels refused).

    Raises:
        APIError: 422, for an unknown channel or an identity not of its form.
    """
    wanted: dict[str, str | None] = dict(body.identities or {})
    if "slack_user_id" in body.model_fields_set:
        wanted["slack"] = body.slack_user_id
    known = kinds()
    checked: dict[str, str | None] = {}
    for name, value in wanted.items():
        kind = known.get(name)
        try:
            if kind is None:
                raise ValueError(f"no approval channel is called {ascii(name)}: {', '.join(sorted(known))}")
            checked[name] = kind.identity(value) if value is not None else None
        except ValueError as exc:
            raise APIError(422, str(exc)) from None
    return checked


@router.post("/me/password", summary="Change my own password (people)")
async def change_password(
    body: PasswordChange, request: Request, response: Response, me: Annotated[ApiKey, Depends(current_key)], db: Db
) -> dict[str, str]:
    """Check the current password and set a new one; every session ends, so sign in again."""
    if not me.id.startswith("usr_"):
        raise APIError(403, "only a signed-in person has a password to change; API keys are revoked and recreated")
    username = me.name.removeprefix("user:")
    if await run_in_threadpool(users.verify, db, username, body.current_password) is None:
        raise APIError(403, "the current password is wrong")
    try:
        await run_in_threadpool(lambda: users.update(db, username, password=body.new_password, by=me.name))
    except ValueError as exc:
        raise APIError(422, str(exc)) from None
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return {"status": "password changed; sign in again"}
