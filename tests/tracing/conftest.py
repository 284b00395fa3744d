"""A real Arize Phoenix for the tracing tests: one `phoenix serve` per session, from `.venv-phoenix`."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator

import pytest

from ..conftest import IN_CI, REPO
from ._phoenix import Phoenix

PHOENIX = REPO / ".venv-phoenix" / "bin" / "phoenix"


def _free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (the sockets are held together, so no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """A running Phoenix on free 127.0.0.1 ports, with a fresh SQLite store; shared by the session.

    Skipped when `.venv-phoenix` is missing (`make phoenix` installs it); a failure under CI.
    """
    if not PHOENIX.exists():
        why = f"no Phoenix at {PHOENIX}: make phoenix"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    port, grpc_port = _free_ports(2)
    server = Phoenix(PHOENIX, tmp_path_factory.mktemp("phoenix"), port=port, grpc_port=grpc_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def phoenix_project(request: pytest.FixtureRequest) -> str:
    """A project name of this test's own, so tests sharing the session's Phoenix never see each other's spans."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', request.node.name)}-{uuid.uuid4().hex[:8]}"
