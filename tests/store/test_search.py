"""Audit search reads the log in bounded windows: a rare filter gives partial pages and cursors."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearance.store import Database, EventFilter
from clearance.store import _events as events
from clearance.store import _queries as queries


def _seed(db: Database, n: int) -> None:
    batch = [
        events.make_event(
            "tool_call.decided",
            1_790_000_000_000_000 + i,
            {"agent": "bot", "environment": "t", "tool": "rare" if i % 97 == 0 else "common", "args": {"i": i}},
        )
        for i in range(n)
    ]
    with db.write() as cur:
        events.append(db, cur, batch)


def _walk(db: Database, f: EventFilter, **kw: object) -> tuple[list[int], int]:
    """Every page from the newest: the positions found, and how many pages it took."""
    seqs, cursor, pages = [], None, 0
    while True:
        page, cursor = queries.search(db, f, before=cursor, **kw)  # type: ignore[arg-type]
        seqs += [e.seq for e in page]
        pages += 1
        if cursor is None:
            return seqs, pages


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = str(tmp_path / "s.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = Database(url)
    _seed(db, 3000)
    request.addfinalizer(db.close)
    return db


def test_a_rare_filter_pages_through_every_match_once(store: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "FIRST_WINDOW", 100)
    monkeypatch.setattr(queries, "MIN_WINDOW", 10)
    rare = EventFilter(tool="rare")
    expected = [e.seq for e in events.query(store, rare)][::-1]
    assert len(expected) == 31
    # no time at all: one window a page, so most pages are partial, some empty — and nothing is lost
    seqs, pages = _walk(store, rare, limit=10, budget=0)
    assert seqs == expected and pages > 4
    # time enough: full pages
    seqs, pages = _walk(store, rare, limit=10, budget=60)
    assert seqs == expected and pages == 4
    page, cursor = queries.search(store, rare, limit=10, budget=60, text='"i":2910')
    assert [e.body["args"] for e in page] == [{"i": 2910}] and cursor is None


def test_a_partial_page_says_where_to_go_on(store: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "FIRST_WINDOW", 100)
    monkeypatch.setattr(queries, "MIN_WINDOW", 10)
    page, cursor = queries.search(store, EventFilter(tool="nothing"), limit=10, budget=0)
    assert page == [] and cursor is not None and int(cursor) <= 3000 - 99
    page, cursor = queries.search(store, EventFilter(tool="nothing"), limit=10, budget=60)
    assert page == [] and cursor is None
    assert queries.search(store, EventFilter(), limit=5)[1] == 2996  # a full page: its last position
