"""Webhook mode: signed deliveries from a persistent outbox, and the helpers and examples that
receive them (FastAPI, Flask, Django)."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import clearance
from clearance import WebhookError, _decisions, verify_webhook
from clearance._cli import main
from clearance._clock import ManualClock
from clearance._decisions import Decider
from clearance._guard import _runtime
from clearance._guard._governor import Governor
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _outbox as outbox
from clearance._webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

from ..conftest import REPO, run_cli

EXAMPLES = REPO / "examples" / "webhooks"
SECRET = "whsec_test_0123456789abcdef"
POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 10m}}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))


def signed(body: bytes, *, secret: str = SECRET, at: int | None = None, event_id: str | None = None) -> dict[str, str]:
    ts = int(time.time()) if at is None else at
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body), "Content-Type": "application/json"}
    if event_id:
        headers["Clearance-Webhook-Id"] = event_id
    return headers


# -- verifying ---------------------------------------------------------------------------------


def test_verify_accepts_only_fresh_untampered_signed_events() -> None:
    body = json.dumps({"id": "whe_1", "type": "approval.approved", "approval": {"id": "apr_1"}}).encode()
    assert verify_webhook(body, signed(body), SECRET)["id"] == "whe_1"
    lowered = {k.lower(): v for k, v in signed(body).items()}
    assert verify_webhook(body.decode(), lowered, SECRET)["approval"] == {"id": "apr_1"}
    bad = [
        (body.replace(b"apr_1", b"apr_2"), signed(body), "does not match"),  # tampered body
        (body, signed(body, secret="whsec_other"), "does not match"),  # another secret
        (body, signed(body, at=int(time.time()) - 301), "outside the 300s tolerance"),  # stale: a replay
        (body, signed(body, at=int(time.time()) + 400), "outside the 300s tolerance"),  # from the future
        (body, {TIMESTAMP_HEADER: str(int(time.time()))}, "missing"),
        (body, {**signed(body), TIMESTAMP_HEADER: "yesterday"}, "not a number"),
        (b"not json", signed(b"not json"), "not JSON"),
        (b'{"id": "x"}', signed(b'{"id": "x"}'), "not a Clearance event"),
        (body, signed(body, event_id="whe_other"), "does not match the event"),
    ]
    for raw, headers, problem in bad:
        with pytest.raises(WebhookError, match=problem):
            verify_webhook(raw, headers, SECRET)
    with pytest.raises(WebhookError, match="no webhook secret"):
        verify_webhook(body, signed(body), "")


# -- the examples, through their own frameworks' test clients ----------------------------------


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {
        "CLEARANCE_POLICY": str(tmp_path / "policy.yaml"),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "CLEARANCE_AGENT": "refunds",
        "CLEARANCE_WEBHOOK_SECRET": SECRET,
        "CLEARANCE_WEBHOOK_URL": "http://127.0.0.1:9/unused",
        "REFUND_LEDGER": str(tmp_path / "refunds.log"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("refund_tools", "fastapi_app", "flask_app", "django_app"):
        sys.modules.pop(name, None)
    yield {"env": env, "db": tmp_path / "audit.db", "ledger": tmp_path / "refunds.log"}
    for name in ("refund_tools", "fastapi_app", "flask_app", "django_app"):
        sys.modules.pop(name, None)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def decided_webhook(app_env: dict[str, Any], *, approve: bool, **kw: Any) -> tuple[bytes, str]:
    """A webhook-mode call, decided: the body the outbox would POST, and its event id."""
    tools = importlib.import_module("refund_tools")
    pending = tools.issue_refund("W-1", 900)
    assert isinstance(pending, clearance.PendingApproval)
    db = _runtime.current().db  # type: ignore[attr-defined]
    _decisions.decide(db, pending.approval_id, approve=approve, by=LEAD, **kw)
    [(message, attempts)] = outbox.for_approval(db, pending.approval_id)
    assert message.status == "pending" and attempts == [] and message.url == "http://127.0.0.1:9/unused"
    return message.payload.encode(), message.id


def fastapi_post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    from fastapi.testclient import TestClient

    with TestClient(importlib.import_module("fastapi_app").app) as client:
        r = client.post("/clearance/webhook", content=body, headers=headers)
        return r.status_code, r.json()


def flask_post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    client = importlib.import_module("flask_app").app.test_client()
    r = client.post("/clearance/webhook", data=body, headers=headers)
    return r.status_code, r.get_json()


def django_post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    importlib.import_module("django_app")
    from django.test import Client

    r = Client().post("/clearance/webhook", data=body, content_type="application/json", headers=headers)
    return r.status_code, json.loads(r.content)


@pytest.mark.parametrize("post", [fastapi_post, flask_post, django_post], ids=["fastapi", "flask", "django"])
def test_each_example_runs_an_approved_call_once_and_refuses_forgeries(
    app_env: dict[str, Any], post: Callable[[bytes, dict[str, str]], tuple[int, dict[str, Any]]]
) -> None:
    body, event_id = decided_webhook(app_env, approve=True, args={"amount": 250})
    assert post(body.replace(b"W-1", b"W-9"), signed(body)) == (400, {"error": "the webhook signature does not match"})
    stale = post(body, signed(body, at=int(time.time()) - 600))
    assert stale[0] == 400 and "tolerance" in stale[1]["error"]
    assert lines(app_env["ledger"]) == []  # nothing ran for a forged or stale request
    assert post(body, signed(body, event_id=event_id)) == (200, {"outcome": "executed"})
    assert post(body, signed(body, event_id=event_id)) == (200, {"outcome": "duplicate"})  # a replay
    assert lines(app_env["ledger"]) == ["W-1 250.0"]
    assert lines(Path(str(app_env["ledger"]) + ".notes")) == ["done: refunded 250.0 on W-1"]


@pytest.mark.parametrize("post", [fastapi_post, flask_post, django_post], ids=["fastapi", "flask", "django"])
def test_each_example_reports_a_denial_once(
    app_env: dict[str, Any], post: Callable[[bytes, dict[str, str]], tuple[int, dict[str, Any]]]
) -> None:
    body, _ = decided_webhook(app_env, approve=False, note="customer already refunded")
    assert post(body, signed(body)) == (200, {"outcome": "denied"})
    assert post(body, signed(body)) == (200, {"outcome": "duplicate"})
    assert lines(app_env["ledger"]) == []
    assert lines(Path(str(app_env["ledger"]) + ".notes")) == [
        "not done: issue_refund denied by user:lena: customer already refunded"
    ]


# -- delivery over real HTTP, with retries -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """The FastAPI example served by a real uvicorn process."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.url = f"http://127.0.0.1:{port}/clearance/webhook"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(self.port)],
                cwd=EXAMPLES,
                env={**os.environ, **self.env, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{EXAMPLES}"},
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/docs")
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def test_the_cli_delivers_at_once_and_the_worker_retries(
    app_env: dict[str, Any],
    tmp_path: Path,
    configure: Callable[..., Governor],
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = Receiver(app_env["env"], free_port(), tmp_path / "receiver.log")
    gov = configure(POLICY, database_url=str(app_env["db"]), agent="refunds", webhook_url=receiver.url)
    tools = importlib.import_module("refund_tools")
    pending = tools.issue_refund("W-2", 900)
    assert isinstance(pending, clearance.PendingApproval)
    env = {**app_env["env"], "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{EXAMPLES}"}
    # The receiver is down: the CLI's immediate attempt fails and is recorded.
    decided = run_cli("approve", pending.approval_id, db=app_env["db"], env=env)
    assert decided.returncode == 0 and "webhook not delivered yet" in decided.stderr
    [(message, attempts)] = outbox.for_approval(gov.db, pending.approval_id)
    assert (
        message.status == "pending" and attempts[0].status_code is None and "ConnectError" in (attempts[0].error or "")
    )
    receiver.start()
    try:
        clock.set(message.next_attempt_at_us / 1e6 + 0.01)  # the first retry is due (a second later)
        monkeypatch.setattr(sys, "path", list(sys.path))  # the worker puts "." first; undone after
        worker = CliRunner().invoke(main, ["worker", "--import", "refund_tools", "--once"])  # in this process
        assert worker.exit_code == 0, worker.output
        db = Database(str(app_env["db"]))  # the worker shut the configuration down as it ended
        try:
            [(message, attempts)] = outbox.for_approval(db, pending.approval_id)
            assert message.status == "delivered" and [a.status_code for a in attempts] == [None, 200]
            assert lines(app_env["ledger"]) == ["W-2 900.0"]
            assert approvals.get(db, pending.approval_id).status == "executed"
        finally:
            db.close()
    finally:
        receiver.stop()


def test_the_server_delivers_signed_webhooks_and_shows_the_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_env: dict[str, Any]
) -> None:
    from ..server.conftest import Server, _free_port

    receiver_port = free_port()
    monkeypatch.setenv("CLEARANCE_WEBHOOK_ALLOWED", f"http://127.0.0.1:{receiver_port}/")
    db = tmp_path / "server.db"
    Database(str(db)).close()
    server = Server(db, _free_port(), tmp_path / "server.log")
    server.start()
    remote_env = {
        "CLEARANCE_SERVER_URL": server.base,
        "CLEARANCE_API_KEY": server.agent,
        "CLEARANCE_SPOOL_PATH": str(tmp_path / "receiver-spool.db"),
        "CLEARANCE_WEBHOOK_SECRET": SECRET,
        "REFUND_LEDGER": app_env["env"]["REFUND_LEDGER"],
    }
    receiver = Receiver(remote_env, receiver_port, tmp_path / "receiver.log")
    try:
        server.publish(POLICY)
        receiver.start()
        for name in ("CLEARANCE_POLICY", "CLEARANCE_DATABASE_URL"):
            monkeypatch.delenv(name)
        clearance.configure(
            server_url=server.base,
            api_key=server.agent,
            spool_path=str(tmp_path / "agent-spool.db"),
            webhook_url="http://10.0.0.1/hook",
        )
        tools = importlib.import_module("refund_tools")
        with pytest.raises(clearance.ToolCallBlocked, match="does not send webhooks there"):
            tools.issue_refund("W-3", 900)  # not an allowed prefix: fails closed
        clearance.configure(
            server_url=server.base,
            api_key=server.agent,
            spool_path=str(tmp_path / "agent-spool.db"),
            webhook_url=receiver.url,
        )
        pending = tools.issue_refund("W-3", 900)
        assert isinstance(pending, clearance.PendingApproval)
        h = {"X-API-Key": server.approver}
        assert httpx.post(f"{server.base}/v1/approvals/{pending.approval_id}/approve", headers=h).status_code == 200
        deadline = time.monotonic() + 15
        while lines(app_env["ledger"]) == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines(app_env["ledger"]) == ["W-3 900.0"]
        deliveries = httpx.get(f"{server.base}/v1/approvals/{pending.approval_id}/deliveries", headers=h).json()
        assert [(d["event_type"], d["status"]) for d in deliveries] == [("approval.approved", "delivered")]
        assert deliveries[0]["attempts"][0]["status_code"] == 200
    finally:
        clearance.shutdown()
        receiver.stop()
        server.stop()


def test_every_attempt_is_signed_afresh_under_the_same_event_id(app_env: dict[str, Any]) -> None:
    """Retries carry the same Clearance-Webhook-Id (receivers drop duplicates by it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(500 if len(received) == 1 else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, event_id = decided_webhook(app_env, approve=True)
        db = _runtime.current().db  # type: ignore[attr-defined]
        with db.write() as cur:  # point the pending webhook at this receiver
            cur.execute(db.sql("UPDATE outbox SET url = :u"), {"u": f"http://127.0.0.1:{server.server_address[1]}/"})
        from clearance._webhooks import deliver_due

        assert deliver_due(db, SECRET) == 0  # the 500
        with db.write() as cur:  # the retry is due now
            cur.execute(db.sql("UPDATE outbox SET next_attempt_at_us = 0"))
        assert deliver_due(db, SECRET) == 1
    finally:
        server.shutdown()
        server.server_close()
    ids = [headers["Clearance-Webhook-Id"] for headers, _ in received]
    assert ids == [event_id, event_id]
    for headers, body in received:  # each attempt verifies on its own
        assert verify_webhook(body, headers, SECRET)["id"] == event_id


def test_a_pass_with_nothing_due_opens_no_http_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's delivery loop runs every 2 s and on every approval change: a pass with nothing
    to send must not build an HTTP client (its TLS context costs milliseconds of CPU each time)."""
    import clearance._webhooks as webhooks

    opened: list[object] = []
    real = httpx.Client

    def counting(*args: Any, **kwargs: Any) -> httpx.Client:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(webhooks.httpx, "Client", counting)
    db = Database(str(tmp_path / "quiet.db"))
    try:
        assert webhooks.deliver_due(db, SECRET) == 0
        assert webhooks.deliver_due(db, None) == 0
    finally:
        db.close()
    assert opened == []
