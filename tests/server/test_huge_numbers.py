"""Costs and token counts an agent reports near the 64-bit limit: every listing that adds them up still answers.

SQLite's SUM of integers raises "integer overflow" past 2^63: two `llm.call` records of the
largest cost ingest accepts made the sessions list and the budgets answer 503 for everyone,
and a session budget's fact could not be computed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store._events import new_id

from .conftest import activated

BIG = 2**63 - 1
POLICY = """\
version: 1
default: allow
budgets:
  session: {max_cost_usd: 5}
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


def test_listings_and_budget_facts_add_up_records_of_the_largest_cost_and_tokens(
    client: TestClient, make_key: Any
) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    now = time.time_ns() // 1000
    huge = [
        {"id": new_id("evt"), "at_us": now + i, "kind": "llm.call", "session": "s-huge", "model": "gpt-4o"}
        | {"input_tokens": BIG, "output_tokens": 0, "tokens": BIG, "cost_usd": str(BIG / 10**9), "cost_nusd": BIG}
        for i in range(3)
    ]
    sent = client.post("/v1/events", headers=keys["agent"], json={"events": huge})
    assert sent.status_code == 200 and not sent.json()["refused"], sent.text
    for who in ("admin", "agent"):
        for path, params in (
            ("/v1/sessions", {}),
            ("/v1/budgets", {}),
            ("/v1/usage", {"by": "model"}),
            ("/v1/usage", {"by": "session"}),
            ("/v1/spend", {"by": "model"}),
            ("/v1/replay", {"session": "s-huge"}),
            ("/v1/usage", {"by": "model", "since_us": BIG}),  # its first whole hour is past 2^63 − 1 (was a 500)
            ("/v1/usage", {"by": "agent", "since_us": BIG - 1, "until_us": BIG}),
        ):
            r = client.get(path, headers=keys[who], params=params)
            assert r.status_code == 200, (who, path, params, r.text)
    [listed] = [s for s in client.get("/v1/sessions", headers=keys["admin"]).json() if s["session"] == "s-huge"]
    assert float(listed["cost_usd"]) > 2.7e10 and listed["tokens"] > 2.7e19  # the sum, not a wrapped or failed one
    # The session's budget is spent many times over: the next call in it is stopped, not a 503.
    checked = client.post(
        "/v1/check", headers=keys["agent"], json={"tool": "lookup", "args": {}, "session_id": "s-huge"}
    )
    assert checked.status_code == 200, checked.text
    assert checked.json()["decision"] != "allow", checked.json()
