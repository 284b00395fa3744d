"""The server's side of tracing: the span a call was made in, from the agent's headers and records.

What the server keeps is only ever a well-formed traceparent: a hostile header or field is
ignored (dropped from the record), never an error and never a lost record. A call keeps the span
its agent names whatever the server's own `otel` (the dashboard's `trace_url` links it); `otel`
decides whether the server traces its requests and emits spans. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance import ConfigurationError
from clearance._guard._record import decided_event, prepare
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store._events import EventFilter, new_id, query
from clearance.policy import parse_policy
from clearance.server import ServerSettings, create_app

from ..conftest import REPO
from .conftest import activated, post_raw

POLICY = """\
version: 1
tools:
  refund:
    rules:
      - {id: big, when: 'args.amount > 100', effect: require_approval, reason: big refund}
"""
SPAN = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ZERO_TRACE = "00-" + "0" * 32 + "-00f067aa0ba902b7-01"
ZERO_SPAN = "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"
HOSTILE: dict[str, bytes] = {
    "garbage": b"garbage",
    "empty": b"",
    "zero-trace-id": ZERO_TRACE.encode(),
    "zero-span-id": ZERO_SPAN.encode(),
    "version-ff": b"ff" + SPAN[2:].encode(),
    "upper-case": SPAN.upper().encode(),
    "trailing-nul": SPAN.encode() + b"\x00",
    "inner-nul": SPAN[:10].encode() + b"\x00" + SPAN[11:].encode(),
    "two-values": f"{SPAN},{OTHER}".encode(),
    "latin-1": SPAN[:-2].encode() + b"\xe9\xff",
    "a-megabyte": b"00-" + b"a" * 1_000_000,
}


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture(autouse=True)
def _no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process app makes no tracer provider of its own (spans are read in tests/remote)."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")


def app_client(server_db: str, *, otel: bool) -> TestClient:
    return TestClient(create_app(ServerSettings(database_url=server_db, otel=otel)), raise_server_exceptions=False)


@pytest.fixture(params=[True, False], ids=["otel", "no-otel"])
def client(request: pytest.FixtureRequest, server_db: str) -> Iterator[TestClient]:
    with app_client(server_db, otel=request.param) as c:
        yield c


def decided(server_db: str) -> list[dict[str, Any]]:
    db = Database(server_db)
    try:
        return [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
    finally:
        db.close()


def approval_trace(server_db: str, approval_id: str) -> str | None:
    db = Database(server_db)
    try:
        return approvals.get(db, approval_id).trace
    finally:
        db.close()


def check(client: TestClient, agent: dict[str, str], amount: int, headers: list[tuple[bytes, bytes]]) -> Any:
    answer = client.post(
        "/v1/check",
        headers=[*((k.encode(), v.encode()) for k, v in agent.items()), *headers],
        json={"tool": "refund", "args": {"amount": amount}},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- the span a checked call was made in -------------------------------------------------------


def test_the_span_the_agent_names_is_kept_on_the_call_and_its_approval(
    client: TestClient, make_key: Any, server_db: str
) -> None:
    agent = activated(client, make_key, POLICY, agent="bot")["agent"]
    allowed = check(client, agent, 5, [(b"Clearance-Trace", SPAN.encode()), (b"traceparent", OTHER.encode())])
    asked = check(client, agent, 500, [(b"Clearance-Trace", SPAN.encode())])

    assert allowed["decision"] == "allow" and asked["decision"] == "require_approval"
    assert [r.get("trace") for r in decided(server_db)] == [SPAN, SPAN]  # the call's span, not the HTTP client's
    assert approval_trace(server_db, asked["approval_id"]) == SPAN


def test_without_clearance_trace_the_requests_traceparent_is_the_calls_span(
    client: TestClient, make_key: Any, server_db: str
) -> None:
    agent = activated(client, make_key, POLICY, agent="bot")["agent"]
    check(client, agent, 5, [(b"traceparent", OTHER.encode())])
    check(client, agent, 5, [(b"Clearance-Trace", b"garbage"), (b"traceparent", OTHER.encode())])
    check(client, agent, 5, [])
    assert [r.get("trace") for r in decided(server_db)] == [OTHER, OTHER, None]


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_trace_header_is_ignored_and_the_call_decided_and_recorded(
    client: TestClient, make_key: Any, server_db: str, value: bytes
) -> None:
    agent = activated(client, make_key, POLICY, agent="bot")["agent"]
    allowed = check(client, agent, 5, [(b"Clearance-Trace", value), (b"traceparent", value)])
    asked = check(client, agent, 500, [(b"Clearance-Trace", value), (b"traceparent", value)])

    assert allowed["decision"] == "allow" and asked["decision"] == "require_approval"
    records = decided(server_db)
    assert [r["call_id"] for r in records] == [allowed["call_id"], asked["call_id"]]
    assert all("trace" not in r for r in records)
    assert approval_trace(server_db, asked["approval_id"]) is None


# -- records a remote agent ships ---------------------------------------------------------------


@pytest.fixture
def agent(client: TestClient, make_key: Any) -> dict[str, str]:
    return activated(client, make_key, POLICY, agent="bot")["agent"]


def decided_record(**more: Any) -> dict[str, Any]:
    policy = parse_policy(POLICY, "p.yaml")
    event = decided_event(
        1_000,
        agent="bot",
        environment="test",
        session="s1",
        tool="refund",
        call_id=new_id("call"),
        decision=policy.decide("refund", {"amount": 5}, {}),
        prepared=prepare(policy, "refund", {"amount": 5}),
        facts={},
        approval_id=None,
    )
    return {**json.loads(event.body), **more}


def finished_record(**more: Any) -> dict[str, Any]:
    fields = {"session": "s1", "tool": "refund", "call_id": new_id("call"), "decision": "ok", "duration_ms": 1.5}
    return {"v": 1, "id": new_id("evt"), "kind": "tool_call.finished", "at_us": 2_000, **fields, **more}


def usage_record(**more: Any) -> dict[str, Any]:
    fields = {"session": "s1", "model": "gpt-x", "input_tokens": 10, "output_tokens": 2, "latency_ms": 3.0}
    return {"v": 1, "id": new_id("evt"), "kind": "llm.call", "at_us": 3_000, **fields, **more}


def stored(server_db: str, ids: list[str]) -> list[dict[str, Any]]:
    db = Database(server_db)
    try:
        by_id = {e.body["id"]: e.body for e in query(db, EventFilter())}
    finally:
        db.close()
    return [by_id[i] for i in ids]


def test_shipped_records_keep_their_spans(client: TestClient, agent: dict[str, str], server_db: str) -> None:
    sent = [
        decided_record(trace=SPAN),
        finished_record(trace=OTHER, asked_in=SPAN),
        usage_record(trace=SPAN, usage_traced=True),
    ]
    answer = client.post("/v1/events", headers=agent, json={"events": sent}).json()

    assert answer["appended"] == 3 and answer["refused"] == []
    kept = stored(server_db, [r["id"] for r in sent])
    assert kept[0]["trace"] == SPAN
    assert (kept[1]["trace"], kept[1]["asked_in"]) == (OTHER, SPAN)
    assert (kept[2]["trace"], kept[2]["usage_traced"]) == (SPAN, True)


BAD_FIELDS: dict[str, Any] = {
    "garbage": "garbage",
    "number": 5,
    "null": None,
    "object": {"trace": SPAN},
    "zero-trace-id": ZERO_TRACE,
    "upper-case": SPAN.upper(),
    "nul": SPAN[:-1] + "\x00",
    "lone-surrogate": SPAN[:-1] + "\ud800",
    "long": SPAN + "0" * 100_000,
}


@pytest.mark.parametrize("bad", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_malformed_span_is_dropped_from_a_shipped_record_which_is_stored(
    client: TestClient, agent: dict[str, str], server_db: str, bad: Any
) -> None:
    sent = [
        decided_record(trace=bad),
        finished_record(trace=bad, asked_in=bad),
        finished_record(trace=SPAN, asked_in=bad),
        usage_record(trace=bad, usage_traced=bad),
    ]
    answer = post_raw(client, "/v1/events", {"events": sent}, agent)

    assert answer.status_code == 200, answer.text
    assert answer.json()["appended"] == 4 and answer.json()["refused"] == []
    kept = stored(server_db, [r["id"] for r in sent])
    spans = [{k for k in ("trace", "asked_in", "usage_traced") if k in r} for r in kept]
    assert spans == [set(), set(), {"trace"}, set()]
    assert kept[2]["trace"] == SPAN
    assert [r["call_id"] for r in kept[:3]] == [r["call_id"] for r in sent[:3]]


def test_usage_traced_is_kept_only_as_true(client: TestClient, agent: dict[str, str], server_db: str) -> None:
    sent = [usage_record(usage_traced=True), usage_record(usage_traced=False), usage_record(usage_traced="true")]
    assert client.post("/v1/events", headers=agent, json={"events": sent}).json()["appended"] == 3
    assert [r.get("usage_traced") for r in stored(server_db, [r["id"] for r in sent])] == [True, None, None]


# -- turning it on -----------------------------------------------------------------------------


def test_otel_instruments_the_app_and_off_leaves_it_alone(server_db: str) -> None:
    on = create_app(ServerSettings(database_url=server_db, otel=True))
    off = create_app(ServerSettings(database_url=server_db))
    assert getattr(on, "_is_instrumented_by_opentelemetry", False) is True
    assert getattr(off, "_is_instrumented_by_opentelemetry", False) is False


def test_without_otel_no_instrumentation_sdk_or_sink_is_imported(server_db: str, make_key: Any) -> None:
    # Only these: FastAPI (0.165 on) imports the OpenTelemetry API itself, whatever Clearance does.
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from clearance.server import ServerSettings, create_app\n"
        f"with TestClient(create_app(ServerSettings(database_url={server_db!r}))) as c:\n"
        f"    c.post('/v1/check', headers={{'X-API-Key': {make_key('agent', agent='bot')!r},"
        f" 'Clearance-Trace': {SPAN!r}}}, json={{'tool': 'refund'}})\n"
        "ours = ('opentelemetry.instrumentation', 'opentelemetry.sdk', 'clearance._sinks._otel')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")},
        check=True,
    )
    assert ran.stdout.strip() == "[]", ran.stdout + ran.stderr


def test_without_the_otel_extra_the_server_says_how_to_install_it(
    server_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.fastapi", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'clearance\[otel\]'"):
        create_app(ServerSettings(database_url=server_db, otel=True))


def test_an_exporter_the_environment_names_must_be_installed(server_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin_json")
    with pytest.raises(ConfigurationError, match="zipkin_json"):
        create_app(ServerSettings(database_url=server_db, otel=True))


def test_a_traced_requests_store_transactions_are_its_child_spans(server_db: str, make_key: Any) -> None:
    script = TRACED + (
        "from fastapi.testclient import TestClient\n"
        "from clearance.server import ServerSettings, create_app\n"
        f"with TestClient(create_app(ServerSettings(database_url={server_db!r}, otel=True))) as c:\n"
        f"    answer = c.get('/v1/approvals', headers={{'X-API-Key': {make_key('admin')!r}}})\n"
        "    assert answer.status_code == 200, answer.text\n"
        "spans = memory.get_finished_spans()\n"
        "server = [s for s in spans if s.kind == trace.SpanKind.SERVER]\n"
        "store = [s for s in spans if s.name.endswith('clearance-store')]\n"
        "assert server and store, [s.name for s in spans]\n"
        "ids = {s.context.span_id for s in spans}\n"
        "assert all(s.parent is not None and s.parent.span_id in ids for s in store)\n"
        "assert all(s.context.trace_id == server[0].context.trace_id for s in store)\n"
        "print(sorted({(s.name, s.attributes['db.system.name']) for s in store}))\n"
    )
    ran = in_a_process(script)
    dialect = "sqlite" if server_db.endswith(".db") or "sqlite" in server_db else "postgresql"
    assert f"('read clearance-store', '{dialect}')" in ran.stdout


def test_a_call_asked_about_again_says_where_it_was_first_asked(
    client: TestClient, make_key: Any, server_db: str
) -> None:
    agent = activated(client, make_key, POLICY, agent="bot")["agent"]

    def ask(span: str) -> Any:
        answer = client.post(
            "/v1/check",
            headers={**agent, "Clearance-Trace": span},
            json={"tool": "refund", "args": {"amount": 500}, "call_key": "tool-call-7"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    first, again = ask(SPAN), ask(OTHER)  # a resumed graph asks about its paused call again
    assert first["asked_in"] is None
    assert again["approval_id"] == first["approval_id"] and again["asked_in"] == SPAN


def test_with_otel_off_the_server_makes_no_spans_even_in_a_traced_process(server_db: str) -> None:
    script = TRACED + (
        "from fastapi.testclient import TestClient\n"
        "from clearance.server import ServerSettings, create_app\n"
        f"with TestClient(create_app(ServerSettings(database_url={server_db!r}))) as c:\n"
        "    c.get('/v1/\\u202eapprovals')\n"
        "print([s.name for s in memory.get_finished_spans()])\n"
    )
    ran = in_a_process(script)
    assert ran.stdout.strip() == "[]"


# A process whose global tracer provider keeps its spans in `memory` (it can be set once a process).
TRACED = (
    "from opentelemetry import trace\n"
    "from opentelemetry.sdk.trace import TracerProvider\n"
    "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
    "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
    "memory = InMemorySpanExporter()\n"
    "provider = TracerProvider()\n"
    "provider.add_span_processor(SimpleSpanProcessor(memory))\n"
    "trace.set_tracer_provider(provider)\n"
)


def in_a_process(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh Python (no exporter from the environment); it must succeed."""
    ran = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "OTEL_TRACES_EXPORTER": "none"},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


@pytest.mark.parametrize(
    ("path", "query", "agent"),
    [
        ("/healthz", b"q=\xff\xfe", b"ok"),
        ("/v1/approvals", b"x=\xff", b"ok"),
        ("/v1/approvals", b"", b"\\x\xff"),  # neither UTF-8 nor a valid escape
        ("/v1/approvals", b"a=%ZZ&\xc3", b"\\u12"),
    ],
)
def test_bytes_the_instrumentation_cannot_decode_never_make_a_5xx(
    server_db: str, path: str, query: bytes, agent: bytes
) -> None:
    app = create_app(ServerSettings(database_url=server_db, otel=True))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", agent)],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8321),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def request() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(request())
    (status,) = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert status < 500


def test_a_span_that_cannot_be_shown_never_fails_the_request(
    server_db: str, make_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clearance.server import _visible_spans

    def broken(value: str) -> str:
        raise RuntimeError("a visible() that breaks")

    monkeypatch.setattr(_visible_spans, "visible", broken)
    with app_client(server_db, otel=True) as c:
        answer = c.get("/v1/approvals", headers={"X-API-Key": make_key("admin")})
    assert answer.status_code == 200, answer.text
