"""Signing in and out (people, for the dashboard): a session cookie and a CSRF token."""

from __future__ import annotations

import collections
import threading
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ...store import Database
from ...store import _users as users
from .._auth import SESSION_COOKIE, database
from .._errors import APIError

router = APIRouter(prefix="/v1", tags=["session"])
Db = Annotated[Database, Depends(database)]
MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


class Login(BaseModel):
    """Credentials."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class Signed(BaseModel):
    """A signed-in person; send `csrf_token` as `X-CSRF-Token` on every change."""

    username: str
    roles: list[str]
    csrf_token: str


class _Throttle:
    """Failed sign-ins per username in a sliding window (per server process)."""

    def __init__(self) -> None:
        self._failures: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def blocked_for(self, username: str) -> float:
        now = time.monotonic()
        with self._lock:
            recent = self._failures[username]
            while recent and recent[0] <= now - WINDOW_SECONDS:
                recent.popleft()
            return recent[0] + WINDOW_SECONDS - now if len(recent) >= MAX_FAILURES else 0.0

    def failed(self, username: str) -> None:
        with self._lock:
            self._failures[username].append(time.monotonic())

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)


def _throttle(request: Request) -> _Throttle:
    throttle: _Throttle = request.app.state.__dict__.setdefault("login_throttle", _Throttle())
    return throttle


@router.post("/login", summary="Sign in (people)")
async def login(body: Login, request: Request, response: Response, db: Db) -> Signed:
    """Check the password; set the session cookie and return the CSRF token.

    The cookie is HttpOnly and SameSite=Strict. Five failures for a username within 15 minutes
    block it for the rest of those 15 minutes (429).
    """
    throttle = _throttle(request)
    wait = throttle.blocked_for(body.username)
    if wait > 0:
        raise APIError(429, "too many failed sign-ins; try again later", headers={"Retry-After": str(int(wait) + 1)})
    user = await run_in_threadpool(users.verify, db, body.username, body.password)
    if user is None:
        throttle.failed(body.username)
        raise APIError(401, "the username or password is wrong")
    throttle.succeeded(body.username)
    token, csrf = await run_in_threadpool(users.start_session, db, user)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=users.SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return Signed(username=user.username, roles=list(user.roles), csrf_token=csrf)


@router.get("/session", summary="Who is signed in (people)")
async def current_session(request: Request, db: Db) -> Signed:
    """The signed-in person and their CSRF token, for a page that was reloaded.

    Only this origin can read the answer (no CORS), and the cookie is SameSite=Strict.
    """
    token = request.cookies.get(SESSION_COOKIE)
    found = await run_in_threadpool(users.session_user, db, token) if token else None
    if found is None:
        raise APIError(401, "nobody is signed in", headers={"WWW-Authenticate": 'Bearer realm="clearance"'})
    user, csrf = found
    return Signed(username=user.username, roles=list(user.roles), csrf_token=csrf)


@router.post("/logout", summary="Sign out")
async def logout(request: Request, response: Response, db: Db) -> dict[str, str]:
    """End the session (its cookie stops working at once)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(users.end_session, db, token)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"status": "signed out"}
