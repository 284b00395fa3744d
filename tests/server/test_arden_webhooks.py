"""ardenpy's webhook mode against a real `clearance serve`, received by the real `ardenpy.handle_webhook`.

The server delivers to an app on 127.0.0.1 whose endpoint is what ardenpy's documentation shows
(plus the freshness check docs/guides/ardenpy.md recommends); on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from clearance import _arden_webhooks as arden_webhooks

from .conftest import Server, _free_port

SECRET = "arden-signing-key-for-tests"
POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: Refunds over $200 need a lead}
  wire_money:
    rules:
      - {id: wire, when: 'true', effect: require_approval, reason: Wires need a person, approval: {timeout: 1s}}
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@dataclass
class Received:
    """One request the app got, and what it answered."""

    headers: dict[str, str]
    body: bytes
    status: int


class App:
    """The agent's web app: `POST /arden/webhook` hands the request to `ardenpy.handle_webhook`.

    It answers 200 when handle_webhook returns, 401 when it refuses the request (or the
    timestamp is not fresh), and 500 to the first `down` requests (the app is not up yet).
    """

    def __init__(self, ardenpy: ModuleType) -> None:
        self.received: list[Received] = []
        self.down = 0
        self.changed = threading.Condition()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = dict(self.headers)
                status = 200
                if app.down > 0:
                    app.down -= 1
                    status = 500
                else:
                    try:
                        fresh(headers)
                        ardenpy.handle_webhook(body, headers, signing_key=SECRET)
                    except ValueError:
                        status = 401
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
                with app.changed:
                    app.received.append(Received(headers, body, status))
                    app.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.prefix = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.url = f"{self.prefix}arden/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 20) -> list[Received]:
        """The requests so far, once `done` says they are enough."""
        with self.changed:
            assert self.changed.wait_for(lambda: done(self.received), timeout), self.received
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fresh(headers: dict[str, str], tolerance: int = 300) -> None:
    """docs/guides/ardenpy.md's check: ardenpy 0.5 verifies the signature but not the timestamp's age."""
    stamp = {k.lower(): v for k, v in headers.items()}.get("x-arden-timestamp", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance:
        raise ValueError("stale or missing X-Arden-Timestamp")


@dataclass
class Setup:
    ardenpy: ModuleType
    server: Server
    app: App

    def headers(self, who: str) -> dict[str, str]:
        return {"X-API-Key": getattr(self.server, who)}


@pytest.fixture
def setup(server_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    with warnings.catch_warnings():  # ardenpy still uses pydantic v1 validators
        warnings.simplefilter("ignore")
        import ardenpy
        import ardenpy._autopatch
    app = App(ardenpy)
    monkeypatch.setenv("CLEARANCE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("CLEARANCE_WEBHOOK_ALLOWED", app.prefix)
    monkeypatch.setenv("CLEARANCE_ARDEN_WEBHOOKS", f"refunds={app.url}")
    server = Server(server_db, _free_port(), tmp_path / "server.log")
    try:
        server.start()
        server.publish(POLICY)
        # configure() would patch installed frameworks' tool classes for good, in this process.
        monkeypatch.setattr(ardenpy._autopatch, "patch_all", lambda: [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ardenpy.configure(
                api_key=server.agent, api_url=server.base, environment="test", retry_attempts=1, signing_key=SECRET
            )
        yield Setup(ardenpy, server, app)
    finally:
        server.stop()
        app.close()


def issue_refund(order_id: str, amount: float) -> str:
    return f"refunded {order_id}"


def wire_money(to: str) -> str:
    return f"wired to {to}"


def ask(s: Setup, tool: Callable[..., str] = issue_refund, **args: Any) -> tuple[str, list[Any], list[Any]]:
    """Guard a tool in webhook mode and call it: its action id, and what each callback got."""
    approved: list[Any] = []
    denied: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guarded = s.ardenpy.guard_tool(
            tool.__name__, tool, approval_mode="webhook", on_approval=approved.append, on_denial=denied.append
        )
        pending = guarded(**(args or {"order_id": "A-2", "amount": 850}))
    assert type(pending).__name__ == "PendingApproval"
    return pending.action_id, approved, denied


def test_an_approval_reaches_the_app_once_through_retries_and_a_redelivery(setup: Setup) -> None:
    s = setup
    action_id, approved, denied = ask(s)
    seen = httpx.get(f"{s.server.base}/v1/approvals/{action_id}", headers=s.headers("approver")).json()
    assert seen["mode"] == "webhook"
    s.app.down = 1  # the first attempt finds the app down
    r = httpx.post(f"{s.server.base}/approve/{action_id}", headers=s.headers("approver"), json={"message": "ok"})
    assert r.status_code == 200
    got = s.app.wait_for(lambda rs: any(r.status == 200 for r in rs))
    assert [r.status for r in got] == [500, 200]
    [event] = approved
    assert denied == []
    assert (event.event_type, event.action_id, event.tool_name) == ("action_approved", action_id, "issue_refund")
    assert event.context == {"order_id": "A-2", "amount": 850}
    assert event.notes == "ok"
    assert event.approved_by and event.approved_by.startswith("key:")
    assert event.raw["action"]["agent_id"] == "refunds"
    assert got[0].headers["Clearance-Webhook-Id"] == got[1].headers["Clearance-Webhook-Id"]
    deliveries = httpx.get(f"{s.server.base}/v1/approvals/{action_id}/deliveries", headers=s.headers("approver")).json()
    assert [(d["url"], d["status"]) for d in deliveries] == [(s.app.url, "delivered")]
    assert [a["status_code"] for a in deliveries[0]["attempts"]] == [500, 200]
    # The same delivery again (a retry whose answer was lost): answered 200, the callback does not run twice.
    again = httpx.post(s.app.url, content=got[1].body, headers=_arden_headers(got[1]))
    assert again.status_code == 200
    assert len(approved) == 1


def test_a_denial_reaches_on_denial_with_the_message(setup: Setup) -> None:
    s = setup
    action_id, approved, denied = ask(s)
    r = httpx.post(f"{s.server.base}/deny/{action_id}", headers=s.headers("approver"), json={"message": "too much"})
    assert r.status_code == 200
    s.app.wait_for(lambda rs: len(rs) == 1)
    [event] = denied
    assert approved == []
    assert (event.event_type, event.action_id, event.notes) == ("action_denied", action_id, "too much")
    assert event.raw["approval"]["action"] == "deny"
    status = httpx.get(f"{s.server.base}/status/{action_id}", headers=s.headers("agent")).json()
    assert status["status"] == "denied"


def test_an_expiry_reaches_on_denial(setup: Setup) -> None:
    s = setup
    action_id, approved, denied = ask(s, wire_money, to="ACME")
    s.app.wait_for(lambda rs: len(rs) == 1)  # nobody decides: the server's sweep expires it after 1 s
    [event] = denied
    assert approved == []
    assert (event.event_type, event.action_id, event.notes) == ("action_denied", action_id, "expired")
    assert event.raw["action"]["clearance_status"] == "expired"
    assert event.context == {"to": "ACME"}


def test_an_approvers_edit_is_what_the_app_is_given(setup: Setup) -> None:
    s = setup
    action_id, approved, _ = ask(s)
    edit = {"order_id": "A-2", "amount": 200}
    r = httpx.post(
        f"{s.server.base}/v1/approvals/{action_id}/approve", headers=s.headers("approver"), json={"args": edit}
    )
    assert r.status_code == 200, r.text
    s.app.wait_for(lambda rs: len(rs) == 1)
    assert [e.context for e in approved] == [edit]


def test_forged_and_stale_requests_are_refused(setup: Setup) -> None:
    s = setup
    action_id, approved, _ = ask(s)
    s.app.down = 1  # keep the genuine request for later: the app answers it 500 unread
    httpx.post(f"{s.server.base}/approve/{action_id}", headers=s.headers("approver"), json={})
    [genuine] = s.app.wait_for(lambda rs: len(rs) == 1)
    s.app.down = 10  # and the retries too, while the forgeries are tried
    headers = _arden_headers(genuine)
    tampered = genuine.body.replace(b'"amount":850', b'"amount":8500')
    assert tampered != genuine.body
    stamp = int(headers["X-Arden-Timestamp"])
    forgeries = [
        (tampered, headers),  # the body changed
        (genuine.body, {**headers, "X-Arden-Timestamp": str(stamp + 1)}),  # the timestamp changed
        (genuine.body, {**headers, "X-Arden-Signature": arden_webhooks.sign("guessed", stamp, genuine.body)}),
        (genuine.body, {"Content-Type": "application/json"}),  # not signed at all
    ]
    for body, h in forgeries:
        with pytest.raises(ValueError, match="signature|Missing"):
            s.ardenpy.handle_webhook(body, h, signing_key=SECRET)
    assert approved == []
    # Signed with the key but 20 minutes old (a captured request replayed): ardenpy 0.5 accepts
    # its signature, so the app's freshness check is what refuses it.
    old = stamp - 1200
    stale = {
        **headers,
        "X-Arden-Timestamp": str(old),
        "X-Arden-Signature": arden_webhooks.sign(SECRET, old, genuine.body),
    }
    assert s.ardenpy.verify_webhook_signature(genuine.body, str(old), stale["X-Arden-Signature"], SECRET)
    s.app.down = 0
    assert httpx.post(s.app.url, content=genuine.body, headers=stale).status_code == 401
    assert approved == []
    # The genuine delivery, retried, still gets through.
    s.app.wait_for(lambda rs: any(r.status == 200 for r in rs))
    assert [e.context["amount"] for e in approved] == [850]


def test_an_agent_cannot_choose_where_the_server_posts(setup: Setup) -> None:
    """ardenpy sends no URL; one a hostile key adds to the body is ignored, never fetched."""
    s = setup
    hostile = "http://169.254.169.254/latest/meta-data/"
    r = httpx.post(
        f"{s.server.base}/policy/check",
        headers=s.headers("agent"),
        json={
            "tool_name": "issue_refund",
            "kwargs": {"order_id": "X", "amount": 900},
            "metadata": {"webhook_url": hostile},
            "webhook_url": hostile,
            "approval_mode": "webhook",
        },
    )
    assert r.status_code == 200, r.text
    action_id = r.json()["action_id"]
    httpx.post(f"{s.server.base}/approve/{action_id}", headers=s.headers("approver"), json={})
    s.app.wait_for(lambda rs: len(rs) == 1)
    deliveries = httpx.get(f"{s.server.base}/v1/approvals/{action_id}/deliveries", headers=s.headers("approver")).json()
    assert [d["url"] for d in deliveries] == [s.app.url]


def test_an_approval_decided_from_the_cli_reaches_the_app_in_ardenpy_form(setup: Setup) -> None:
    """`clearance approvals approve` delivers at once from its own process: to an Arden URL, as ardenpy reads it."""
    from ..conftest import run_cli

    s = setup
    action_id, approved, _ = ask(s)
    s.server.stop()  # only the command delivers
    run_cli("approvals", "approve", action_id, "--note", "ok", db=s.server.db, check=True)
    [got] = s.app.wait_for(lambda rs: len(rs) == 1)
    assert got.status == 200 and [(e.action_id, e.notes) for e in approved] == [(action_id, "ok")]


def _arden_headers(r: Received) -> dict[str, str]:
    keep = ("x-arden-timestamp", "x-arden-signature", "content-type", "clearance-webhook-id")
    canonical = {"x-arden-timestamp": "X-Arden-Timestamp", "x-arden-signature": "X-Arden-Signature"}
    return {canonical.get(k.lower(), k): v for k, v in r.headers.items() if k.lower() in keep}


HOSTILE = [
    "refunds=ftp://127.0.0.1:1/hook",
    "refunds=javascript:alert(1)",
    "refunds=http://127.0.0.1:1/\x00",
    "refunds=http://127.0.0.1:1/a\r\nX-Injected: 1",
    "refunds=http://127.0.0.1:1/\u202ekoohw",
    "refunds=http://127.0.0.1:1/\ud800",
    "refunds=http://127.0.0.1:1@169.254.169.254/",
    "refunds=http://127.0.0.1:1/#frag",
    "refunds=http://127.0.0.1:99999/",
    "refunds=http:///nohost",
    "refunds=http://169.254.169.254/latest/",  # not under the allowed prefix
    "refunds=http://127.0.0.1:1/" + "a" * 10_000_000,
    "refunds=http://127.0.0.1:1/a,refunds=http://127.0.0.1:1/b",  # named twice
    "\u202erefunds=http://127.0.0.1:1/",
    "no-url-at-all",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_arden_webhook_settings_are_refused_naming_the_setting(value: str) -> None:
    from pydantic import ValidationError

    from clearance.server import ServerSettings

    with pytest.raises(ValidationError, match="(?i)arden_webhooks") as refused:
        ServerSettings(webhook_allowed=("http://127.0.0.1:1/",), arden_webhooks=value)
    assert len(str(refused.value)) < 2000


def test_the_server_does_not_start_with_a_hostile_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from ..conftest import CLI, REPO

    monkeypatch.setenv("CLEARANCE_WEBHOOK_ALLOWED", "http://127.0.0.1:1/")
    monkeypatch.setenv("CLEARANCE_ARDEN_WEBHOOKS", "refunds=http://169.254.169.254/latest/")
    done = subprocess.run(
        [*CLI, "serve", "--port", str(_free_port()), "--database-url", str(tmp_path / "s.db")],
        env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CLEARANCE_ARDEN_WEBHOOKS" in done.stderr and "Traceback" not in done.stderr, done.stderr
