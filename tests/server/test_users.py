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
