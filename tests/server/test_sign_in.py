"""Sign-in throttling: nobody can lock another person out, guessing one account is slowed.

Time is a fake clock handed to the throttle; addresses are TestClients on the same started app.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _users as users
from clearance.server.routes.session import (
    ADDRESS_FAILURES,
    PAIR_FAILURES,
    USER_FREE_FAILURES,
    USER_MAX_INTERVAL,
    WINDOW_SECONDS,
    SignInThrottle,
)

from .conftest import Server, _free_port
from .test_users import PASSWORD

WRONG = "not the password at all"
HOME, OFFICE, STRANGER = "192.0.2.10", "192.0.2.20", "203.0.113.66"


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # on SQLite and PostgreSQL


@pytest.fixture
def clock(client: TestClient, server_db: str) -> Clock:
    db = Database(server_db)
    users.create(db, "alice", PASSWORD, ["approver"], by="t")
    users.create(db, "root", PASSWORD, ["admin"], by="t")
    db.close()
    fake = Clock()
    client.app.state.login_throttle = SignInThrottle(clock=fake)  # type: ignore[attr-defined]
    return fake


def login(client: TestClient, address: str, username: str, password: str) -> httpx.Response:
    """A sign-in from `address` (a client on the same running app)."""
    other = TestClient(client.app, client=(address, 40_000))
    return other.post("/v1/login", json={"username": username, "password": password})


def sign_in(client: TestClient, address: str, username: str, password: str) -> int:
    return login(client, address, username, password).status_code


def test_a_stranger_failing_cannot_lock_anyone_out(client: TestClient, clock: Clock) -> None:
    assert sign_in(client, HOME, "alice", PASSWORD) == 200
    for _ in range(PAIR_FAILURES):
        assert sign_in(client, STRANGER, "alice", WRONG) == 401
        assert sign_in(client, STRANGER, "root", WRONG) == 401
    assert sign_in(client, STRANGER, "alice", PASSWORD) == 429  # the stranger is stopped, right password or not
    assert sign_in(client, STRANGER, "root", PASSWORD) == 429
    assert sign_in(client, HOME, "alice", PASSWORD) == 200
    assert sign_in(client, OFFICE, "alice", PASSWORD) == 200  # a new address too
    assert sign_in(client, OFFICE, "root", PASSWORD) == 200  # and the admin
    clock.now += WINDOW_SECONDS
    assert sign_in(client, STRANGER, "alice", WRONG) == 401  # the window passed


def test_guessing_one_account_from_many_addresses_is_slowed_not_locked(client: TestClient, clock: Clock) -> None:
    assert sign_in(client, HOME, "alice", PASSWORD) == 200
    for i in range(USER_FREE_FAILURES):
        assert sign_in(client, f"198.51.100.{i}", "alice", WRONG) == 401
    r = login(client, "198.51.100.200", "alice", WRONG)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    intervals = []
    for i in range(10):  # each further failure doubles the interval, up to a minute
        address = f"198.51.100.{100 + i}"  # a botnet: a new address every time
        wait = int(login(client, address, "alice", WRONG).headers["retry-after"])
        intervals.append(wait)
        clock.now += wait
        assert sign_in(client, address, "alice", WRONG) == 401
    assert intervals == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert USER_MAX_INTERVAL == 60
    # Meanwhile alice signs in where she did before, at once, and from elsewhere after the wait.
    assert sign_in(client, HOME, "alice", PASSWORD) == 200
    assert sign_in(client, OFFICE, "alice", PASSWORD) == 429
    clock.now += USER_MAX_INTERVAL
    assert sign_in(client, OFFICE, "alice", PASSWORD) == 200
    assert sign_in(client, OFFICE, "root", PASSWORD) == 200  # other accounts were never slowed


def test_one_address_failing_many_names_is_stopped(client: TestClient, clock: Clock) -> None:
    for i in range(ADDRESS_FAILURES):
        assert sign_in(client, STRANGER, f"name{i}", WRONG) == 401
    assert sign_in(client, STRANGER, "alice", PASSWORD) == 429
    assert sign_in(client, HOME, "alice", PASSWORD) == 200
    clock.now += WINDOW_SECONDS
    assert sign_in(client, STRANGER, "alice", PASSWORD) == 200


def test_parallel_guesses_count_before_they_are_answered() -> None:
    throttle = SignInThrottle(clock=Clock())
    assert [throttle.attempt("alice", STRANGER)[0] for _ in range(PAIR_FAILURES)] == [0.0] * PAIR_FAILURES
    assert throttle.attempt("alice", STRANGER)[0] > 0  # five still in flight count as five failures


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "ali\x00ce", "password": PASSWORD},
        {"username": "ali\ud800ce", "password": PASSWORD},
        {"username": "alice", "password": PASSWORD + "\x00"},
        {"username": "alice", "password": PASSWORD + "\udfff"},
    ],
    ids=["nul-name", "surrogate-name", "nul-password", "surrogate-password"],
)
def test_credentials_no_store_keeps_are_refused(
    client: TestClient, clock: Clock, server_db: str, credentials: dict[str, str]
) -> None:
    body = json.dumps(credentials)  # ASCII: the lone surrogate travels as a JSON escape
    r = client.post("/v1/login", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    db = Database(server_db)
    try:
        assert users.verify(db, credentials["username"], credentials["password"]) is None
        assert users.get(db, credentials["username"]) is None or "\x00" not in credentials["username"]
        with pytest.raises(ValueError):
            users.create(db, credentials["username"], credentials["password"] + "x" * 12, ["approver"])
    finally:
        db.close()
    assert client.post("/v1/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("trusted", [True, False], ids=["proxy-trusted", "proxy-not-configured"])
def test_behind_a_proxy_the_forwarded_address_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    if trusted:
        monkeypatch.setenv("CLEARANCE_FORWARDED_ALLOW_IPS", "127.0.0.1")
    db = tmp_path / "live.db"
    store = Database(str(db))
    users.create(store, "alice", PASSWORD, ["approver"], by="t")
    store.close()
    server = Server(db, _free_port(), tmp_path / "server.log", make_keys=False)
    server.start()
    try:

        def attempt(address: str, password: str) -> int:
            headers = {"X-Forwarded-For": address}
            body = {"username": "alice", "password": password}
            return httpx.post(f"{server.base}/v1/login", headers=headers, json=body).status_code

        for _ in range(PAIR_FAILURES):
            assert attempt(STRANGER, WRONG) == 401
        assert attempt(STRANGER, PASSWORD) == 429
        # Trusted, the proxy's header names the client; otherwise everyone is the proxy.
        assert attempt(HOME, PASSWORD) == (200 if trusted else 429)
    finally:
        server.stop()
