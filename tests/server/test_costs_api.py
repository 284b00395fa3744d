"""The costs page's API (issue 17): spend per hour or day by model and by agent, and only the
budgets in use; on SQLite and PostgreSQL, with hostile names and each kind of key."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _events as events

from .conftest import activated

DAY = 86_400_000_000
HOUR = 3_600_000_000
HOSTILE_MODEL = "gpt\u202e-lave\u200b<b>x</b>"
HOSTILE_AGENT = "refunds\u2066\u0000"[:-1]  # (a NUL is refused at every way in)


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # every test here runs on SQLite and PostgreSQL


def _llm(
    url: str, at_us: int, *, model: str, agent: str = "refunds", nusd: int | None = 1_000_000, session: str = "s"
) -> None:
    """An LLM call recorded at `at_us` (directly in the store: tests choose when it happened)."""
    fields = {
        "agent": agent,
        "environment": "test",
        "session": session,
        "model": model,
        "input_tokens": 100,
        "output_tokens": 10,
        "tokens": 110,
        "cost_usd": None if nusd is None else str(Decimal(nusd) / 10**9),
        "cost_nusd": nusd,
    }
    db = Database(url)
    with db.write() as cur:
        events.append(db, cur, [events.make_event("llm.call", at_us, fields)])
    db.close()


def _midnight_utc(days_ago: int) -> int:
    now = time.time_ns() // 1000
    return now - now % DAY - days_ago * DAY


def _series(found: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {s["key"]: s for s in found["series"]}


def test_spend_per_day_by_model_and_by_agent(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    start = _midnight_utc(3)
    _llm(server_db, start + HOUR, model="gpt-4o", nusd=2_000_000)
    _llm(server_db, start + 2 * HOUR, model="gpt-4o", nusd=500_000_000)
    _llm(server_db, start + DAY + HOUR, model=HOSTILE_MODEL, agent=HOSTILE_AGENT, nusd=7)
    _llm(server_db, start + 2 * DAY + 5, model="house-model", nusd=None)
    found = client.get("/v1/spend", headers=admin, params={"by": "model", "since_us": start}).json()
    assert found["bucket"] == "day" and found["since_us"] == start  # three days and more: by the day
    assert found["buckets"][:3] == [start, start + DAY, start + 2 * DAY]
    assert found["until_us"] == found["buckets"][-1] + DAY >= time.time_ns() // 1000  # up to today's end
    series = _series(found)
    assert [s["key"] for s in found["series"]] == ["gpt-4o", HOSTILE_MODEL, "house-model"]  # most spent first
    assert series["gpt-4o"]["cost_usd"][:3] == ["0.502", "0", "0"] and series["gpt-4o"]["calls"][:3] == [2, 0, 0]
    assert series["gpt-4o"]["total_usd"] == "0.502"
    assert series[HOSTILE_MODEL]["cost_usd"][1] == "7E-9"  # the name comes back as it was recorded
    house = series["house-model"]
    assert house["unpriced_calls"][2] == 1 and house["total_unpriced"] == 1 and house["total_usd"] == "0"
    by_agent = _series(client.get("/v1/spend", headers=admin, params={"by": "agent", "since_us": start}).json())
    assert set(by_agent) == {"refunds", HOSTILE_AGENT} and by_agent["refunds"]["total_calls"] == 3


def test_the_range_chooses_hours_or_days(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    now = time.time_ns() // 1000
    _llm(server_db, now - 3 * HOUR, model="m")
    _llm(server_db, now - 40 * DAY, model="m")
    day = client.get("/v1/spend", headers=admin, params={"since_us": now - DAY}).json()
    assert day["bucket"] == "hour" and len(day["buckets"]) in (24, 25)
    assert sum(_series(day)["m"]["calls"]) == 1  # the call 40 days ago is outside
    week = client.get("/v1/spend", headers=admin, params={"since_us": now - 7 * DAY}).json()
    assert week["bucket"] == "day" and len(week["buckets"]) in (7, 8)
    everything = client.get("/v1/spend", headers=admin).json()  # all time: from the first call, by the day
    assert everything["bucket"] == "day" and sum(_series(everything)["m"]["calls"]) == 2
    assert everything["buckets"][0] <= now - 40 * DAY < everything["buckets"][1]
    hours = client.get("/v1/spend", headers=admin, params={"since_us": now - 7 * DAY, "bucket": "hour"}).json()
    assert hours["bucket"] == "hour" and len(hours["buckets"]) in (168, 169)
    too_many = client.get("/v1/spend", headers=admin, params={"since_us": now - 60 * DAY, "bucket": "hour"})
    assert too_many.status_code == 422 and too_many.json()["error"]["details"][0]["location"] == "query.bucket"
    backwards = client.get("/v1/spend", headers=admin, params={"since_us": now, "until_us": now - 1})
    assert backwards.status_code == 422 and backwards.json()["error"]["details"][0]["location"] == "query.since_us"
    future = client.get("/v1/spend", headers=admin, params={"since_us": now + DAY})  # after now, the default end
    assert future.status_code == 422
    top = 2**63 - 1
    for edge in ({"until_us": top}, {"since_us": top - 1, "until_us": top}, {"since_us": 0, "until_us": 1}):
        r = client.get("/v1/spend", headers=admin, params={**edge, "utc_offset_minutes": -840})
        assert r.status_code in (200, 422), (edge, r.text)  # 64-bit ends: never a 500
    assert client.get("/v1/spend", headers=admin, params={"until_us": top}).status_code == 200
    assert client.get("/v1/spend", headers=admin, params={"bucket": "week"}).status_code == 422
    assert client.get("/v1/spend", headers=admin, params={"by": "session"}).status_code == 422
    assert client.get("/v1/spend", headers=admin, params={"since_us": -1}).status_code == 422


def test_days_start_at_the_viewers_midnight(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    midnight = _midnight_utc(2)
    _llm(server_db, midnight + 2 * HOUR, model="m")  # 02:00 UTC is 21:00 the day before in New York
    new_york = {"since_us": midnight - DAY, "until_us": midnight + DAY, "utc_offset_minutes": -300, "bucket": "day"}
    found = client.get("/v1/spend", headers=admin, params=new_york).json()
    assert found["bucket"] == "day" and all((b - 5 * HOUR) % DAY == 0 for b in found["buckets"])
    calls = _series(found)["m"]["calls"]
    assert calls[found["buckets"].index(midnight - DAY + 5 * HOUR)] == 1
    utc = client.get("/v1/spend", headers=admin, params={**new_york, "utc_offset_minutes": 0}).json()
    assert _series(utc)["m"]["calls"][utc["buckets"].index(midnight)] == 1
    assert client.get("/v1/spend", headers=admin, params={"utc_offset_minutes": 15 * 60}).status_code == 422


def test_the_keys_that_spent_least_are_summed_as_one(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    now = time.time_ns() // 1000
    for i in range(12):
        _llm(server_db, now - HOUR, model=f"model-{i:02}", nusd=(i + 1) * 1_000_000)
    found = client.get("/v1/spend", headers=admin, params={"since_us": now - DAY, "top": 3}).json()
    keys = [s["key"] for s in found["series"]]
    assert keys == ["model-11", "model-10", "model-09", None]
    other = found["series"][-1]
    assert other["others"] == 9 and other["total_calls"] == 9 and other["total_usd"] == "0.045"
    assert client.get("/v1/spend", headers=admin, params={"top": 21}).status_code == 422


def test_agent_keys_see_only_their_own_spend(client: TestClient, make_key: Any, server_db: str) -> None:
    now = time.time_ns() // 1000
    _llm(server_db, now - HOUR, model="a", agent="refunds")
    _llm(server_db, now - HOUR, model="b", agent="mailer")
    mailer = {"X-API-Key": make_key("agent", agent="mailer")}
    approver = {"X-API-Key": make_key("approver", agent=None)}
    own = client.get("/v1/spend", headers=mailer, params={"by": "agent"}).json()
    assert [s["key"] for s in own["series"]] == ["mailer"]
    assert [s["key"] for s in client.get("/v1/spend", headers=mailer).json()["series"]] == ["b"]
    assert client.get("/v1/spend", headers=mailer, params={"agent": "refunds"}).status_code == 403
    assert {s["key"] for s in client.get("/v1/spend", headers=approver, params={"by": "agent"}).json()["series"]} == {
        "refunds",
        "mailer",
    }
    assert client.get("/v1/spend").status_code == 401


def test_a_record_the_database_cannot_read_is_summed_here(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    now = time.time_ns() // 1000
    _llm(server_db, now - HOUR, model="m", nusd=3_000_000)
    db = Database(server_db)
    with db.write() as cur:  # a body that is not JSON (an older writer, or a hand edit)
        body = {"kind": "llm.call", "agent": "refunds", "environment": "test", "session": "s"}
        events.append(db, cur, [events.Event(events.new_id("evt"), now - HOUR, 'not {" JSON', events.columns_of(body))])
    db.close()
    found = client.get("/v1/spend", headers=admin, params={"since_us": now - DAY})
    assert found.status_code == 200, found.text
    assert _series(found.json())["m"]["total_usd"] == "0.003"


BUDGETS = """\
version: 1
default: allow
budgets:
  session: {max_cost_usd: 1}
  agent: {max_cost_usd: 50, window: 1h}
"""


def test_budgets_lists_only_budgets_in_use(client: TestClient, make_key: Any, server_db: str) -> None:
    keys = activated(client, make_key, BUDGETS, agent="refunds")
    agent = keys["agent"]
    for session, tokens in (("dear", 300_000), ("cheap", 1000), ("cheaper", 10)):
        usage = {"model": "gpt-4o", "prompt_tokens": tokens, "completion_tokens": 10, "session_id": session}
        assert client.post("/token-usage", headers=agent, json=usage).status_code == 200
    for n in range(3):  # sessions of tool calls only: nothing spent against their budget
        body = {"tool": "lookup", "args": {}, "session_id": f"tools-only-{n}"}
        assert client.post("/v1/check", headers=agent, json=body).status_code == 200
    quiet = {"X-API-Key": make_key("agent", agent="quiet")}
    assert client.post("/v1/check", headers=quiet, json={"tool": "lookup", "session_id": "q"}).status_code == 200
    _llm(server_db, time.time_ns() // 1000 - 3 * HOUR, model="gpt-4o", agent="quiet", session="q-old")

    found = client.get("/v1/budgets", headers=keys["admin"]).json()
    assert {(b["kind"], b["subject"]) for b in found} == {
        ("session", "dear"),
        ("session", "cheap"),
        ("session", "cheaper"),
        ("session", "q-old"),  # spent in its session, hours ago
        ("agent", "refunds"),  # spent within its window; quiet spent before its window began
    }
    assert [b["used"] for b in found] == sorted((b["used"] for b in found), reverse=True)
    top = client.get("/v1/budgets", headers=keys["admin"], params={"limit": 2}).json()
    assert [b["subject"] for b in top] == [b["subject"] for b in found[:2]]
    own = client.get("/v1/budgets", headers=agent).json()
    assert {b["agent"] for b in own} == {"refunds"}
    assert client.get("/v1/budgets", headers=keys["admin"], params={"limit": 0}).status_code == 422


def test_usage_and_spend_from_the_hourly_sums_equal_the_records(
    client: TestClient, make_key: Any, server_db: str
) -> None:
    """Ranges cut mid-hour, off-hour midnights and a session filter: the hourly sums (0020)
    answer whole hours, the records the rest, and every answer is the records' exact sum."""
    admin = {"X-API-Key": make_key("admin", agent=None)}
    hour = _midnight_utc(2) + 5 * HOUR
    top = 2**63 - 1
    _llm(server_db, hour - 1, model=HOSTILE_MODEL, nusd=top)
    _llm(server_db, hour, model=HOSTILE_MODEL, nusd=top, session="other")
    _llm(server_db, hour + HOUR // 2, model="m", nusd=None)
    _llm(server_db, hour + HOUR, model=HOSTILE_MODEL, nusd=1)

    def usage(**params: Any) -> dict[str, Any]:
        r = client.get("/v1/usage", headers=admin, params=params)
        assert r.status_code == 200, r.text
        return {row["key"]: row for row in r.json()}

    assert Decimal(usage()[HOSTILE_MODEL]["cost_usd"]) == Decimal(2 * top + 1) / 10**9  # exact past 2^64
    cut = usage(since_us=hour - 1, until_us=hour + HOUR // 2)  # a µs of one hour, half of the next
    assert cut[HOSTILE_MODEL]["calls"] == 2 and "m" not in cut
    assert usage(since_us=hour + 1, until_us=hour + HOUR + 1)["m"]["unpriced_calls"] == 1
    assert usage(session="other")[HOSTILE_MODEL]["calls"] == 1
    assert usage(by="session")["s"]["calls"] == 3
    assert sum(r["calls"] for r in usage(by="day").values()) == 4
    for params in ({"since_us": top, "until_us": top}, {"since_us": 0, "until_us": top}, {"agent": "\u202e" * 200}):
        assert client.get("/v1/usage", headers=admin, params=params).status_code == 200, params
    india = {"since_us": hour - 2 * DAY, "until_us": hour + DAY, "utc_offset_minutes": 330, "bucket": "hour"}
    for offset in (330, 0, -345):
        found = client.get("/v1/spend", headers=admin, params={**india, "utc_offset_minutes": offset}).json()
        assert _series(found)[HOSTILE_MODEL]["total_calls"] == 3
        assert Decimal(_series(found)[HOSTILE_MODEL]["total_usd"]) == Decimal(2 * top + 1) / 10**9
