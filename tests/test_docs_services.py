"""The docs' examples that need a service beside them run as their pages show them, against the real
thing: the webhook receiver under uvicorn, the Celery example with a real Redis and worker, a
remote-mode agent against a real `clearance serve`, the ardenpy receiver the server delivers to,
and the SIEM sink of docs/extending.md posting to an HTTP collector.

Each page's `<!-- file: NAME -->` blocks are written to a fresh directory and its shell block's
commands are run there (the port in them swapped for a free one); the glue here only plays the
agent's caller and the person who approves.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import REPO, run_cli
from .fake_openai import FakeServer, send_json
from .server.conftest import Server, _free_port
from .test_docs_examples import DOCS, Block, blocks, commands

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: Refunds over $200 need a lead}
      - {id: huge, when: 'args.amount > 5000', effect: block, reason: Refunds over $5000 are never issued}
"""


def files(page: str, into: Path) -> dict[str, str]:
    """Write the page's `file:` blocks into `into`; their code by name."""
    found = {b.markers["file"]: b.code for b in blocks(DOCS / page) if "file" in b.markers}
    for name, code in found.items():
        (into / name).write_text(code)
    return found


def shell(page: str) -> Block:
    """The page's last shell block: how it says to run the example."""
    return [b for b in blocks(DOCS / page) if b.language in ("sh", "bash")][-1]


def env_of(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(tmp_path)]), **extra}


@contextmanager
def serving(argv: list[str], cwd: Path, env: dict[str, str], log: Path, ready: str | None = None) -> Iterator[None]:
    """A command of the page, run in `cwd` until the block ends; `ready`: a URL it answers once up."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while ready is not None:
            try:
                httpx.get(ready)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def python(code: str, cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def approve(approval_id: str, cwd: Path, env: dict[str, str]) -> str:
    """A person approves with the CLI, in the example's directory and settings; what it printed."""
    argv = [sys.executable, "-m", "clearance.cli", "approve", approval_id, "--note", "verified"]
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_for_line(path: Path, start: str, timeout: float = 60) -> list[str]:
    """The file's lines once one starts with `start` (a process beside the test writes it)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if any(line.startswith(start) for line in lines):
            return lines
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)


# ---------------------------------------------------------------- webhooks


def test_the_webhook_receiver_runs_an_approved_call_once(tmp_path: Path) -> None:
    """docs/guides/webhooks.md: the tool module and the FastAPI receiver, run as its shell block says."""
    shown = files("guides/webhooks.md", tmp_path)
    assert shown == {n: (REPO / "examples/webhooks" / n).read_text() for n in shown}  # what test_webhooks.py runs
    (tmp_path / "policy.yaml").write_text(POLICY)
    port = str(_free_port())
    env = env_of(tmp_path, REFUND_LEDGER=str(tmp_path / "refunds.log"))
    served: list[str] = []
    for words in commands(shell("guides/webhooks.md").code):
        words = [w.replace("8080", port) for w in words]
        if words[0] == "export":
            for word in words[1:]:
                name, _, value = word.partition("=")
                env[name] = secrets.token_hex(32) if value == "VALUE" else value  # VALUE: `$(openssl rand -hex 32)`
        else:
            served = words
    assert served[0] == "uvicorn" and env["CLEARANCE_WEBHOOK_URL"].startswith(f"http://127.0.0.1:{port}/")
    (tmp_path / ".clearance").mkdir()
    with serving(served, tmp_path, env, tmp_path / "uvicorn.log", ready=f"http://127.0.0.1:{port}/docs"):
        approval_id = python(
            "import refund_tools; print(refund_tools.issue_refund('A-1', 850).approval_id)", tmp_path, env
        ).strip()
        assert approval_id.startswith("apr_")  # the agent's call returned at once
        assert not (tmp_path / "refunds.log").exists()
        assert "webhook sent" in approve(approval_id, tmp_path, env)  # the CLI delivers it at once
    assert (tmp_path / "refunds.log").read_text().splitlines() == ["A-1 850.0"]
    assert (tmp_path / "refunds.log.notes").read_text().splitlines() == ["done: refunded 850.0 on A-1"]


# ---------------------------------------------------------------- Celery


def test_the_celery_example_frees_the_worker_and_the_decision_finishes_the_refund(tmp_path: Path) -> None:
    """docs/guides/celery.md: tasks.py and webhook.py, the worker and the receiver as its shell block runs them."""
    from .approvals.test_celery import REDIS_URL, _redis_or_skip

    _redis_or_skip()
    shown = files("guides/celery.md", tmp_path)
    assert shown == {n: (REPO / "examples/celery" / n).read_text() for n in shown}  # what test_celery.py runs
    (tmp_path / "policy.yaml").write_text(POLICY)
    port = str(_free_port())
    queue = f"clearance-docs-{uuid.uuid4().hex[:8]}"
    env = env_of(
        tmp_path,
        CLEARANCE_POLICY="policy.yaml",
        CLEARANCE_DATABASE_URL=str(tmp_path / "audit.db"),
        CLEARANCE_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhook",
        CLEARANCE_WEBHOOK_SECRET=secrets.token_hex(32),
        REDIS_URL=REDIS_URL,
        REFUND_QUEUE=queue,
        REFUND_LEDGER=str(tmp_path / "ledger"),
    )
    run = [[w.replace("8080", port) for w in words] for words in commands(shell("guides/celery.md").code)]
    assert [words[0] for words in run] == ["celery", "uvicorn"]
    ask = "from tasks import {task}; print({task}.delay({args}).get(timeout=60))"
    try:
        with ExitStack() as stack:
            for i, words in enumerate(run):
                ready = f"http://127.0.0.1:{port}/docs" if words[0] == "uvicorn" else None
                stack.enter_context(serving(words, tmp_path, env, tmp_path / f"{words[0]}-{i}.log", ready))
            waiting = python(ask.format(task="run_agent", args="'O-1', 900"), tmp_path, env)
            assert "'status': 'waiting'" in waiting
            assert python(ask.format(task="ping", args=""), tmp_path, env).strip() == "pong"  # the worker is free
            [approval_id] = [w.strip("',}") for w in waiting.split() if w.startswith("'apr_")]
            assert "webhook sent" in approve(approval_id, tmp_path, env)
            lines = wait_for_line(tmp_path / "ledger", "told customer O-1")
    finally:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(queue)
    assert lines == [f"waiting O-1 {approval_id}", "refund O-1 900.0", "told customer O-1: refunded 900.0 on O-1"]


# ---------------------------------------------------------------- remote mode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = Server(tmp_path / "server.db", _free_port(), tmp_path / "server.log")
    served.start()
    yield served
    served.stop()


def test_the_remote_mode_example_decides_from_the_server_s_policy(tmp_path: Path, server: Server) -> None:
    """docs/guides/remote.md's agent against a real `clearance serve`, with an agent key."""
    server.publish(POLICY)
    [example] = [b for b in blocks(DOCS / "guides/remote.md") if b.language == "python"]
    agent = tmp_path / "agent"
    agent.mkdir()
    env = env_of(agent, CLEARANCE_SERVER_URL=server.base, CLEARANCE_API_KEY=server.agent)
    out = python(example.code, agent, env)
    assert out.splitlines() == [
        "refunded 45 on A-1",
        "blocked: Refunds over $5000 are never issued",
        "shipped: True",
    ]
    decided = [e for e in server.events(kind="tool_call.decided") if e["session"] == "ticket-4711"]
    assert sorted(e["decision"] for e in decided) == ["allow", "block"]
    assert {e["agent"] for e in decided} == {"refunds"}  # the key's agent


# ---------------------------------------------------------------- ardenpy

ARDEN_APP = """
import sys, threading, time

import uvicorn

import arden_setup  # the page's ardenpy.configure(...)
import ardenpy
from receiver import app  # the page's receiver

served = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"))
threading.Thread(target=served.run, daemon=True).start()
while not served.started:
    time.sleep(0.01)

got, done = [], threading.Event()
refund = ardenpy.guard_tool(
    "issue_refund",
    lambda order_id, amount: f"refunded {amount} on {order_id}",
    approval_mode="webhook",
    on_approval=lambda event: (got.append(("approved", event.context, event.notes)), done.set()),
    on_denial=lambda event: (got.append(("denied", event.context, event.notes)), done.set()),
)
print(refund(order_id="A-2", amount=850).action_id, flush=True)
assert done.wait(60), "no webhook reached the receiver"
print(got, flush=True)
"""


def test_the_ardenpy_receiver_gets_the_decision_and_refuses_forged_and_stale_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/guides/ardenpy.md's set-up and receiver in an agent's app; a real server delivers the decision."""
    pytest.importorskip("ardenpy")
    files("guides/ardenpy.md", tmp_path)
    port, secret = _free_port(), secrets.token_hex(32)
    receiver = f"http://127.0.0.1:{port}/arden/webhook"
    monkeypatch.setenv("CLEARANCE_WEBHOOK_SECRET", secret)  # the server's settings, as the page shows them
    monkeypatch.setenv("CLEARANCE_WEBHOOK_ALLOWED", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("CLEARANCE_ARDEN_WEBHOOKS", f"refunds={receiver}")
    server = Server(tmp_path / "server.db", _free_port(), tmp_path / "server.log")
    server.start()
    try:
        server.publish(POLICY)
        env = env_of(tmp_path, ARDEN_API_KEY=server.agent, ARDEN_API_URL=server.base, ARDEN_SIGNING_KEY=secret)
        app = subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", ARDEN_APP, str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.stdout is not None
            action_id = app.stdout.readline().strip()
            assert action_id.startswith("apr_"), app.stderr.read() if app.stderr else ""
            body = b'{"event_type": "action_approved", "action": {"action_id": "' + action_id.encode() + b'"}}'
            now = str(int(time.time()))
            forged = httpx.post(
                receiver, content=body, headers={"X-Arden-Timestamp": now, "X-Arden-Signature": "sha256=0"}
            )
            stale = httpx.post(receiver, content=body, headers={"X-Arden-Timestamp": str(int(now) - 3600)})
            assert (forged.status_code, stale.status_code) == (401, 401)
            approver = {"X-API-Key": server.approver}
            decided = httpx.post(f"{server.base}/approve/{action_id}", headers=approver, json={"message": "ok"})
            assert decided.status_code == 200
            out, err = app.communicate(timeout=90)
        finally:
            if app.poll() is None:
                app.kill()
                app.wait(10)
        assert app.returncode == 0, err
        assert ast.literal_eval(out) == [("approved", {"order_id": "A-2", "amount": 850}, "ok")]  # called once
    finally:
        server.stop()


# ---------------------------------------------------------------- a SIEM sink


class Collector(FakeServer):
    """A SIEM's HTTP collector on 127.0.0.1: keeps each POST's body and authorization header."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.authorizations: list[str | None] = []
        super().__init__()

    def answer(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        self.authorizations.append(handler.headers.get("authorization"))
        if self.status != 200:
            handler.send_response(self.status)
            handler.send_header("content-length", "0")
            handler.end_headers()
            return
        send_json(handler, {"text": "Success", "code": 0})


def test_the_siem_sink_example_posts_every_record_to_the_collector(tmp_path: Path) -> None:
    """docs/extending.md's sink, as shown, against a collector that keeps what it is sent."""
    [example] = [b for b in blocks(DOCS / "extending.md") if b.language == "python" and "class Siem" in b.code]
    collector = Collector()
    try:
        token = secrets.token_hex(16)
        python(example.code, tmp_path, env_of(tmp_path, SIEM_URL=f"{collector.url}/events", SIEM_TOKEN=token))
    finally:
        collector.close()
    assert collector.authorizations and set(collector.authorizations) == {f"Bearer {token}"}
    sent = [event for batch in collector.requests for event in batch]
    db = next((tmp_path / ".clearance").glob("*.db"))
    stored = [json.loads(line) for line in run_cli("audit", "export", db=db, check=True).stdout.splitlines()]
    # A new sink starts at the newest event (here the policy's activation): each one after it, once, in order.
    assert [r["kind"] for r in stored] == ["policy.activated", "tool_call.decided", "tool_call.finished"]
    assert [(e["id"], e["kind"]) for e in sent] == [(r["id"], r["kind"]) for r in stored[1:]]
    assert [e["event"]["tool"] for e in sent] == ["lookup_order"] * 2


def test_the_siem_sink_example_s_calls_run_while_the_collector_refuses(tmp_path: Path) -> None:
    """A collector that answers 503: the example's sink raises, the guarded call is not held up, and it exits."""
    [example] = [b for b in blocks(DOCS / "extending.md") if b.language == "python" and "class Siem" in b.code]
    collector = Collector(status=503)
    try:
        python(example.code, tmp_path, env_of(tmp_path, SIEM_URL=f"{collector.url}/events", SIEM_TOKEN="t"))
    finally:
        collector.close()
    assert collector.requests  # it tried
    db = next((tmp_path / ".clearance").glob("*.db"))
    stored = [json.loads(line) for line in run_cli("audit", "export", db=db, check=True).stdout.splitlines()]
    assert [r["kind"] for r in stored][1:] == ["tool_call.decided", "tool_call.finished"]  # the call ran
