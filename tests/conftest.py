from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import _clock
from clearance._guard import _runtime
from clearance._guard._governor import Governor

PG_URL = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clearance.cli"]
# The Python processes tests start write their output as they go, as a terminal shows it: an
# example that prints, then runs a command writing to the same output, reads in that order
# (through a pipe Python would hold its own lines until it exits).
os.environ["PYTHONUNBUFFERED"] = "1"


# -- no network beyond loopback ------------------------------------------------------------------


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX
        return True
    host = address[0] if isinstance(address, tuple) else address
    return host in ("localhost", "::1") or str(host).startswith("127.")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _guarded(real: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: socket.socket, *args: Any) -> Any:
        address = args[-1]
        if not _is_local(address):
            raise OSError(f"tests may not reach the network: {address!r}")
        return real(self, *args)

    return call


socket.socket.connect = _guarded(_real_connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(_real_connect_ex)  # type: ignore[method-assign]
socket.socket.sendto = _guarded(_real_sendto)  # type: ignore[method-assign]


# -- configuration -----------------------------------------------------------------------------

REFUND_POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: refund-needs-approval
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: 30m}
      - id: refund-daily-cap
        when: facts.sum_24h_amount + args.amount > 1000
        effect: block
        reason: daily refund cap
  send_email:
    rules:
      - id: external-mail
        when: '!all_in(domains(args.to), ["acme.com"])'
        effect: block
  "db.*":
    default: block
redact:
  issue_refund: [/card_number]
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("CLEARANCE_") and name != "CLEARANCE_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    clearance.shutdown()
    _runtime._tools.clear()


@pytest.fixture
def clock() -> Iterator[_clock.ManualClock]:
    """A manual clock in place of the system clock: move it with `advance`, never sleep."""
    with _clock.using(_clock.ManualClock()) as manual:
        yield manual


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def configure(tmp_path: Path, db_path: Path) -> Callable[..., Governor]:
    """Configure Clearance with a policy given as text (default: the refund policy)."""

    def setup(policy: str = REFUND_POLICY, **kwargs: Any) -> Governor:
        path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(textwrap.dedent(policy))
        kwargs.setdefault("database_url", str(db_path))
        kwargs.setdefault("agent", "test-agent")
        clearance.configure(policy=str(path), **kwargs)
        return _runtime.current()

    return setup


def run_cli(
    *args: str,
    db: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the real `clearance` command in a subprocess."""
    argv = [*CLI, *args]
    if db is not None:
        argv += ["--database", str(db)]
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(f"clearance {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A SQLAlchemy URL to a fresh, empty schema on the test PostgreSQL."""
    import psycopg

    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        admin = psycopg.connect(plain, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_URL} is required under CI: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable ({exc}); set CLEARANCE_TEST_PG_URL")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
