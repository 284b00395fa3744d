"""`GET /metrics`: who may read it, that the counters move by exactly what happened, and that it never fails."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store._events import new_id
from clearance.server import ServerSettings, create_app

from .._wait import until
from .conftest import _free_port, activated

POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {timeout: 30m}
  drop_table:
    default: block
  "db.*":
    default: allow
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # every metrics test runs on SQLite and PostgreSQL


def scrape(client: TestClient, key: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels."""
    r = client.get("/metrics", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def decided(tool: str, decision: str) -> dict[str, Any]:
    """A remote agent's locally decided call, as it ships it."""
    return {
        "v": 1,
        "id": "evt_" + new_id("evt")[4:],
        "kind": "tool_call.decided",
        "at_us": time.time_ns() // 1000,
        "session": "s1",
        "tool": tool,
        "call_id": "call_" + new_id("call")[5:],
        "decision": decision,
        "args": {},
        "rule_ids": [],
        "reason": "",
        "policy_revision": "rev_000000000000",
    }


def test_reading_metrics_takes_the_metrics_scope_or_an_admin(client: TestClient, make_key: Any) -> None:
    admin = make_key("admin", agent=None)
    created = client.post("/v1/keys", headers={"X-API-Key": admin}, json={"name": "prometheus", "scopes": ["metrics"]})
    assert created.status_code == 201 and created.json()["key"]["scopes"] == ["metrics"]
    metrics = created.json()["secret"]
    assert (
        client.post("/v1/keys", headers={"X-API-Key": admin}, json={"name": "x", "scopes": ["metric"]}).status_code
        == 422
    )

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": make_key("agent")}).status_code == 403
    assert client.get("/metrics", headers={"X-API-Key": make_key("approver", agent=None)}).status_code == 403
    assert client.get("/metrics", headers={"X-API-Key": metrics}).status_code == 200
    assert client.get("/metrics", headers={"X-API-Key": admin}).status_code == 200
    assert client.get("/metrics", headers={"X-API-Key": make_key("agent", "metrics")}).status_code == 200
    # A metrics key acts as no agent: no other route takes it (an agent-less key would read every agent's records).
    for method, path in (("GET", "/v1/me"), ("GET", "/v1/events"), ("GET", "/v1/sessions"), ("POST", "/v1/check")):
        r = client.request(method, path, headers={"X-API-Key": metrics}, json={"tool": "t", "args": {}})
        assert r.status_code == 403, (path, r.text)
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_the_counters_move_by_exactly_what_happened(client: TestClient, make_key: Any) -> None:
    keys = activated(client, make_key, POLICY, agent="bot")
    reader = make_key("metrics", agent=None)
    approver = {"X-API-Key": make_key("approver", agent=None)}
    before = scrape(client, reader)

    def check(tool: str, **args: Any) -> dict[str, Any]:
        r = client.post("/v1/check", headers=keys["agent"], json={"tool": tool, "args": args})
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert check("issue_refund", amount=5)["decision"] == "allow"
    asked = check("issue_refund", amount=500)
    assert asked["decision"] == "require_approval"
    assert check("drop_table")["decision"] == "block"
    assert check("db.read")["decision"] == "allow"
    assert check("unnamed_tool")["decision"] == "allow"
    batch = [decided("issue_refund", "allow"), decided("drop_table", "block")]
    r = client.post("/v1/events", headers=keys["agent"], json={"events": batch})
    assert r.json()["appended"] == 2
    r = client.post("/v1/events", headers=keys["agent"], json={"events": batch[:1]})  # shipped again
    assert r.json()["duplicates"] == 1

    pending = scrape(client, reader)
    assert value(pending, "clearance_approvals_pending") == value(before, "clearance_approvals_pending") + 1
    assert value(pending, "clearance_approval_oldest_pending_age_seconds") >= 0
    r = client.post(f"/v1/approvals/{asked['approval_id']}/approve", headers=approver, json={})
    assert r.status_code == 200, r.text

    def moved(name: str, **labels: str) -> float:
        return value(scrape(client, reader), name, **labels) - value(before, name, **labels)

    until(
        lambda: moved("clearance_approval_wait_seconds_count", outcome="approved") == 1, "the approval's wait counted"
    )
    until(lambda: moved("clearance_decisions_total", effect="allow", tool="issue_refund") == 2, "the allowed refunds")
    after = scrape(client, reader)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("clearance_decisions_total", effect="require_approval", tool="issue_refund") == 1
    assert delta("clearance_decisions_total", effect="block", tool="drop_table") == 2  # checked once, ingested once
    assert delta("clearance_decisions_total", effect="allow", tool="db.*") == 1  # the glob that named it
    assert delta("clearance_decisions_total", effect="allow", tool="other") == 1
    assert delta("clearance_check_duration_seconds_count", route="/v1/check") == 5
    assert delta("clearance_ingested_events_total", outcome="appended") == 2
    assert delta("clearance_ingested_events_total", outcome="duplicate") == 1
    assert delta("clearance_ingested_events_total", outcome="refused") == 0
    assert delta("clearance_approvals_pending") == 0
    assert value(after, "clearance_audit_chain_head") >= value(before, "clearance_audit_chain_head") + 9
    assert value(after, "clearance_store_errors_total", where="scrape") == 0


def test_hostile_tool_names_and_decisions_make_no_new_series(client: TestClient, make_key: Any) -> None:
    keys = activated(client, make_key, POLICY, agent="bot")
    reader = make_key("metrics", agent=None)
    hostile = [decided(f"tool_{n}_{'x' * 100}", "allow") for n in range(300)]
    hostile += [decided("drop_table", f"maybe_{n}") for n in range(50)]
    for at in range(0, len(hostile), 5):  # the test app takes 4 KiB bodies
        r = client.post("/v1/events", headers=keys["agent"], json={"events": hostile[at : at + 5]})
        assert r.status_code == 200 and not r.json()["refused"], r.text

    until(
        lambda: value(scrape(client, reader), "clearance_decisions_total", effect="other", tool="drop_table") == 50,
        "the hostile batch counted",
    )
    samples = scrape(client, reader)
    series = {labels for (name, labels) in samples if name == "clearance_decisions_total"}
    assert series == {(("effect", "allow"), ("tool", "other")), (("effect", "other"), ("tool", "drop_table"))}
    assert value(samples, "clearance_decisions_total", effect="allow", tool="other") == 300


def test_a_store_that_fails_does_not_fail_the_scrape(
    clock: ManualClock, client: TestClient, make_key: Any, server_db: str
) -> None:
    reader = make_key("metrics", agent=None)
    scrape(client, reader)  # the key is remembered (the clock stands still): its check reads no store
    app: Any = client.app
    working = app.state.db
    broken = Database(server_db)
    broken.close()  # every read now raises StoreError
    app.state.db = broken
    try:
        r = client.get("/metrics", headers={"X-API-Key": reader})
    finally:
        app.state.db = working
    assert r.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    assert value(samples, "clearance_store_errors_total", where="scrape") == 1
    assert ("clearance_approvals_pending", ()) not in samples  # left out, not reported as 0
    assert ("clearance_decisions_total", (("effect", "allow"), ("tool", "other"))) not in samples


def test_a_request_the_store_fails_is_counted(
    clock: ManualClock, client: TestClient, make_key: Any, server_db: str
) -> None:
    reader = make_key("metrics", agent=None)
    admin = {"X-API-Key": make_key("admin", agent=None)}
    client.get("/v1/keys", headers=admin)  # the key is remembered (the clock stands still) before the store goes
    app: Any = client.app
    working = app.state.db
    broken = Database(server_db)
    broken.close()
    app.state.db = broken
    try:
        assert client.get("/v1/keys", headers=admin).status_code == 503
    finally:
        app.state.db = working
    assert value(scrape(client, reader), "clearance_store_errors_total", where="request") == 1


def test_an_agents_reported_spool_backlog_is_a_gauge(client: TestClient, make_key: Any) -> None:
    keys = activated(client, make_key, POLICY, agent="bot")
    reader = make_key("metrics", agent=None)

    def ship(backlog: str | bytes) -> None:
        headers: dict[str, str | bytes] = {**keys["agent"], "Clearance-Spool-Backlog": backlog}
        r = client.post("/v1/events", headers=headers, json={"events": [decided("db.read", "allow")]})
        assert r.status_code == 200, r.text

    ship("7")
    samples = scrape(client, reader)
    assert value(samples, "clearance_remote_spool_backlog", agent="bot") == 7
    assert value(samples, "clearance_remote_spool_reported_timestamp_seconds", agent="bot") > 0
    for hostile in ("-1", "1e3", "9" * 13, "abc", " 5", "0x10", "٣".encode(), b"1\x00"):  # ignored, never an error
        ship(hostile)
    assert value(scrape(client, reader), "clearance_remote_spool_backlog", agent="bot") == 7
    ship("0")
    assert value(scrape(client, reader), "clearance_remote_spool_backlog", agent="bot") == 0


def test_webhook_deliveries_are_counted(tmp_path: Path, make_key: Any, server_db: str) -> None:
    with socket.socket() as closed:  # a port nothing listens on: every attempt fails at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/"
    settings = ServerSettings(database_url=server_db, webhook_allowed=(url,), webhook_secret="s" * 32)
    with TestClient(create_app(settings)) as client:
        keys = activated(client, make_key, POLICY, agent="bot")
        reader = make_key("metrics", agent=None)
        body = {"tool": "issue_refund", "args": {"amount": 500}, "approval_mode": "webhook", "webhook_url": url}
        assert client.post("/v1/check", headers=keys["agent"], json=body).json()["decision"] == "require_approval"
        approver = {"X-API-Key": make_key("approver", agent=None)}
        approval = client.get("/v1/approvals", headers=approver).json()[0]["id"]
        assert client.post(f"/v1/approvals/{approval}/approve", headers=approver, json={}).status_code == 200
        until(
            lambda: value(scrape(client, reader), "clearance_webhook_deliveries_total", outcome="failed") >= 1,
            "the failed delivery counted",
        )
        samples = scrape(client, reader)
        assert value(samples, "clearance_webhook_deliveries_total", outcome="delivered") == 0
        assert value(samples, "clearance_outbox_pending") == 1  # retried later


def test_the_metrics_address_serves_without_a_key(make_key: Any, server_db: str) -> None:
    port = _free_port()
    settings = ServerSettings(database_url=server_db, metrics_address=f"127.0.0.1:{port}")
    with TestClient(create_app(settings)) as client:
        keys = activated(client, make_key, POLICY, agent="bot")
        assert (
            client.post("/v1/check", headers=keys["agent"], json={"tool": "drop_table", "args": {}}).status_code == 200
        )
        assert client.get("/metrics").status_code == 401  # the API's port still takes a key

        def scraped() -> bool:
            r = httpx.get(f"http://127.0.0.1:{port}/metrics")
            return r.status_code == 200 and 'clearance_decisions_total{effect="block",tool="drop_table"} 1.0' in r.text

        until(scraped, "the block, on the metrics address")
    with pytest.raises(httpx.TransportError):  # stopped with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics")
