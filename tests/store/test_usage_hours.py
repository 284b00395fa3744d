"""The hourly usage sums (0020): kept equal to the LLM calls' sums by every append, by the
migration and by archiving, and summaries read from them answer exactly what summing the records
answers — on SQLite and PostgreSQL, with hostile names, huge counts and ranges cut mid-hour."""

from __future__ import annotations

import threading
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from clearance._store import Database, EventFilter
from clearance._store import _archives as archives
from clearance._store import _events as events
from clearance._store import _queries as queries
from clearance._store import _rollup as rollup
from clearance._store import _spend as spend

from ._migrate import migrate

HOUR = rollup.HOUR_US
AT = 1_790_000_000_000_000 // HOUR * HOUR  # a whole hour
BIG = 2**63 - 1
MODELS = [None, "gpt-4o", "", "None", "rtl\u202egpt", "lone\\ud800", "m" * 200, "ü" * 200, "a'; DROP TABLE events;--"]
KIND = events.ROW_COLUMNS.index("kind")
AGENTS = ["refunds", "agent\u2066x", "b" * 200]
# Times at and around hour edges, and a few before 1970
TIMES = st.one_of(
    st.sampled_from([0, -1, -HOUR, HOUR - 1]),
    st.builds(lambda h, d: AT + h * HOUR + d, st.integers(-3, 30), st.sampled_from([0, 1, -1, HOUR // 2])),
)
COUNTS = st.one_of(st.none(), st.integers(0, 5000), st.just(BIG), st.integers(2**62, BIG))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h.db'}"
    return str(request.getfixturevalue("pg_url"))


def _call(at: int, agent: str, model: str | None, cost: int | None, tokens: int | None, session: str) -> events.Event:
    fields = {"agent": agent, "environment": "test", "session": session, "model": model, "cost_nusd": cost}
    fields |= {"input_tokens": tokens, "output_tokens": 7, "cached_input_tokens": None, "reasoning_tokens": tokens}
    return events.make_event("llm.call", at, fields)


CALLS = st.lists(
    st.builds(_call, TIMES, st.sampled_from(AGENTS), st.sampled_from(MODELS), COUNTS, COUNTS, st.sampled_from("st")),
    min_size=1,
    max_size=12,
)


def _append(db: Database, batch: list[events.Event]) -> None:
    other = events.make_event("tool_call.decided", AT, {"agent": "refunds", "environment": "test", "tool": "t"})
    with db.write() as cur:
        events.append(db, cur, [other, *batch])  # a batch that is not all LLM calls


def _calls(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as cur:
        cur.execute(
            "SELECT at_us, agent, model, session, cost_nusd, input_tokens, cached_input_tokens, output_tokens,"
            " reasoning_tokens FROM events WHERE kind = 'llm.call'"
        )
        return [tuple(r) for r in cur.fetchall()]


def _add(into: list[int], row: tuple[Any, ...]) -> None:
    into[0] += 1
    for i, value in enumerate(row[4:9], 1):
        into[i] += value or 0
    into[6] += row[4] is None


def _expected_hours(db: Database) -> dict[tuple[Any, ...], list[int]]:
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 7)
    for row in _calls(db):
        _add(out[(row[0] // HOUR * HOUR, row[1], row[2])], row)
    return dict(out)


def _stored_hours(db: Database) -> dict[tuple[Any, ...], list[int]]:
    names = ", ".join(f"{n}_hi, {n}_lo" for n in rollup.SUMMED)
    with db.read() as cur:
        cur.execute(f"SELECT hour_us, agent, unnamed, model, calls, {names}, unpriced FROM usage_hours")
        rows = cur.fetchall()
    return {(r[0], r[1], None if r[2] else r[3]): list(rollup._joined(r[4:])) for r in rows}


def _expected(db: Database, q: rollup.Asked) -> dict[tuple[Any, ...], list[int]]:
    """What summing the records one by one, in Python, gives."""
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 7)
    for row in _calls(db):
        at, agent, model, session = row[:4]
        if q.agent is not None and agent != q.agent or q.session is not None and session != q.session:
            continue
        if q.since_us is not None and at < q.since_us or q.until_us is not None and at >= q.until_us:
            continue
        day = abs(at) // rollup.DAY_US * (-1 if at < 0 else 1)  # as SQL divides: towards zero
        named = {"model": model, "agent": agent, "session": session, "day": day}
        named["bucket"] = (at - (q.since_us or 0)) // q.size
        _add(out[tuple(named[g] for g in q.by)], row)
    return dict(out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(CALLS, min_size=1, max_size=3), data=st.data())
def test_the_hours_equal_the_records_sums_after_any_appends(url: str, batches: Any, data: Any) -> None:
    db = Database(url)
    try:
        with db.write() as cur:  # each example starts from an empty log
            cur.execute("DELETE FROM events")
            cur.execute("DELETE FROM usage_hours")
        for batch in batches:
            _append(db, batch)
        assert _stored_hours(db) == _expected_hours(db)
        assert rollup.differences(db) == (0, [])
        edge = st.one_of(st.none(), TIMES, st.integers(0, 2**62), st.just(BIG), st.just(BIG - HOUR))
        for by in [("model",), ("agent",), ("day",), ("session",), ("model", "bucket"), ("agent", "bucket")]:
            since, until = data.draw(edge), data.draw(edge)
            agent = data.draw(st.sampled_from([None, *AGENTS]))
            size = data.draw(st.sampled_from([HOUR, 24 * HOUR, HOUR // 2]))
            if "bucket" in by:
                since = since if since is not None else 0
            q = rollup.Asked(by, agent, data.draw(st.sampled_from([None, "s"])), since, until, size)
            assert rollup.summed(db, q) == _expected(db, q), q
            assert rollup._from_events(db, q, since, until) == _expected(db, q), q
    finally:
        db.close()


def test_usage_and_spend_read_the_hours_and_the_edges_exactly(url: str) -> None:
    db = Database(url)
    try:
        _append(db, [_call(AT - 1, "refunds", "gpt-4o", BIG, BIG, "s")])  # the hour before
        _append(db, [_call(AT, "refunds", "gpt-4o", BIG, BIG, "s"), _call(AT + 1, "refunds", None, None, 1, "s")])
        _append(db, [_call(AT + HOUR + 5, "agent\u2066x", "gpt-4o", 3, None, "t")])
        _append(db, [_call(AT + 2 * HOUR, "refunds", "gpt-4o", 1, 1, "t")])  # the first µs of the hour after
        f = EventFilter(since_us=AT - 1, until_us=AT + 2 * HOUR)
        by_model = {r.key: r for r in queries.usage(db, f, "model")}
        assert by_model["gpt-4o"].calls == 3
        assert by_model["gpt-4o"].cost_usd == Decimal(2 * BIG + 3) / 10**9  # exactly, past 2^64
        assert by_model["gpt-4o"].input_tokens == 2 * BIG
        assert by_model["None"].calls == 1 and by_model["None"].unpriced_calls == 1
        assert by_model["None"].cost_usd == 0
        found = spend.spend(db, by="agent", bucket="hour", since_us=AT, until_us=AT + 3 * HOUR)
        totals = {s.key: (s.calls, s.total_usd) for s in found.series}
        assert totals == {
            "refunds": ([2, 0, 1], Decimal(BIG + 1) / 10**9),
            "agent\u2066x": ([0, 1, 0], Decimal(3) / 10**9),
        }
    finally:
        db.close()


# -- the migration: the hours of every call written before it --------------------------------------------


def test_the_migration_sums_the_calls_written_before_it(url: str) -> None:
    migrate(url, "0019")
    rows = [
        _call(AT + n * HOUR // 3, AGENTS[n % 3], MODELS[n % len(MODELS)], [None, 5, BIG][n % 3], BIG - n, "s")
        for n in range(30)
    ]
    engine = create_engine(url)  # written as 0019 wrote them: no hours
    with engine.begin() as conn:
        prev = events.GENESIS
        for e in rows:
            h = events.chain_hash(prev, e.body)
            cols = {c: e.columns.get(c) for c in events._COLUMNS}
            conn.execute(
                text(
                    f"INSERT INTO events ({', '.join(cols)}, id, at_us, body, prev_hash, hash)"
                    f" VALUES ({', '.join(':' + c for c in cols)}, :id, :at_us, :body, :prev, :hash)"
                ),
                {**cols, "id": e.id, "at_us": e.at_us, "body": e.body, "prev": prev, "hash": h},
            )
            prev = h
    engine.dispose()
    db = Database(url)  # migrates to the head
    try:
        assert events.verify(db).ok
        assert _stored_hours(db) == _expected_hours(db)
        assert rollup.differences(db) == (0, [])
        assert len(_stored_hours(db)) > 10
    finally:
        db.close()


# -- archiving: the summaries count the records in the database ---------------------------------------------


def test_archiving_takes_the_archived_calls_out_of_the_hours(url: str) -> None:
    db = Database(url)
    try:
        for n in range(6):
            _append(db, [_call(AT + n * HOUR // 2, "refunds", MODELS[n % 3], BIG - n, n, "s")])
        before = {r.key: r.calls for r in queries.usage(db, EventFilter(), "model")}
        got = archives.due(db, before_us=AT + HOUR + 1, limit=100, max_bytes=10**9)
        archives.remove(db, "events-test.jsonl.gz", got, sha256="0" * 64, now_us=AT + 10 * HOUR)
        assert _stored_hours(db) == _expected_hours(db)  # no empty hour is left behind
        assert rollup.differences(db) == (0, [])
        after = {r.key: r.calls for r in queries.usage(db, EventFilter(), "model")}
        assert sum(after.values()) == sum(before.values()) - sum(1 for r in got if r[KIND] == "llm.call")
        assert sum(after.values()) == len(_calls(db))
        whole = rollup.Asked(("model",))
        assert rollup.summed(db, whole) == rollup._from_events(db, whole, None, None)
    finally:
        db.close()


def test_concurrent_writers_keep_the_hours_equal(url: str) -> None:
    """Writers in threads of their own, each with its own connection: on PostgreSQL the chain
    lock makes each append's newest records its own when it sums them."""
    Database(url).close()  # migrated once
    start = threading.Barrier(4)

    def write(n: int) -> None:
        db = Database(url)
        try:
            start.wait()
            for i in range(15):
                _append(db, [_call(AT + i * HOUR // 4, AGENTS[n % 3], MODELS[i % 4], n * 1000 + i, i, "s")])
        finally:
            db.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db = Database(url)
    try:
        assert sum(v[0] for v in _stored_hours(db).values()) == 60
        assert _stored_hours(db) == _expected_hours(db)
    finally:
        db.close()


# -- checking and rebuilding the hours -------------------------------------------------------------------


def test_a_changed_lost_or_added_hour_is_found_and_rebuilt(url: str) -> None:
    """The table is derived, not chained: a row changed, deleted or added by hand (or a lost
    update) is named with its hour, agent and model, and `rebuild` sums it again from the records."""
    db = Database(url)
    try:
        _append(db, [_call(AT, "refunds", "rtl\u202egpt", BIG, 5, "s"), _call(AT + 1, "refunds", None, None, 1, "s")])
        _append(db, [_call(AT + HOUR, "agent\u2066x", "a'; DROP TABLE events;--", 3, None, "t")])
        assert rollup.differences(db) == (0, [])
        with db.write() as cur:
            cur.execute(
                "UPDATE usage_hours SET calls = calls + 1, cost_nusd_lo = cost_nusd_lo + 7 WHERE unnamed = 0"
                " AND agent = 'refunds'"
            )
            cur.execute("DELETE FROM usage_hours WHERE unnamed = 1")
            cur.execute(
                db.sql(
                    "INSERT INTO usage_hours (hour_us, agent, unnamed, model, calls, unpriced, "
                    + ", ".join(rollup._HALVES)
                    + ") VALUES (:h, 'ghost', 0, 'm', 2, 0, "
                    + ", ".join("0" for _ in rollup._HALVES)
                    + ")"
                ),
                {"h": AT + 5 * HOUR},
            )
        count, shown = rollup.differences(db)
        assert count == 3
        text_ = "\n".join(shown)
        assert "agent 'refunds', model 'rtl\\u202egpt': calls 2 where the records sum to 1" in text_
        assert f"cost_nusd {BIG + 7:,} where the records sum to {BIG:,}" in text_
        assert "agent 'refunds', no model: calls 0 where the records sum to 1" in text_
        assert "agent 'ghost', model 'm': calls 2 where the records sum to 0" in text_
        assert shown[0].startswith("the hour from 2026-")  # in time order, the hour shown in UTC
        assert rollup.differences(db, limit=1)[0] == 3 and len(rollup.differences(db, limit=1)[1]) == 1
        rollup.rebuild(db)
        assert rollup.differences(db) == (0, [])
        assert _stored_hours(db) == _expected_hours(db)
    finally:
        db.close()


def test_appends_running_meanwhile_never_show_a_difference(url: str) -> None:
    """Both sides are read by one statement: an append between them showed a difference that did
    not exist (in most of a thousand checks beside a writer, on both stores)."""
    Database(url).close()
    stop = threading.Event()
    written = threading.Event()

    def write() -> None:
        db = Database(url)
        try:
            n = 0
            while not stop.is_set():
                _append(db, [_call(AT + n, AGENTS[n % 3], MODELS[n % 4], n, n, "s")])
                n += 1
                written.set()
        finally:
            db.close()

    writer = threading.Thread(target=write)
    writer.start()
    db = Database(url)
    try:
        assert written.wait(30)
        found = [rollup.differences(db) for _ in range(60)]
    finally:
        stop.set()
        writer.join()
        db.close()
    assert found == [(0, [])] * 60
