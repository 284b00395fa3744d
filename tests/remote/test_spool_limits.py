"""The spool ships a backlog of large records within the server's body limit, and sets aside one too large to go.

A real `clearance serve` subprocess, once on SQLite and once on PostgreSQL. Before batches were
cut by bytes, 500 records of ~4 KB made a body over the server's 1 MiB limit: it answered 413, the
shipper sent the same batch for ever and nothing behind it was delivered, while `flush()` said
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import clearance
from clearance._remote._spool import DEFAULT_BODY_LIMIT

from .._wait import until
from ..conftest import run_cli
from ..server.conftest import Server, _free_port
from ._agent import POLICY, connect

ARG = 4000  # bytes of argument per call: 500 records of it are about 2 MB


def _server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> Server:
    monkeypatch.setenv("CLEARANCE_MAX_BODY_BYTES", str(limit))
    url = str(tmp_path / "server.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    srv = Server(url, _free_port(), tmp_path / "server.log")
    srv.start()
    srv.publish(POLICY)
    return srv


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def default_limit(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server with the default body limit (1 MiB)."""
    srv = _server(request, tmp_path, monkeypatch, DEFAULT_BODY_LIMIT)
    yield srv
    clearance.shutdown()
    srv.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def small_limit(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server that takes at most 64 KiB a request: the shipper has to learn it."""
    srv = _server(request, tmp_path, monkeypatch, 65_536)
    yield srv
    clearance.shutdown()
    srv.stop()


def _lookup() -> object:
    @clearance.guard
    def lookup(order_id: str) -> str:
        return order_id[:10]

    return lookup


def _backlog(server: Server, tmp_path: Path, calls: int) -> list[str]:
    """`calls` large calls recorded while the server is down; their order ids."""
    connect(server, tmp_path)
    lookup = _lookup()
    server.kill()
    ids = [f"{n:05d}" + "x" * ARG for n in range(calls)]
    for order_id in ids:
        lookup(order_id)  # type: ignore[operator]
    server.start()
    return ids


def _delivered(server: Server) -> int:
    return sum(1 for e in server.events(kind="tool_call.decided", limit=1000) if e["tool"] == "lookup")


def test_a_backlog_of_large_records_is_delivered_within_the_default_limit(
    default_limit: Server, tmp_path: Path
) -> None:
    _backlog(default_limit, tmp_path, 300)  # 600 records, ~2.4 MB: more than one request may carry
    assert clearance.flush() is True
    assert clearance.spool_status().backlog == 0
    until(lambda: _delivered(default_limit) == 300, "every decision on the server")


def test_the_shipper_learns_a_smaller_limit_from_the_413(small_limit: Server, tmp_path: Path) -> None:
    _backlog(small_limit, tmp_path, 100)  # 200 records, ~800 KB, over a 64 KiB limit many times
    assert clearance.flush() is True
    until(lambda: _delivered(small_limit) == 100, "every decision on the server")
    from clearance._guard import _runtime

    shipper = _runtime.current().shipper  # type: ignore[attr-defined]
    assert shipper.body_limit == 65_536 and shipper.set_aside == 0


def test_a_record_too_large_to_go_alone_is_set_aside_and_flush_says_so(
    small_limit: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connect(small_limit, tmp_path)
    lookup = _lookup()
    small_limit.kill()
    lookup("before")  # type: ignore[operator]
    lookup("y" * 100_000)  # type: ignore[operator]  # alone, its record is over 64 KiB
    lookup("after")  # type: ignore[operator]
    small_limit.start()
    with caplog.at_level(logging.WARNING, logger="clearance.remote"):
        assert clearance.flush() is False  # one record could not be delivered
    assert "1 set aside" in caplog.text and "larger than the server takes" in caplog.text
    assert clearance.spool_status().backlog == 0  # nothing stuck behind it
    until(lambda: _delivered(small_limit) == 2, "the calls before and after it")
    got = {e["args"]["order_id"] for e in small_limit.events(kind="tool_call.decided") if e["tool"] == "lookup"}
    assert got == {"before", "after"}
    assert clearance.flush() is True  # nothing new failed since

    listed = run_cli("spool", "--spool", str(tmp_path / "spool" / "s.db"))
    assert listed.returncode == 1
    assert "1 record refused by the server" in listed.stdout
    assert "larger than the server takes in one request (65536 bytes" in listed.stdout


def test_a_record_the_background_shipper_set_aside_before_flush_is_still_reported(
    small_limit: Server, tmp_path: Path
) -> None:
    """The shipper's own thread may set the record aside before `flush()` is called (CI saw it)."""
    connect(small_limit, tmp_path)
    lookup = _lookup()
    small_limit.kill()
    lookup("y" * 100_000)  # type: ignore[operator]
    small_limit.start()
    from clearance._guard import _runtime

    shipper = _runtime.current().shipper  # type: ignore[attr-defined]
    until(lambda: shipper.set_aside == 1, "the background shipper to set the record aside")
    assert clearance.flush() is False  # set aside before this flush, not reported by any before it
    assert clearance.flush() is True  # reported once
