"""The server's spans against what a hostile client sends: shown visibly, bounded, never a credential.

A path, query, user agent or Host a client sends, and the approval id in a decision's URL, reach
the server's spans made `visible` (a right-to-left override is `⟨U+202E RLO⟩` in a tracing UI),
and nothing in them stops the real OTLP encoder from encoding the batch (a lone surrogate would).
With header capture turned on, the API key, the session cookie and the CSRF token are redacted.
Each scenario runs in a process of its own, whose global tracer provider keeps the spans in memory;
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from clearance._store import Database
from clearance._store import _users as users
from clearance._visible import describe
from clearance.server._visible_spans import MAX_TEXT, VisibleTracerProvider

from ..conftest import REPO

# A request's headers go as latin-1 text in JSON, so any bytes reach the app as they are.
SCRIPT = r"""
import json, logging, sys
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

given = json.loads(sys.argv[1])
memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
trace.set_tracer_provider(provider)
if given["auto"]:  # as `opentelemetry-instrument` does: every FastAPI app instrumented when made
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    FastAPIInstrumentor().instrument()
from fastapi.testclient import TestClient
from clearance.server import ServerSettings, create_app

app = create_app(ServerSettings(database_url=given["db"], otel=True))

async def as_sent(scope, receive, send):
    # The header values' bytes as a server hands them to the app (h11 and httptools pass any byte
    # in a value); the test client would send them again as UTF-8.
    if scope["type"] == "http":
        raw = [(k[6:], bytes.fromhex(v.decode())) for k, v in scope["headers"] if k.startswith(b"x-raw-")]
        kept = [(k, v) for k, v in scope["headers"] if not k.startswith(b"x-raw-") and k not in dict(raw)]
        scope = {**scope, "headers": kept + raw}
    await app(scope, receive, send)

answers, secrets = [], []
with TestClient(as_sent, raise_server_exceptions=False) as c:
    for method, path, headers, body in given["requests"]:
        sent = {f"x-raw-{k}": v.encode("latin-1").hex() for k, v in headers}
        answer = c.request(method, path, headers=sent, json=body)
        answers.append(answer.status_code)
        if answer.headers.get("content-type") == "application/json" and isinstance(answer.json(), dict):
            secrets += [v for k, v in answer.json().items() if k == "csrf_token"]
    secrets += [v for v in c.cookies.values()]
spans = memory.get_finished_spans()

class Logged(logging.Handler):
    def emit(self, record):
        failed.append(record.getMessage())

failed = []
logging.getLogger("opentelemetry").addHandler(Logged(logging.WARNING))
encode_spans(spans).SerializeToString()  # what an OTLP exporter sends; what it cannot encode, it drops and logs
if failed:
    sys.exit(f"the OTLP encoder failed: {failed}")

def dump(s):
    return {
        "name": s.name,
        "kind": s.kind.name,
        "attributes": dict(s.attributes),
        "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in s.events],
        "links": [dict(link.attributes or {}) for link in s.links],
        "status": [s.status.status_code.name, s.status.description],
    }

print(json.dumps({"answers": answers, "secrets": secrets, "spans": [dump(s) for s in spans]}))
"""

RLO_PATH = "%E2%80%AEtxt.exe%00%E2%80%8B%ED%A0%80"  # RLO, NUL, zero-width space, an escaped lone surrogate
QUERY = "?q=%E2%80%AE%00%E2%80%8B"
# RLO and zero-width space in UTF-8; and a value with a byte that is not UTF-8, which the
# instrumentation would decode with `unicode_escape` (its escapes becoming a lone surrogate and a
# NUL): the server writes such a byte `%XX` before it (`_tracing._Decodable`), escapes and all.
AGENT = ("agent\u202e\u200b").encode().decode("latin-1")
ESCAPES = b"agent\xff\\ud800\\x00".decode("latin-1")
PASSWORD = "a long enough password"


def utf8(text: str) -> str:
    """A header value sent as its UTF-8 bytes."""
    return text.encode().decode("latin-1")


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


def run(server_db: str, requests: list[Any], *, auto: bool = False, **env: str) -> dict[str, Any]:
    """Run the requests against an app in a process of its own: the answers' codes and the spans."""
    given = json.dumps({"db": server_db, "auto": auto, "requests": requests})
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT, given],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "OTEL_TRACES_EXPORTER": "none", **env},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out: dict[str, Any] = json.loads(ran.stdout.splitlines()[-1])
    return out


def texts(span: dict[str, Any]) -> Iterator[str]:
    """Every text of a span: its name, its and its events' and links' keys and string values, its status."""
    yield span["name"]
    for attributes in (span["attributes"], *(e["attributes"] for e in span["events"]), *span["links"]):
        for key, value in attributes.items():
            yield key
            yield from (v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    yield from (e["name"] for e in span["events"])
    if span["status"][1]:
        yield span["status"][1]


def hidden(text: str) -> list[str]:
    """The hidden, direction-changing and control characters in `text`."""
    return [f"U+{ord(c):04X}" for c in text if describe(c) is not None]


def assert_all_visible(spans: list[dict[str, Any]]) -> None:
    for span in spans:
        for text in texts(span):
            assert not hidden(text), (span["name"], text)
            assert len(text) <= MAX_TEXT, (span["name"], text[:80])


def server_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["kind"] == "SERVER"]


@pytest.mark.parametrize("auto", [False, True], ids=["instrumented-by-the-server", "opentelemetry-instrument"])
def test_what_a_client_sends_is_shown_visibly_and_encodes(server_db: str, make_key: Any, auto: bool) -> None:
    admin, approver = make_key("admin", agent=None), make_key("approver", agent=None)
    forwarded = ("X-Forwarded-For", utf8("\u202e1.2.3.4"))
    out = run(
        server_db,
        [
            ["GET", f"/v1/approvals/{RLO_PATH}{QUERY}", [("X-API-Key", admin), ("User-Agent", AGENT), forwarded], None],
            ["POST", f"/v1/approvals/{RLO_PATH}/approve", [("X-API-Key", approver), ("User-Agent", ESCAPES)], None],
            ["GET", f"/nowhere/{RLO_PATH}{QUERY}", [("User-Agent", AGENT), forwarded], None],
        ],
        auto=auto,
        OTEL_SEMCONV_STABILITY_OPT_IN="http/dup",  # the old attributes (http.target, …) and the new (url.path, …)
    )

    assert out["answers"][0] in (404, 422) and out["answers"][1:] == [404, 404]  # refused, or not found
    spans = out["spans"]
    assert_all_visible(spans)
    served = server_spans(spans)
    assert len(served) == 3
    for span in served:  # the hostile text is there, shown, not dropped
        attributes = span["attributes"]
        assert "⟨U+202E RLO⟩txt.exe⟨U+0000 NUL⟩⟨U+200B ZWSP⟩" in attributes["url.path"]
        assert "⟨U+202E RLO⟩" in attributes["http.target"]
    agents = [(s["attributes"]["user_agent.original"], s["attributes"]["http.user_agent"]) for s in served]
    assert agents[0] == agents[2] == ("agent⟨U+202E RLO⟩⟨U+200B ZWSP⟩",) * 2
    assert agents[1] == ("agent%FF\\ud800\\x00",) * 2
    assert served[0]["attributes"]["http.url"].endswith("?q=⟨U+202E RLO⟩⟨U+0000 NUL⟩⟨U+200B ZWSP⟩")  # unquoted

    (decide,) = [s for s in spans if s["name"] == "clearance.approval.decide"]
    assert decide["status"][0] == "ERROR" and "no approval has the id" in decide["status"][1]
    assert decide["attributes"]["error.type"].startswith("clearance.")  # the exception's class
    assert "⟨U+202E RLO⟩" in decide["attributes"]["clearance.approval_id"]
    assert decide["events"] == []  # no exception event: its message and stack trace would be as raised


def test_a_store_transaction_that_fails_is_marked_without_its_exceptions_text(server_db: str, make_key: Any) -> None:
    out = run(server_db, [["POST", f"/v1/approvals/{RLO_PATH}/approve", [("X-API-Key", make_key("approver"))], None]])
    stores = [s for s in out["spans"] if s["name"].endswith("clearance-store")]
    assert stores
    assert_all_visible(out["spans"])
    assert all(set(s["attributes"]) <= {"db.system.name", "db.operation.name", "error.type"} for s in stores)
    assert all(s["events"] == [] for s in stores)


def test_with_header_capture_on_no_credential_reaches_a_span(server_db: str, make_key: Any) -> None:
    db = Database(server_db)
    users.create(db, "alice", PASSWORD, ["approver"], by="test")
    db.close()
    key = make_key("admin", agent=None)
    out = run(
        server_db,
        [
            ["POST", "/v1/login", [], {"username": "alice", "password": PASSWORD}],  # answers with Set-Cookie
            ["GET", "/v1/session", [("X-CSRF-Token", "csrf-sent-by-the-client")], None],  # with the cookie
            ["GET", "/v1/approvals", [("X-API-Key", key), ("X-Hostile", utf8("\u202e"))], None],
            ["GET", "/v1/approvals", [("Authorization", f"Bearer {key}"), ("Proxy-Authorization", "Basic cHc=")], None],
        ],
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=".*",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE=".*",
    )

    assert out["answers"] == [200, 200, 200, 200]
    assert len(set(out["secrets"])) == 2  # the CSRF token the login (and the session) answered with, the cookie
    secrets = [key, "csrf-sent-by-the-client", "cHc=", *out["secrets"]]
    spans = out["spans"]
    assert_all_visible(spans)
    for text in (t for s in spans for t in texts(s)):
        assert not any(secret in text for secret in secrets), text
    login, session, by_key, by_bearer = (s["attributes"] for s in server_spans(spans))
    assert login["http.response.header.set_cookie"] == ["[REDACTED]"]
    assert session["http.request.header.cookie"] == ["[REDACTED]"]
    assert session["http.request.header.x_csrf_token"] == ["[REDACTED]"]
    assert by_key["http.request.header.x_api_key"] == ["[REDACTED]"]
    assert by_key["http.request.header.x_hostile"] == ["⟨U+202E RLO⟩"]  # captured, and shown
    assert by_bearer["http.request.header.authorization"] == ["[REDACTED]"]
    assert by_bearer["http.request.header.proxy_authorization"] == ["[REDACTED]"]


def test_a_users_own_sanitize_list_is_kept_beside_ours(server_db: str, make_key: Any) -> None:
    key = make_key("admin", agent=None)
    out = run(
        server_db,
        [["GET", "/v1/approvals", [("X-API-Key", key), ("X-Team-Secret", "hunter2")], None]],
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST="x-api-key,x-team-secret",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS="x-team-secret",
    )
    (served,) = server_spans(out["spans"])
    assert served["attributes"]["http.request.header.x_team_secret"] == ["[REDACTED]"]
    assert served["attributes"]["http.request.header.x_api_key"] == ["[REDACTED]"]


# -- the spans' own wrapper, with a provider of the test's (not the process's) ----------------------


@pytest.fixture
def spans() -> Iterator[Any]:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield VisibleTracerProvider(provider).get_tracer("test"), memory
    provider.shutdown()


def test_everything_set_after_a_span_starts_is_shown_visibly_and_bounded(
    spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.trace import SpanContext, Status, StatusCode

    tracer, memory = spans
    hostile = "id\u202e\x00\ud800\u200b" + "x" * 100_000
    with tracer.start_as_current_span("GET \u202e", attributes={"a\u202e": hostile}) as span:
        span.set_attribute("route", hostile)
        span.set_attributes({"list": [hostile, "ok"], "n": 3})
        span.set_attribute("http.request.header.x_api_key", ["secret"])
        span.add_event("event\u202e", {"e": hostile})
        span.add_link(SpanContext(1, 2, is_remote=True), {"l": hostile})
        span.update_name("POST \u202e")
        span.record_exception(ValueError(hostile))
        span.set_status(Status(StatusCode.ERROR, hostile))
    with pytest.raises(KeyError), tracer.start_as_current_span("raises"):
        raise KeyError(hostile)

    finished = memory.get_finished_spans()
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        encode_spans(finished).SerializeToString()
    assert caplog.records == []  # what the encoder cannot encode it drops, and logs
    dumped = [
        {
            "name": s.name,
            "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()},
            "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in s.events],
            "links": [dict(link.attributes) for link in s.links],
            "status": [s.status.status_code.name, s.status.description],
        }
        for s in finished
    ]
    assert_all_visible(dumped)
    first, raised = dumped
    assert first["name"] == "POST ⟨U+202E RLO⟩"
    assert first["attributes"]["route"].startswith("id⟨U+202E RLO⟩⟨U+0000 NUL⟩⟨U+D800 SURROGATE⟩⟨U+200B ZWSP⟩x")
    assert first["attributes"]["http.request.header.x_api_key"] == ["[REDACTED]"]
    assert first["attributes"]["n"] == 3 and first["attributes"]["list"][1] == "ok"
    exception = first["events"][1]["attributes"]
    assert exception["exception.type"] == "ValueError"
    assert exception["exception.stacktrace"].endswith("x" * 100 + "\n")  # the end kept: where it was raised
    assert first["status"][0] == "ERROR"
    assert raised["status"][0] == "ERROR" and raised["events"][0]["attributes"]["exception.type"] == "KeyError"
