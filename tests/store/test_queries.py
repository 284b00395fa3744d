"""Read-side queries on SQLite and PostgreSQL: search in bounded windows, sessions, usage."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearance._store import Database, EventFilter
from clearance._store import _events as events
from clearance._store import _queries as queries


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


def _llm(at_us: int, model: str, cost_nusd: int | None, session: str, **tokens: int) -> events.Event:
    fields = {"agent": "bot", "environment": "t", "session": session, "model": model, "cost_nusd": cost_nusd}
    fields["cost_usd"] = None if cost_nusd is None else str(cost_nusd / 10**9)
    return events.make_event("llm.call", at_us, {**fields, **tokens, "tokens": sum(tokens.values())})


def test_usage_and_sessions_are_summed_by_the_database(store: Database) -> None:
    day = 86_400_000_000
    with store.write() as cur:
        events.append(
            store,
            cur,
            [
                _llm(1_790_000_000_000_000, "gpt-4o", 1_500_000, "a", input_tokens=1000, output_tokens=50),
                _llm(1_790_000_000_000_001, "gpt-4o", 2_000_000, "b", input_tokens=2000, cached_input_tokens=500),
                _llm(1_790_000_000_000_000 + day, "house-llm", None, "b", input_tokens=10, reasoning_tokens=7),
            ],
        )
    by_model = {r.key: r for r in queries.usage(store, EventFilter(), "model")}
    assert by_model["gpt-4o"].calls == 2 and by_model["gpt-4o"].input_tokens == 3000
    assert by_model["gpt-4o"].cached_input_tokens == 500 and by_model["gpt-4o"].output_tokens == 50
    assert str(by_model["gpt-4o"].cost_usd) == "0.0035" and by_model["gpt-4o"].unpriced_calls == 0
    assert by_model["house-llm"].unpriced_calls == 1 and by_model["house-llm"].cost_usd == 0
    assert by_model["house-llm"].reasoning_tokens == 7
    by_day = queries.usage(store, EventFilter(), "day")
    assert [(r.key, r.calls) for r in by_day] == [("2026-09-21", 2), ("2026-09-22", 1)]
    assert [r.key for r in queries.usage(store, EventFilter(session="b"), "session")] == ["b"]
    newest = queries.sessions(store, limit=1)
    assert [(s.session, s.llm_calls, s.unpriced_llm_calls, s.tokens) for s in newest] == [("b", 2, 1, 2517)]


def test_iterate_reads_bounded_ranges_and_new_events(store: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "ITERATE_WINDOW", 100)
    rare = EventFilter(tool="rare")
    expected = [e.seq for e in events.query(store, rare)]
    assert [e.seq for e in events.iterate(store, rare, batch=7)] == expected
    assert [e.seq for e in events.iterate(store, rare, after=expected[10], batch=7)] == expected[11:]
    seen = []
    for e in events.iterate(store, rare, after=expected[-2], batch=7):
        seen.append(e.seq)
        if len(seen) == 1:  # appended while the reader is between batches
            _seed(store, 100)
    assert seen[:2] == expected[-1:] + [3001] and len(seen) == 3  # the new rare ones, i = 0 and 97
    assert [e.seq for e in events.iterate(store, EventFilter(call_id="none"))] == []
