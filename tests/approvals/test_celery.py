"""The Celery + Redis example, with a real Redis at 127.0.0.1:6379 and a real Celery worker: the
agent's task ends while its refund waits, and the decision enqueues the task that finishes it."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import IN_CI, REPO, run_cli

EXAMPLE = REPO / "examples" / "celery"
REDIS_URL = os.environ.get("CLEARANCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 10m}}
"""


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is required under CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable ({exc}); set CLEARANCE_TEST_REDIS_URL")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def celery_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    _redis_or_skip()
    (tmp_path / "policy.yaml").write_text(POLICY)
    port = _port()
    env = {
        "CLEARANCE_POLICY": str(tmp_path / "policy.yaml"),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "CLEARANCE_AGENT": "refund-agent",
        "CLEARANCE_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhook",
        "CLEARANCE_WEBHOOK_SECRET": "whsec_celery_test",
        "REDIS_URL": REDIS_URL,
        "REFUND_QUEUE": f"clearance-test-{uuid.uuid4().hex[:8]}",
        "REFUND_LEDGER": str(tmp_path / "ledger"),
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{EXAMPLE}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("tasks", None)
    full = {**os.environ, **env}
    logs = [(tmp_path / "worker.log").open("w"), (tmp_path / "receiver.log").open("w")]
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
        cwd=EXAMPLE, env=full, stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    receiver = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "webhook:app", "--port", str(port)],
        cwd=EXAMPLE, env=full, stdout=logs[1], stderr=subprocess.STDOUT,
    )  # fmt: skip
    tasks = importlib.import_module("tasks")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/docs")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and receiver.poll() is None, (tmp_path / "receiver.log").read_text()
                time.sleep(0.05)
        assert tasks.ping.delay().get(timeout=30) == "pong", (tmp_path / "worker.log").read_text()
        yield {"tasks": tasks, "env": full, "ledger": tmp_path / "ledger", "db": tmp_path / "audit.db"}
    finally:
        for process in (worker, receiver):
            process.terminate()
            process.wait(30)
        for log in logs:
            log.close()
        import redis

        redis.Redis.from_url(REDIS_URL).delete(env["REFUND_QUEUE"])
        tasks.app.close()
        sys.modules.pop("tasks", None)


def ledger(app: dict[str, Any]) -> list[str]:
    return app["ledger"].read_text().splitlines() if app["ledger"].exists() else []


def wait_for_line(app: dict[str, Any], start: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.startswith(start) for line in ledger(app)):
        assert time.monotonic() < deadline, ledger(app)
        time.sleep(0.05)


def test_a_waiting_refund_frees_the_worker_and_the_decision_finishes_it(celery_app: dict[str, Any]) -> None:
    tasks = celery_app["tasks"]
    waiting = tasks.run_agent.delay("O-1", 900).get(timeout=30)
    assert waiting["status"] == "waiting"
    approval_id = waiting["approval_id"]
    # One worker process, one slot (solo pool): it is free although the refund is undecided.
    assert tasks.ping.delay().get(timeout=10) == "pong"
    assert tasks.run_agent.delay("O-0", 50).get(timeout=30) == {"status": "done", "message": "refunded 50 on O-0"}
    decided = run_cli("approve", approval_id, "--set", "amount=400", env=celery_app["env"])
    assert decided.returncode == 0 and "webhook sent (1)" in decided.stdout, decided.stderr
    wait_for_line(celery_app, "told customer O-1")
    assert [line for line in ledger(celery_app) if "O-1" in line] == [
        f"waiting O-1 {approval_id}",
        "refund O-1 400.0",
        "told customer O-1: refunded 400.0 on O-1",
    ]
    # A redelivered webhook or a retried task does not refund twice.
    assert tasks.resume_refund.delay(approval_id, "O-1").get(timeout=30) == {"status": "duplicate"}
    assert sum(line.startswith("refund O-1") for line in ledger(celery_app)) == 1


def test_a_denial_reaches_the_agents_follow_up(celery_app: dict[str, Any]) -> None:
    tasks = celery_app["tasks"]
    approval_id = tasks.run_agent.delay("O-2", 900).get(timeout=30)["approval_id"]
    decided = run_cli("deny", approval_id, "--note", "duplicate order", env=celery_app["env"])
    assert decided.returncode == 0, decided.stderr
    wait_for_line(celery_app, "told customer O-2")
    lines = ledger(celery_app)
    assert not any(line.startswith("refund O-2") for line in lines)
    assert any("not refunded" in line and "duplicate order" in line for line in lines)
