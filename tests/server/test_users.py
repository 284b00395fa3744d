from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ..conftest import CLI, REPO, run_cli

PASSWORD = "correct horse battery"


def make_user(db: str, name: str, *roles: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    import os

    args = [
        *CLI,
        "users",
        "create",
        name,
        *(a for r in roles for a in ("--role", r)),
        "--password-stdin",
        "--database",
        db,
    ]
    return subprocess.run(
        args,
        input=password + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=60,
    )


def test_users_cli_and_hashes(tmp_path: Path) -> None:
    db = str(tmp_path / "u.db")
    assert make_user(db, "alice", "approver", "admin").stdout.strip() == "created user alice (approver, admin)"
    short = make_user(db, "bob", "approver", password="short")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    taken = make_user(db, "alice", "approver")
    assert taken.returncode == 2 and "is taken" in taken.stderr
    listing = run_cli("users", "list", db=db, check=True).stdout
    assert "alice" in listing and "approver,admin" in listing and "argon2" not in listing
    raw = Path(db).read_bytes() + (Path(db + "-wal").read_bytes() if Path(db + "-wal").exists() else b"")
    assert b"$argon2id$" in raw and PASSWORD.encode() not in raw


@pytest.fixture
def people(client: TestClient, server_db: str, make_key: Any) -> dict[str, Any]:
    make_user(server_db, "alice", "approver")
    make_user(server_db, "root", "admin")
    admin = {"X-API-Key": make_key("admin", agent=None)}
    rev = client.post(
        "/v1/policies",
        headers=admin,
        json={"text": "version: 1\ntools:\n  refund: {rules: [{id: r, effect: require_approval}]}\n"},
    ).json()
    client.post(f"/v1/policies/{rev['id']}/activate", headers=admin, json={})
    held = client.post("/v1/check", headers={"X-API-Key": make_key("agent", agent="bot")}, json={"tool": "refund"})
    return {"approval": held.json()["approval_id"]}


def test_sign_in_csrf_and_decide(client: TestClient, people: dict[str, Any]) -> None:
    assert client.post("/v1/login", json={"username": "alice", "password": "wrong password!"}).status_code == 401
    r = client.post("/v1/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["roles"] == ["approver"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "clearance_session=" in cookie
    csrf = r.json()["csrf_token"]
    me = client.get("/v1/me").json()
    assert me["name"] == "user:alice" and me["scopes"] == ["approver"] and me["agent"] is None
    apr = people["approval"]
    no_csrf = client.post(f"/v1/approvals/{apr}/approve")
    assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["error"]["message"]
    assert client.post(f"/v1/approvals/{apr}/approve", headers={"X-CSRF-Token": "forged"}).status_code == 403
    ok = client.post(f"/v1/approvals/{apr}/approve", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["decided_by"] == "user:alice"
    assert client.post("/v1/policies", headers={"X-CSRF-Token": csrf}, json={"text": "version: 1\n"}).status_code == 403
    assert client.post("/v1/logout").json() == {"status": "signed out"}
    assert client.get("/v1/me").status_code == 401


def test_admins_sign_in_too(client: TestClient, people: dict[str, Any]) -> None:
    csrf = client.post("/v1/login", json={"username": "root", "password": PASSWORD}).json()["csrf_token"]
    r = client.post("/v1/policies", headers={"X-CSRF-Token": csrf}, json={"text": "version: 1\ndefault: block\n"})
    assert r.status_code == 201 and r.json()["author"] == "user:root"


def test_failed_sign_ins_are_throttled(client: TestClient, people: dict[str, Any]) -> None:
    for _ in range(5):
        assert client.post("/v1/login", json={"username": "alice", "password": "nope nope nope"}).status_code == 401
    blocked = client.post("/v1/login", json={"username": "alice", "password": PASSWORD})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert blocked.json()["error"]["code"] == "too_many_requests"
    for _ in range(5):
        client.post("/v1/login", json={"username": "ghost", "password": "x"})
    assert client.post("/v1/login", json={"username": "ghost", "password": "x"}).status_code == 429


def _admin_events(db: str, kind: str) -> list[dict[str, Any]]:
    from clearance._store import Database
    from clearance._store._events import EventFilter, query

    store = Database(db)
    try:
        return [e.body for e in query(store, EventFilter(kind=kind))]
    finally:
        store.close()


def test_admins_manage_people_over_the_api(client: TestClient, server_db: str, make_key: Any) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    agent = {"X-API-Key": make_key("agent", agent="bot")}
    approver = {"X-API-Key": make_key("approver", agent=None)}
    new = {"username": "carol", "password": PASSWORD, "roles": ["approver"]}
    for who in (agent, approver):
        assert client.post("/v1/users", headers=who, json=new).status_code == 403
        assert client.get("/v1/users", headers=who).status_code == 403
        assert client.patch("/v1/users/carol", headers=who, json={"disabled": True}).status_code == 403
    created = client.post("/v1/users", headers=admin, json=new)
    assert created.status_code == 201 and created.json()["roles"] == ["approver"]
    assert "password" not in created.text and "argon2" not in created.text
    assert client.post("/v1/users", headers=admin, json=new).status_code == 409
    short = client.post("/v1/users", headers=admin, json={**new, "username": "dan", "password": "short"})
    assert short.status_code == 422
    role = client.post("/v1/users", headers=admin, json={**new, "username": "dan", "roles": ["agent"]})
    assert role.status_code == 422
    bad_name = client.post("/v1/users", headers=admin, json={**new, "username": "<script>"})
    assert bad_name.status_code == 422 and "username" in bad_name.json()["error"]["message"]
    assert [u["username"] for u in client.get("/v1/users", headers=admin).json()] == ["carol"]

    # Carol signs in; disabling her ends that session at once.
    assert client.post("/v1/login", json={"username": "carol", "password": PASSWORD}).status_code == 200
    assert client.get("/v1/me").status_code == 200
    changed = client.patch("/v1/users/carol", headers=admin, json={"roles": ["approver", "admin"], "disabled": True})
    assert (
        changed.status_code == 200
        and changed.json()["disabled_at_us"]
        and changed.json()["roles"]
        == [
            "approver",
            "admin",
        ]
    )
    assert client.get("/v1/me").status_code == 401
    assert client.post("/v1/login", json={"username": "carol", "password": PASSWORD}).status_code == 401
    enabled = client.patch("/v1/users/carol", headers=admin, json={"disabled": False})
    assert enabled.status_code == 200 and enabled.json()["disabled_at_us"] is None
    assert client.post("/v1/login", json={"username": "carol", "password": PASSWORD}).status_code == 200
    assert client.patch("/v1/users/nobody", headers=admin, json={"disabled": True}).status_code == 404
    assert client.patch("/v1/users/carol", headers=admin, json={"roles": []}).status_code == 422
    assert client.patch("/v1/users/carol", headers=admin, json={"superuser": True}).status_code == 422

    # The last enabled admin stays an admin.
    assert client.patch("/v1/users/carol", headers=admin, json={"roles": ["approver"]}).status_code == 409
    assert client.patch("/v1/users/carol", headers=admin, json={"disabled": True}).status_code == 409

    created_events = _admin_events(server_db, "user.created")
    updated_events = _admin_events(server_db, "user.updated")
    assert [e["username"] for e in created_events] == ["carol"] and created_events[0]["by"].startswith("key:")
    assert [e.get("disabled") for e in updated_events] == [True, False]
    assert updated_events[0]["roles"] == ["approver", "admin"]
    assert all("hash" not in str(e) and PASSWORD not in str(e) for e in created_events + updated_events)


def test_people_change_their_own_password(client: TestClient, server_db: str, make_key: Any) -> None:
    make_user(server_db, "erin", "approver")
    signed = client.post("/v1/login", json={"username": "erin", "password": PASSWORD}).json()
    csrf = {"X-CSRF-Token": signed["csrf_token"]}
    new = "a much better passphrase"
    wrong = client.post("/v1/me/password", headers=csrf, json={"current_password": "nope", "new_password": new})
    assert wrong.status_code == 403
    no_csrf = client.post("/v1/me/password", json={"current_password": PASSWORD, "new_password": new})
    assert no_csrf.status_code == 403
    short = client.post("/v1/me/password", headers=csrf, json={"current_password": PASSWORD, "new_password": "x"})
    assert short.status_code == 422
    ok = client.post("/v1/me/password", headers=csrf, json={"current_password": PASSWORD, "new_password": new})
    assert ok.status_code == 200
    client.cookies.clear()
    assert client.post("/v1/login", json={"username": "erin", "password": PASSWORD}).status_code == 401
    assert client.post("/v1/login", json={"username": "erin", "password": new}).status_code == 200
    key = {"X-API-Key": make_key("approver", agent=None)}
    client.cookies.clear()
    as_key = client.post("/v1/me/password", headers=key, json={"current_password": PASSWORD, "new_password": new})
    assert as_key.status_code == 403


def test_users_update_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "u.db")
    make_user(db, "root", "admin")
    make_user(db, "frank", "approver")
    assert run_cli("users", "update", "frank", "--role", "admin", db=db, check=True).stdout.strip() == (
        "updated user frank (admin; active)"
    )
    assert "updated user frank (admin; disabled)" in run_cli("users", "update", "frank", "--disable", db=db).stdout
    last = run_cli("users", "update", "root", "--disable", db=db)
    assert last.returncode == 2 and "last enabled admin" in last.stderr
    nothing = run_cli("users", "update", "root", db=db)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    missing = run_cli("users", "update", "ghost", "--enable", db=db)
    assert missing.returncode == 2 and "no user is called 'ghost'" in missing.stderr
    assert "frank" in run_cli("users", "list", db=db).stdout and "disabled" in run_cli("users", "list", db=db).stdout


def test_key_changes_are_audited(client: TestClient, server_db: str, make_key: Any) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    made = client.post("/v1/keys", headers=admin, json={"name": "ci", "scopes": ["agent"], "agent": "bot"}).json()
    assert client.delete(f"/v1/keys/{made['key']['id']}", headers=admin).status_code == 200
    assert client.delete(f"/v1/keys/{made['key']['id']}", headers=admin).status_code == 200  # idempotent
    created = [e for e in _admin_events(server_db, "key.created") if e["key_name"] == "ci"]
    revoked = _admin_events(server_db, "key.revoked")
    assert len(created) == 1 and created[0]["agent"] == "bot" and created[0]["by"].startswith("key:")
    assert len(revoked) == 1 and revoked[0]["key_id"] == made["key"]["id"]
    assert made["secret"] not in str(created + revoked)


def test_user_changes_on_postgresql(pg_url: str) -> None:
    from clearance._store import Database
    from clearance._store import _users as users

    db = Database(pg_url)
    try:
        users.create(db, "root", PASSWORD, ["admin"], by="t")
        users.create(db, "gina", PASSWORD, ["approver"], by="t")
        assert users.update(db, "gina", roles=["approver", "admin"], by="t").roles == ("approver", "admin")
        users.update(db, "gina", password="another long password", by="t")  # roles and access unchanged
        assert users.verify(db, "gina", "another long password") is not None
        assert users.update(db, "root", disabled=True, by="t").disabled_at_us is not None
        with pytest.raises(ValueError, match="last enabled admin"):
            users.update(db, "gina", disabled=True, by="t")
    finally:
        db.close()
