"""Free text in, on SQLite and PostgreSQL alike (issue 12): a NUL or a lone surrogate in any text a
request carries into a column or a query is refused with 422 naming the field, on both stores,
never 503 (PostgreSQL cannot keep a NUL) or 500; ordinary text still works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _keys as keys
from clearance.server import ServerSettings, create_app

NUL, SURROGATE = "a\x00b", "a\ud800b"
PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    url = str(tmp_path / "s.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    db = Database(url)
    made = {
        "admin": keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")[1],
        "approver": keys.create(db, name="p", scopes=["approver"], agent=None, environment="test", created_by="t")[1],
        "agent": keys.create(db, name="g", scopes=["agent"], agent="bot", environment="test", created_by="t")[1],
    }
    db.close()
    with TestClient(create_app(ServerSettings(database_url=url)), raise_server_exceptions=False) as c:
        yield c, made


# (key, method, path, JSON body or None, the field to spoil: "body.x", "query.x" or "path")
# A path holds "{}" where the spoiled text goes; without it, the value goes into the field.
FIELDS: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    ("admin", "POST", "/v1/keys", {"name": "n", "scopes": ["agent"], "agent": "bot"}, "body.name"),
    ("admin", "POST", "/v1/keys", {"name": "n", "scopes": ["agent"], "agent": "bot"}, "body.agent"),
    ("admin", "DELETE", "/v1/keys/{}", None, "path.key_id"),
    ("admin", "POST", "/v1/users", {"username": "u", "password": PASSWORD, "roles": ["approver"]}, "body.username"),
    ("admin", "POST", "/v1/users", {"username": "u2", "password": PASSWORD, "roles": ["approver"]}, "body.password"),
    ("admin", "PATCH", "/v1/users/{}", {"disabled": False}, "path.username"),
    ("admin", "PATCH", "/v1/users/u", {"password": PASSWORD}, "body.password"),
    ("admin", "PATCH", "/v1/users/u", {"slack_user_id": "U1"}, "body.slack_user_id"),
    ("admin", "POST", "/v1/me/password", {"current_password": "x", "new_password": PASSWORD}, "body.new_password"),
    ("admin", "POST", "/v1/me/password", {"current_password": "x", "new_password": PASSWORD}, "body.current_password"),
    ("admin", "POST", "/v1/policies", {"text": "version: 1\n"}, "body.text"),
    ("admin", "POST", "/v1/policies", {"text": "version: 1\n", "source": "p.yaml"}, "body.source"),
    ("admin", "GET", "/v1/policies/{}", None, "path.rev_id"),
    ("admin", "GET", "/v1/policies/{}/diff", None, "path.rev_id"),
    ("admin", "GET", "/v1/policies/pol_x/diff", None, "query.against"),
    ("admin", "POST", "/v1/policies/{}/activate", {}, "path.rev_id"),
    ("admin", "POST", "/v1/policies/pol_x/activate", {"agent": "bot"}, "body.agent"),
    ("admin", "POST", "/v1/policies/rollback", {"agent": "bot"}, "body.agent"),
    ("admin", "POST", "/v1/policies/validate", {"text": "version: 1\n"}, "body.text"),
    ("admin", "POST", "/v1/policies/validate", {"text": "version: 1\n", "source": "p.yaml"}, "body.source"),
    ("admin", "POST", "/v1/policies/test", {"text": "version: 1\n", "agent": "bot"}, "body.text"),
    ("admin", "POST", "/v1/policies/test", {"text": "version: 1\n", "agent": "bot"}, "body.agent"),
    ("admin", "POST", "/v1/admin/webhooks/test", {"url": "http://127.0.0.1:1/x"}, "body.url"),
    ("approver", "POST", "/v1/approvals/apr_x/approve", {"note": "ok"}, "body.note"),
    ("approver", "POST", "/v1/approvals/apr_x/deny", {"note": "no"}, "body.note"),
    ("agent", "POST", "/v1/approvals/apr_x/claim", {"by": "worker"}, "body.by"),
    ("admin", "GET", "/v1/approvals/{}", None, "path.approval_id"),
    ("admin", "GET", "/v1/approvals/{}/deliveries", None, "path.approval_id"),
    ("agent", "POST", "/v1/approvals/{}/claim", {"by": "worker"}, "path.approval_id"),
    ("admin", "GET", "/v1/sessions/{}", None, "path.session_id"),
    ("admin", "GET", "/v1/sessions", None, "query.agent"),
    ("admin", "GET", "/v1/usage", None, "query.agent"),
    ("admin", "GET", "/v1/usage", None, "query.session"),
    ("admin", "GET", "/v1/budgets", None, "query.agent"),
    ("admin", "GET", "/v1/replay", None, "query.session"),
    ("admin", "GET", "/v1/spend", None, "query.agent"),
    *[
        ("admin", "GET", path, None, f"query.{name}")
        for path in ("/v1/events", "/v1/events/export")
        for name in ("agent", "session", "tool", "kind", "decision", "call_id", "q")
    ],
]


def _send(c: TestClient, key: str, method: str, path: str, body: dict[str, Any] | None, field: str, value: str) -> Any:
    where, _, name = field.partition(".")
    params: dict[str, str] = {}
    if where == "path":
        path = path.replace("{}", value.replace("\x00", "%00"))
    elif where == "query":
        params[name] = value
    else:
        body = {**(body or {}), name: value}
    path = path.replace("{}", "x")
    if name == "url":
        body = {"url": "http://127.0.0.1:1/" + value}
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    content = json.dumps(body) if body is not None else None  # ASCII: a lone surrogate as its escape
    return c.request(method, path, headers=headers, params=params, content=content)


def test_every_text_field_refuses_nul_and_lone_surrogates_alike(client: tuple[TestClient, dict[str, str]]) -> None:
    c, made = client
    wrong: list[str] = []
    for who, method, path, body, field in FIELDS:
        # A lone surrogate cannot travel in a URL (its UTF-8 does not exist): paths and queries carry NUL.
        spoiled = (NUL,) if field.startswith(("path", "query")) else (NUL, SURROGATE)
        for value in spoiled:
            r = _send(c, made[who], method, path, body, field, value)
            shape = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/") else {}
            named = any(d.get("location") == field for d in shape.get("details", []))
            if r.status_code != 422 or shape.get("code") != "invalid_parameter" or not named:
                wrong.append(f"{method} {path} {field}={value!r}: {r.status_code} {r.text[:200]}")
        ordinary = "a plain password" if field.endswith("password") else "plain-text"
        r = _send(c, made[who], method, path, body, field, ordinary)
        if r.status_code >= 500 or (r.status_code == 422 and field in r.text):
            wrong.append(f"{method} {path} {field}={ordinary!r} refused: {r.status_code} {r.text[:200]}")
    assert wrong == []


def test_ordinary_text_is_kept_as_written(client: tuple[TestClient, dict[str, str]]) -> None:
    c, made = client
    admin = {"X-API-Key": made["admin"]}
    text = "Zoë's key — ✓ \u202e (bidi kept: it is text)"
    created = c.post("/v1/keys", headers=admin, json={"name": text, "scopes": ["agent"], "agent": "bot"})
    assert created.status_code == 201 and created.json()["key"]["name"] == text
    assert any(k["name"] == text for k in c.get("/v1/keys", headers=admin).json())
    r = c.post("/v1/users", headers=admin, json={"username": "zoe", "password": PASSWORD, "roles": ["approver"]})
    assert r.status_code == 201 and r.json()["username"] == "zoe"
    found = c.get("/v1/events", headers=admin, params={"q": "Zoë's key — ✓"}).json()["events"]
    assert found and all(text in json.dumps(e, ensure_ascii=False) for e in found)
