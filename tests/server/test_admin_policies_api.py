"""Policy problems in plain words, rollback that says why it cannot, and the roles people can be
given: over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance.server import ServerSettings, create_app

V1 = "version: 1\ndefault: allow\n"
V2 = "version: 1\ndefault: block\n"
LEADS = (
    "version: 1\ntools:\n  refund:\n    rules:\n      - id: big\n        effect: require_approval\n"
    "        approval: {approvers: [role:support-lead, user:dana], on_timeout: escalate,"
    " escalate_to: [role:duty-manager]}\n"
    "budgets:\n  session: {max_cost_usd: 5, on_exceed: require_approval, approval: {approvers: [role:Finance]}}\n"
)
JARGON = re.compile(r"input should|valid (tuple|dictionary)|overload|Syntax error|mismatched input|<EOF>")
MALFORMED = {
    "wrong type": ("version: 1\ntools:\n  t:\n    rules: 5\n", 4, 12, "tools.t.rules", "'rules' should be a list"),
    "unknown key": ("version: 1\ntools:\n  t:\n    rulez: []\n", 4, 5, "tools.t.rulez", "unknown key 'rulez'"),
    "bad CEL": (
        "version: 1\ntools:\n  t:\n    rules:\n      - {id: r, when: 'args.x + \"a\" > 3', effect: block}\n",
        5,
        37,
        "tools.t.rules[0].when",
        "'>' cannot compare text with a whole number",
    ),
    "bad duration": (
        "version: 1\ntools:\n  t:\n    rules:\n      - id: r\n        effect: require_approval\n"
        "        approval: {timeout: soon}\n",
        7,
        29,
        "tools.t.rules[0].approval.timeout",
        "'soon' is not a duration",
    ),
    "tabs": ("version: 1\ntools:\n\tt: {}\n", 3, 1, None, "a tab indents this line"),
    "duplicate keys": ("version: 1\ndefault: allow\ndefault: block\n", 3, 1, None, "appears twice"),
    "deep nesting": (
        "version: 1\ntools:\n  t:\n    params:\n      a: " + "[" * 3000 + "]" * 3000 + "\n",
        5,
        39,
        None,
        "nests more than 32 levels",
    ),
}


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def client(server_db: str) -> Any:
    # The default body limit (1 MiB), so a policy near the text limit reaches the route.
    with TestClient(create_app(ServerSettings(database_url=server_db)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin(make_key: Any) -> dict[str, str]:
    return {"X-API-Key": make_key("admin", agent=None)}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_problems_are_plain_and_located_in_text_and_keys(client: TestClient, admin: dict[str, str], case: str) -> None:
    text, line, column, path, says = MALFORMED[case]
    checked = client.post("/v1/policies/validate", headers=admin, json={"text": text})
    assert checked.status_code == 200
    [p] = checked.json()["problems"]
    assert (p["line"], p["column"], p["path"]) == (line, column, path) and says in p["message"]
    assert not JARGON.search(p["message"])
    stored = client.post("/v1/policies", headers=admin, json={"text": text, "source": "team.yaml"})
    assert stored.status_code == 422
    [detail] = stored.json()["error"]["details"]
    assert detail["location"] == f"team.yaml:{line}:{column}" and says in detail["message"]
    assert detail.get("path") == path
    tested = client.post("/v1/policies/test", headers=admin, json={"text": text})
    assert tested.status_code == 422 and says in tested.json()["error"]["details"][0]["message"]
    rev = stored.json()["error"]["message"].rsplit(" ", 1)[1]
    [kept] = client.get(f"/v1/policies/{rev}", headers=admin).json()["problems"]
    assert kept["path"] == path and says in kept["message"]  # stored with the draft, path and all


def test_a_huge_policy_is_refused_plainly_never_with_a_server_error(client: TestClient, admin: dict[str, str]) -> None:
    huge = "version: 1\n# " + "x" * (512 * 1024) + "\n"
    for route in ("/v1/policies", "/v1/policies/test"):
        r = client.post(route, headers=admin, json={"text": huge})
        assert r.status_code == 422, (route, r.text)
        assert "at most 524288 characters" in r.text
    [p] = client.post("/v1/policies/validate", headers=admin, json={"text": huge}).json()["problems"]
    assert p["message"] == "the policy is 524,302 characters long; at most 524,288 are accepted"
    bigger = "version: 1\n# " + "x" * (2 * 1024 * 1024) + "\n"
    assert client.post("/v1/policies", headers=admin, json={"text": bigger}).status_code == 413
    aliases = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    aliases += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    [p] = client.post("/v1/policies/validate", headers=admin, json={"text": "\n".join(aliases)}).json()["problems"]
    assert p["message"].startswith("the policy holds more than 300,000 values")


def test_rollback_is_offered_only_with_an_earlier_revision(client: TestClient, admin: dict[str, str]) -> None:
    first, second = (client.post("/v1/policies", headers=admin, json={"text": t}).json()["id"] for t in (V1, V2))
    r = client.post("/v1/policies/rollback", headers=admin, json={})
    assert r.status_code == 409 and r.json()["error"]["message"] == (
        "no revision is active for default, so there is nothing to roll back"
    )
    client.post(f"/v1/policies/{first}/activate", headers=admin, json={})
    [only] = client.get("/v1/policies/assignments", headers=admin).json()
    assert only["previous_revision_id"] is None
    r = client.post("/v1/policies/rollback", headers=admin, json={})
    assert r.status_code == 409 and r.json()["error"] == {
        "code": "conflict",
        "message": f"default had no revision before {first}: there is nothing earlier to roll back to",
        "details": [],
    }
    client.post(f"/v1/policies/{second}/activate", headers=admin, json={})
    [now] = client.get("/v1/policies/assignments", headers=admin).json()
    assert (now["revision_id"], now["previous_revision_id"]) == (second, first)
    stale = client.post("/v1/policies/rollback", headers=admin, json={"current": first})
    assert stale.status_code == 409 and "changed meanwhile" in stale.json()["error"]["message"]
    back = client.post("/v1/policies/rollback", headers=admin, json={"current": second, "to": first})
    assert back.status_code == 200 and back.json()["revision"]["id"] == first
    [after] = client.get("/v1/policies/assignments", headers=admin).json()
    assert (after["revision_id"], after["previous_revision_id"]) == (first, second)
    client.post(f"/v1/policies/{second}/activate", headers=admin, json={"agent": "refunds"})
    scopes = {
        a["scope"]: a["previous_revision_id"] for a in client.get("/v1/policies/assignments", headers=admin).json()
    }
    assert scopes == {"default": second, "agent:refunds": None}
    hostile = client.post("/v1/policies/rollback", headers=admin, json={"agent": "x\u202ey", "current": "\x00"})
    assert hostile.status_code == 422


def test_roles_come_from_people_and_the_active_policies(
    client: TestClient, admin: dict[str, str], make_key: Any
) -> None:
    roles = client.get("/v1/roles", headers=admin).json()
    assert [(r["name"], r["people"], r["assignable"]) for r in roles] == [("approver", 0, True), ("admin", 0, True)]
    made = client.post(
        "/v1/users", headers=admin, json={"username": "lena", "password": "x" * 12, "roles": ["approver", "billing"]}
    )
    assert made.status_code == 201
    rev = client.post("/v1/policies", headers=admin, json={"text": LEADS}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=admin, json={"environment": "live"})
    roles = {r["name"]: r for r in client.get("/v1/roles", headers=admin).json()}
    assert list(roles) == ["approver", "admin", "Finance", "billing", "duty-manager", "support-lead"]
    assert roles["approver"]["people"] == 1 and roles["billing"]["named_by"] == []
    assert roles["support-lead"]["named_by"] == ["environment:live"] and roles["support-lead"]["people"] == 0
    assert "role:support-lead" in roles["support-lead"]["description"]
    assert roles["Finance"]["assignable"] is False  # the policy names a role no person can hold: shown, not offered
    assert "dana" not in roles  # user:dana is a person, not a role
    for scopes in (("approver",), ("agent",)):
        assert client.get("/v1/roles", headers={"X-API-Key": make_key(*scopes)}).status_code == 403
