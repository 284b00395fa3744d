"""Signing in and out (people, for the dashboard): a session cookie and a CSRF token."""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ..._store import Database
from ..._store import _users as users
from ..._text import Text
from ..._wire import Sent
from .._auth import SESSION_COOKIE, database
from .._errors import APIError
from .._settings import ServerSettings

router = APIRouter(prefix="/v1", tags=["session"])
Db = Annotated[Database, Depends(database)]
WINDOW_SECONDS = 15 * 60
PAIR_FAILURES = 5  # per username and address: then that address waits out the window for that name
ADDRESS_FAILURES = 20  # per address, whatever the names: then that address waits out the window
USER_FREE_FAILURES = 10  # per username from anywhere: beyond these, one attempt per growing interval
USER_MAX_INTERVAL = 60.0
KNOWN_SECONDS = 30 * 24 * 3600  # an address a person signed in from stays theirs this long
_KNOWN_PER_USER = 20
_MAX_KEYS = 50_000  # names and addresses remembered per count (attackers choose them)


class Login(BaseModel):
    """Credentials."""

    model_config = ConfigDict(extra="forbid")

    username: Text = Field(min_length=1, max_length=200)
    password: Text = Field(min_length=1, max_length=1024)


class Signed(Sent):
    """A signed-in person; send `csrf_token` as `X-CSRF-Token` on every change.

    `trace_url` is the dashboard's configuration: the server's `CLEARANCE_TRACE_URL` template,
    where the dashboard links a record's trace (None: no links).
    """

    username: str
    roles: list[str]
    csrf_token: str
    trace_url: str | None = None


def _signed(request: Request, user: users.User, csrf: str) -> Signed:
    """The answer to a signed-in person: who they are, and the dashboard's configuration."""
    settings: ServerSettings = request.app.state.settings
    return Signed(username=user.username, roles=list(user.roles), csrf_token=csrf, trace_url=settings.trace_url)


class _Counts:
    """Times of failures per key within the window; forgets quiet keys when it holds too many."""

    def __init__(self) -> None:
        self.times: dict[object, collections.deque[float]] = {}

    def recent(self, key: object, now: float) -> collections.deque[float]:
        found = self.times.get(key)
        if found is None:
            if len(self.times) >= _MAX_KEYS:
                self._forget(now)
            found = self.times[key] = collections.deque()
        while found and found[0] <= now - WINDOW_SECONDS:
            found.popleft()
        return found

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self.times.items() if not t or t[-1] <= now - WINDOW_SECONDS]:
            del self.times[key]
        for key in list(self.times)[: max(0, len(self.times) - _MAX_KEYS // 2)]:
            del self.times[key]  # still too many: the longest-known go first

    def drop(self, key: object, at: float) -> None:
        found = self.times.get(key)
        if found is not None and at in found:
            found.remove(at)


class SignInThrottle:
    """Failed sign-ins, counted so that a stranger cannot lock anyone out (per server process).

    Three counts over a sliding 15-minute window, each attempt counted as failed until it
    succeeds (so parallel guesses cannot slip past): a username from one address (5, then that
    address waits out the window for that name), an address whatever the names (20, then it
    waits out the window), and a username from every address — beyond 10 failures it is
    slowed, not locked: one attempt per interval that doubles with each further failure, up to
    a minute. That last count never applies to an address the person signed in from before
    (the last 30 days), so failing as someone elsewhere does not keep them out where they sign in.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Count with `clock` (seconds; monotonic by default, a fake one in tests)."""
        self.clock = clock
        self._pairs, self._addresses, self._users = _Counts(), _Counts(), _Counts()
        self._known: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def attempt(self, username: str, address: str) -> tuple[float, float]:
        """(seconds to wait before trying again, 0 when it may go ahead; the attempt's time)."""
        now = self.clock()
        with self._lock:
            pair = self._pairs.recent((username, address), now)
            wait = pair[0] + WINDOW_SECONDS - now if len(pair) >= PAIR_FAILURES else 0.0
            by_address = self._addresses.recent(address, now)
            if len(by_address) >= ADDRESS_FAILURES:
                wait = max(wait, by_address[0] + WINDOW_SECONDS - now)
            by_user = self._users.recent(username, now)
            if len(by_user) >= USER_FREE_FAILURES and not self._known_address(username, address, now):
                interval = min(USER_MAX_INTERVAL, 2.0 ** (len(by_user) - USER_FREE_FAILURES))
                wait = max(wait, by_user[-1] + interval - now)
            if wait > 0:
                return wait, now
            pair.append(now)
            by_address.append(now)
            by_user.append(now)
            return 0.0, now

    def succeeded(self, username: str, address: str, at: float) -> None:
        """The attempt at `at` was right: it was no failure, and the address is theirs now."""
        with self._lock:
            self._pairs.times.pop((username, address), None)
            self._addresses.drop(address, at)
            self._users.drop(username, at)
            known = self._known.setdefault(username, {})
            known[address] = at
            if len(known) > _KNOWN_PER_USER:
                del known[min(known, key=known.__getitem__)]
            if len(self._known) > _MAX_KEYS:
                self._known.pop(next(iter(self._known)))

    def _known_address(self, username: str, address: str, now: float) -> bool:
        seen = self._known.get(username, {}).get(address)
        return seen is not None and seen > now - KNOWN_SECONDS


def _throttle(request: Request) -> SignInThrottle:
    """The app's throttle (`app.state.login_throttle`; made on first use, or set by a test)."""
    state = request.app.state
    throttle: SignInThrottle | None = getattr(state, "login_throttle", None)
    if throttle is None:
        throttle = state.login_throttle = SignInThrottle()
    return throttle


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's `X-Forwarded-For` when one is configured)."""
    return request.client.host if request.client else "unknown"


@router.post("/login", summary="Sign in (people)")
async def login(body: Login, request: Request, response: Response, db: Db) -> Signed:
    """Check the password; set the session cookie and return the CSRF token.

    The cookie is HttpOnly and SameSite=Strict. Failed sign-ins are throttled per username and
    address, per address, and (slowed, never locked) per username: 429 with `Retry-After`.
    """
    throttle, address = _throttle(request), client_address(request)
    wait, at = throttle.attempt(body.username, address)
    if wait > 0:
        retry = str(math.ceil(wait))
        raise APIError(429, "too many failed sign-ins; try again later", headers={"Retry-After": retry})
    user = await run_in_threadpool(users.verify, db, body.username, body.password)
    if user is None:
        raise APIError(401, "the username or password is wrong")
    throttle.succeeded(body.username, address, at)
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
    return _signed(request, user, csrf)


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
    return _signed(request, user, csrf)


@router.post("/logout", summary="Sign out")
async def logout(request: Request, response: Response, db: Db) -> dict[str, str]:
    """End the session (its cookie stops working at once)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(users.end_session, db, token)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"status": "signed out"}
