"""People's identities in approval channels: an e-mail address is one person's whatever its case,
and two admins setting the same identity at once get one success and one clear refusal (never an
integrity error, never a 5xx). On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _channels as channels
from clearance._store import _users as users
from clearance.server import ServerSettings, create_app

PASSWORD = "correct horse battery"


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def db(server_db: str) -> Iterator[Database]:
    store = Database(server_db)
    for name in ("lena", "omar"):
        users.create(store, name, PASSWORD, ["approver"], by="test")
    yield store
    store.close()


@pytest.fixture
def admin(make_key: Any) -> dict[str, str]:
    return {"X-API-Key": make_key("admin", agent=None)}


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call on its own thread, all released together: each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - the test judges what came out
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    return results


def test_an_address_is_taken_whatever_its_case(db: Database, client: TestClient, admin: dict[str, str]) -> None:
    lena = client.patch("/v1/users/lena", headers=admin, json={"identities": {"email": "Lena@x.com"}})
    assert lena.status_code == 200 and lena.json()["identities"] == {"email": "Lena@x.com"}  # kept as given
    for other, shown in (("lena@x.com", "lena@x.com"), ("LENA@X.COM", "LENA@x.com"), ("Lena@x.com", "Lena@x.com")):
        r = client.patch("/v1/users/omar", headers=admin, json={"identities": {"email": other}})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["message"] == f"the email identity {shown} is already lena"
    with pytest.raises(ValueError, match="the email identity lena@x.com is already lena"):
        users.update(db, "omar", identities={"email": "lena@x.com"})
    assert users.get(db, "omar").identities == {}  # type: ignore[union-attr]
    # Lena herself may change its case; she is found by any case of it.
    again = client.patch("/v1/users/lena", headers=admin, json={"identities": {"email": "lena@X.com"}})
    assert again.status_code == 200 and again.json()["identities"] == {"email": "lena@x.com"}
    assert [u.username for u in (users.by_identity(db, "email", a) for a in ("LENA@x.com", "lena@x.com")) if u] == [
        "lena",
        "lena",
    ]
    # Other channels keep comparing exactly; a non-ASCII lookalike matches nobody.
    assert users.by_identity(db, "email", "lena@x.co\u1d0d") is None
    users.update(db, "lena", identities={"slack": "U0ABC"})
    users.update(db, "omar", identities={"slack": "u0abc"})
    assert users.by_identity(db, "slack", "u0abc").username == "omar"  # type: ignore[union-attr]


def test_two_people_set_the_same_identity_at_once(db: Database, server_db: str) -> None:
    """Two replicas (a Database each) set one address for two people, released by a barrier."""
    replicas = [Database(server_db), Database(server_db)]
    try:
        for i in range(10):
            addresses = (f"Race{i}@x.com", f"race{i}@x.com") if i % 2 else (f"race{i}@x.com",) * 2
            results = _at_once(
                *(
                    (lambda r=r, who=who, a=a: users.update(r, who, identities={"email": a}))
                    for r, who, a in zip(replicas, ("lena", "omar"), addresses, strict=True)
                )
            )
            won = [r for r in results if isinstance(r, users.User)]
            lost = [r for r in results if not isinstance(r, users.User)]
            assert len(won) == 1 and len(lost) == 1, results
            assert type(lost[0]) is ValueError, repr(lost[0])
            assert str(lost[0]).endswith(f"is already {won[0].username}")
            holder = channels.person(db, "email", f"RACE{i}@x.com")
            assert holder == won[0].username
            users.update(db, won[0].username, identities={"email": None})
    finally:
        for r in replicas:
            r.close()


def test_an_insert_that_meets_the_constraint_is_refused_as_taken(
    db: Database, client: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check saw nobody, yet the row is there by the insert (another writer's): the unique
    constraint is met, and that is a refusal naming the identity, not an integrity error or 503."""
    users.update(db, "lena", identities={"email": "lena@x.com"})
    real = channels._holder
    missed: list[str] = []

    def blind_once(d: Database, cur: Any, channel: str, external_id: str) -> str | None:
        if not missed:
            missed.append(external_id)
            return None
        return real(d, cur, channel, external_id)

    monkeypatch.setattr(channels, "_holder", blind_once)
    with pytest.raises(ValueError, match="^the email identity lena@x.com is already lena$"):
        users.update(db, "omar", identities={"email": "lena@x.com"})
    missed.clear()
    r = client.patch("/v1/users/omar", headers=admin, json={"identities": {"email": "lena@x.com"}})
    assert r.status_code == 422 and r.json()["error"]["message"] == "the email identity lena@x.com is already lena"
    assert missed == ["lena@x.com"]
    monkeypatch.undo()
    assert users.get(db, "omar").identities == {}  # type: ignore[union-attr]
    assert users.get(db, "lena").identities == {"email": "lena@x.com"}  # type: ignore[union-attr]


def test_two_admins_on_two_replicas_never_get_a_5xx(db: Database, server_db: str, admin: dict[str, str]) -> None:
    apps = [create_app(ServerSettings(database_url=server_db)) for _ in range(2)]
    with (
        TestClient(apps[0], raise_server_exceptions=False) as one,
        TestClient(apps[1], raise_server_exceptions=False) as two,
    ):
        # One request each first: FastAPI builds its validators on first use under
        # warnings.catch_warnings, which is not thread-safe (pytest turns warnings into errors).
        for c in (one, two):
            assert c.patch("/v1/users/lena", headers=admin, json={"identities": {}}).status_code == 200
        for i in range(6):
            addresses = (f"Both{i}@x.com", f"both{i}@x.com")
            results = _at_once(
                lambda a=addresses[0]: one.patch("/v1/users/lena", headers=admin, json={"identities": {"email": a}}),
                lambda a=addresses[1]: two.patch("/v1/users/omar", headers=admin, json={"identities": {"email": a}}),
            )
            assert sorted(r.status_code for r in results) == [200, 422], [r.text for r in results]
            [refused] = [r for r in results if r.status_code == 422]
            assert "is already" in refused.json()["error"]["message"]
            for who in ("lena", "omar"):
                users.update(db, who, identities={"email": None})
