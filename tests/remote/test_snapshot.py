"""`GET /v1/policy/snapshot?v=2`: the agent's live grants and shadow policy, under one ETag.

In-process on SQLite and PostgreSQL. Version 1 (what agents before grants ask for) is pinned
unchanged: its ETag is the revision id, and a grant never answers its long poll.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store import _grants as grants
from clearance._store import _shadow as shadows

from ..server.conftest import activated
from ._grants import give

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {grants: {scopes: [session, agent, requester], max_duration: 8h}}
"""
SHADOW = POLICY.replace("args.amount > 100", "args.amount > 50")


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def store(server_db: str) -> Any:
    db = Database(server_db)
    yield db
    db.close()


def snap(client: TestClient, agent: dict[str, str], etag: str | None = None, **params: Any) -> Any:
    headers = {**agent, **({"If-None-Match": f'"{etag}"'} if etag else {})}
    return client.get("/v1/policy/snapshot", headers=headers, params={"v": 2, **params})


def test_v2_carries_this_agents_live_call_grants_and_nothing_else(
    client: TestClient, make_key: Any, store: Database
) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    mine = give(store, scope="session", session="s1", constraints={"amount": {"maximum": 150}})
    limited = give(store, max_calls=3, total_arg="amount", max_total="500")
    give(store, agent="mailer")  # another agent's
    revoked = give(store)
    grants.revoke(store, revoked.id, by="user:lena")
    give(store, seconds=-1)  # expired
    with store.write() as cur:  # a budget extension is not a grant of calls
        grants.insert(
            store,
            cur,
            {
                "id": grants.new_grant_id(),
                "kind": "budget",
                "scope": "agent",
                "agent": "refunds",
                "environment": "test",
                "rule_ids": "[]",
                "extend_tokens": 5,
                "granted_by": "user:lena",
                "created_at_us": mine.created_at_us,
                "expires_at_us": mine.expires_at_us,
            },
        )
    body = snap(client, keys["agent"]).json()
    by_id = {g["id"]: g for g in body["grants"]}
    assert set(by_id) == {mine.id, limited.id}
    assert by_id[mine.id] == {
        "id": mine.id,
        "scope": "session",
        "session": "s1",
        "requester": None,
        "tool": "issue_refund",
        "rule_ids": ["big"],
        "constraints": {"amount": {"maximum": 150}},
        "max_calls": None,
        "total_arg": None,
        "max_total": None,
        "granted_by": "user:gina",
        "created_at_us": mine.created_at_us,
        "expires_at_us": mine.expires_at_us,
    }
    assert (by_id[limited.id]["max_calls"], by_id[limited.id]["max_total"]) == (3, "500")
    assert body["shadow"] is None
    other = {"X-API-Key": make_key("agent", agent="mailer")}
    assert [g["tool"] for g in snap(client, other).json()["grants"]] == ["issue_refund"]  # only its own


def test_v1_is_unchanged_so_agents_before_grants_keep_working(
    client: TestClient, make_key: Any, store: Database
) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    give(store)
    old = client.get("/v1/policy/snapshot", headers=keys["agent"])
    rev = old.json()["revision"]
    assert old.headers["etag"] == f'"{rev}"' and old.json()["grants"] is None
    give(store)
    # An old agent sends its revision: grants never answer its poll (no busy loop).
    again = client.get("/v1/policy/snapshot", headers={**keys["agent"], "If-None-Match": f'"{rev}"'})
    assert again.status_code == 304
    # An old agent's revision sent to v2 is answered at once, with the v2 ETag to send next time.
    v2 = snap(client, keys["agent"], rev)
    assert v2.status_code == 200 and v2.headers["etag"].startswith(f'"{rev}.')
    # And a v2 ETag sent to v1 (an agent after a server downgrade) learns the v1 one.
    back = client.get("/v1/policy/snapshot", headers={**keys["agent"], "If-None-Match": v2.headers["etag"]})
    assert back.status_code == 200 and back.headers["etag"] == f'"{rev}"'


def test_the_etag_changes_with_grants_and_the_shadow(
    clock: ManualClock, client: TestClient, make_key: Any, store: Database
) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    agent = keys["agent"]
    seen = [snap(client, agent).headers["etag"].strip('"')]

    def changed() -> str:
        r = snap(client, agent, seen[-1])
        assert r.status_code == 200, "the ETag did not change"
        seen.append(r.headers["etag"].strip('"'))
        assert snap(client, agent, seen[-1]).status_code == 304
        return seen[-1]

    assert snap(client, agent, seen[0]).status_code == 304
    given = give(store, seconds=60)
    changed()
    grants.revoke(store, given.id, by="user:lena")
    changed()
    give(store, seconds=60)
    changed()
    clock.advance(61)  # it expires: gone from the snapshot, though nobody swept it yet
    changed()
    assert snap(client, agent).json()["grants"] == []
    rev = client.post("/v1/policies", headers=keys["admin"], json={"text": SHADOW}).json()["id"]
    shadows.activate_shadow(store, rev, scope="default", by="t")
    changed()
    body = snap(client, agent).json()
    assert body["shadow"]["revision"] == rev and body["shadow"]["text"] == SHADOW
    shadows.clear_shadow(store, scope="default", by="t")
    assert changed() == seen[-3]  # the same grants and shadow as before it: the same ETag


def test_the_long_poll_answers_when_a_grant_is_given_revoked_or_expires(
    clock: ManualClock, client: TestClient, make_key: Any, store: Database
) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    agent = keys["agent"]
    results: list[Any] = []

    def poll(etag: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.append(snap(client, agent, etag, wait=30)))
        thread.start()
        clock.wait_parked("long poll snapshot")  # held; the clock stands still, so only a wake-up answers
        return thread

    asked = client.post(
        "/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"order_id": "A", "amount": 300}}
    )
    etag = snap(client, agent).headers["etag"].strip('"')
    thread = poll(etag)
    approved = client.post(
        f"/v1/approvals/{asked.json()['approval_id']}/approve",
        headers={"X-API-Key": make_key("approver", agent=None)},
        json={"grant": {"scope": "agent", "duration": "2m"}},
    )
    assert approved.status_code == 200
    thread.join(20)
    (given,) = grants.listing(store, agent="refunds")
    assert results[-1].status_code == 200 and [g["id"] for g in results[-1].json()["grants"]] == [given.id]

    thread = poll(results[-1].headers["etag"].strip('"'))
    assert client.post(f"/v1/grants/{given.id}/revoke", headers=keys["admin"]).status_code == 200
    thread.join(20)
    assert results[-1].status_code == 200 and results[-1].json()["grants"] == []

    give(store, seconds=10)
    thread = poll(snap(client, agent).headers["etag"].strip('"'))
    clock.advance(11)  # no announcement: the re-check after the expiry sees it gone
    thread.join(20)
    assert results[-1].status_code == 200 and results[-1].json()["grants"] == []

    thread = poll(results[-1].headers["etag"].strip('"'))
    clock.advance(30)
    thread.join(20)
    assert results[-1].status_code == 304  # nothing changed


def test_bad_versions_are_refused(client: TestClient, make_key: Any) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    for v in ("3", "0", "two", "2.5", "-1"):
        r = client.get("/v1/policy/snapshot", headers=keys["agent"], params={"v": v})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["location"] == "query.v", v
