"""The usage columns (0019): filled on write and by the migration, checked by `verify`, and summed
exactly as the old queries summed the records' JSON bodies — on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from clearance._guard._record import llm_event, model_name
from clearance._store import Database, EventFilter
from clearance._store import _events as events
from clearance._store import _queries as queries
from clearance._store import _spend as spend

from ._migrate import MIGRATIONS, migrate

AT = 1_790_000_000_000_000
HOUR = 3_600_000_000
LONG = "m" * 10_000
# Model names as providers and hostile agents send them, through the SDK's path
HOSTILE = ["gpt-4o", "gpt\x00x", "rtl\u202egpt", "lone\ud800", LONG, "  spaced  ", "", "ü" * 300]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'u.db'}"
    return str(request.getfixturevalue("pg_url"))


def _llm(at: int, agent: str, session: str, model: str, n: int) -> events.Event:
    event, _ = llm_event(
        agent=agent,
        environment="test",
        session=session,
        model=model,
        provider=None,
        input_tokens=100 * n,
        output_tokens=10 * n,
        cached_input_tokens=n,
        reasoning_tokens=n % 3,
        latency_ms=None,
        overrides={},
    )
    return events.Event(event.id, at, event.body.replace(f'"at_us":{event.at_us}', f'"at_us":{at}'), event.columns)


# -- written before 0019: the migration fills the columns and `verify` still passes -----------------

# Bodies an older version wrote or let in: every usage field the columns derive, well-formed or not.
OLD_BODIES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("llm.call", None, {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 80, "cached_input_tokens": 200}),
    ("llm.call", None, {"model": "rtl\u202egpt", "input_tokens": 5, "reasoning_tokens": 3}),
    ("llm.call", None, {"model": LONG, "input_tokens": 1}),  # before names were capped
    ("llm.call", '{"model":"nul\\u0000x","input_tokens":2}', {}),  # a NUL no store keeps as text
    ("llm.call", '{"model":"lone\\ud800","output_tokens":3}', {}),
    ("llm.call", '{"model":"big","input_tokens":1180591620717411303424,"output_tokens":-4}', {}),
    ("llm.call", '{"model":7,"input_tokens":"abc","cached_input_tokens":1.5,"reasoning_tokens":true}', {}),
    ("llm.call", None, {}),  # no model at all
    ("tool_call.decided", None, {"tool": "t", "decision": "allow", "args": {"model": "not a column"}}),
    ("tool_call.finished", None, {"tool": "t", "decision": "ok", "model": "odd-but-recorded"}),
]


def _old_rows(db_url: str) -> list[str]:
    """Append OLD_BODIES as a version before 0019 did (its columns only), hash-chained; their ids."""
    engine = create_engine(db_url)
    ids, prev = [], events.GENESIS
    with engine.begin() as conn:
        for n, (kind, raw, fields) in enumerate(OLD_BODIES):
            body = {"v": 1, "id": events.new_id("evt"), "kind": kind, "at_us": AT + n, "agent": "old"}
            body |= {"environment": "test", "session": "s-old", **fields}
            if raw is not None:  # spliced in as sent: text json.dumps would not write
                text_ = json.dumps(body, separators=(",", ":"))[:-1] + "," + raw[1:]
            else:
                text_ = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            h = events.chain_hash(prev, text_)
            cols = {c: body.get(c) for c in events._COPIED}
            conn.execute(
                text(
                    f"INSERT INTO events ({', '.join(cols)}, id, at_us, body, prev_hash, hash)"
                    f" VALUES ({', '.join(':' + c for c in cols)}, :id, :at_us, :body, :prev_hash, :hash)"
                ),
                {**cols, "id": body["id"], "at_us": body["at_us"], "body": text_, "prev_hash": prev, "hash": h},
            )
            ids.append(body["id"])
            prev = h
    engine.dispose()
    return ids


def _usage_columns(db_url: str) -> dict[str, tuple[Any, ...]]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens FROM events")
        ).fetchall()
    engine.dispose()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_the_migration_fills_old_records_and_verify_passes(url: str) -> None:
    migrate(url, "0015")
    ids = _old_rows(url)
    db = Database(url)  # migrates to the head: the backfill
    try:
        report = events.verify(db)
        assert report.ok, report.problem
        assert report.checked == len(OLD_BODIES)
        db.close()
        filled = _usage_columns(url)
        assert [filled[i] for i in ids] == [
            ("gpt-4o", 1200, 200, 80, None),
            ("rtl\u202egpt", 5, None, None, 3),
            ("m" * 200, 1, None, None, None),  # cut to the column's 200 characters
            ("nul\\x00x", 2, None, None, None),  # escaped as every reader shows it
            ("lone\\ud800", None, None, 3, None),
            ("big", None, None, None, None),  # beyond 64 bits, negative: never counted
            (None, None, None, None, None),  # a number is no model name, nor text or 1.5 or true a count
            (None, None, None, None, None),
            (None, None, None, None, None),  # an argument called model is not the call's model
            ("odd-but-recorded", None, None, None, None),
        ]
        db = Database(url)
        by_model = {r.key: r for r in queries.usage(db, EventFilter(), "model")}
        assert by_model["gpt-4o"].input_tokens == 1200 and by_model["m" * 200].calls == 1
        assert set(by_model) == {"gpt-4o", "rtl\u202egpt", "m" * 200, "nul\\x00x", "lone\\ud800", "big", "None"}
    finally:
        db.close()


def test_the_backfill_fills_across_batches_what_verify_checks(url: str) -> None:
    """Run the migration's backfill again with two positions a batch: the same columns, and a
    column that disagrees with its body is still caught by `verify`."""
    migrate(url, "0015")
    _old_rows(url)
    Database(url).close()
    once = _usage_columns(url)
    spec = importlib.util.spec_from_file_location("m0019", str(MIGRATIONS / "versions" / "0019_usage_columns.py"))
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE events SET model = NULL, input_tokens = NULL, output_tokens = NULL"))
        assert migration.backfill(conn, window=2) == 7
    assert _usage_columns(url) == once
    with engine.begin() as conn:
        conn.execute(text("UPDATE events SET input_tokens = 1201 WHERE model = 'gpt-4o'"))
    engine.dispose()
    db = Database(url)
    try:
        report = events.verify(db)
        assert not report.ok and report.broken_seq == 1 and "column" in (report.problem or "")
    finally:
        db.close()


# -- the queries on the columns answer what the queries on the bodies answered -----------------------


def _json_field(db: Database, name: str, *, number: bool = False) -> str:
    """The field of the body as the queries before 0019 read it."""
    if db.dialect == "postgresql":
        got = f"(body::json ->> '{name}')"
        return f"{got}::bigint" if number else got
    return f"json_extract(body, '$.{name}')"


def _usage_from_bodies(db: Database, f: EventFilter, by: str) -> list[queries.UsageRow]:
    """`usage` as it was before 0019: the model and counts read out of every record's JSON."""
    day = (
        "to_char(to_timestamp(at_us / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        if db.dialect == "postgresql"
        else "strftime('%Y-%m-%d', at_us / 1000000, 'unixepoch')"
    )
    key = {"model": _json_field(db, "model"), "session": "session", "agent": "agent", "day": day}[by]
    where, params = events._where(EventFilter(**{**f.__dict__, "kind": "llm.call"}))
    sums = ", ".join(db.total(f"COALESCE({_json_field(db, n, number=True)}, 0)") for n in events.USAGE_COUNTS)
    sql = (
        f"SELECT {key} AS k, COUNT(*), {sums}, {db.total('cost_nusd')},"
        f" SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END) FROM events{where} GROUP BY k"
    )
    with db.read() as cur:
        cur.execute(db.sql(sql), params)
        found = cur.fetchall()
    return sorted(
        (
            queries.UsageRow(
                str(r[0]), int(r[1]), *(int(v or 0) for v in r[2:6]), Decimal(int(r[6] or 0)) / 10**9, int(r[7] or 0)
            )
            for r in found
        ),
        key=lambda r: r.key,
    )


def _spend_from_bodies(db: Database, f: EventFilter, by: str, size: int) -> dict[tuple[str, int], tuple[int, int, int]]:
    """`spend`'s cells as they were summed before 0019."""
    key = _json_field(db, "model") if by == "model" else "agent"
    where, params = events._where(f)
    sql = (
        f"SELECT {key} AS k, (at_us - CAST(:since_us AS BIGINT)) / CAST(:size AS BIGINT) AS b, COUNT(*),"
        f" SUM(cost_nusd), SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END) FROM events{where} GROUP BY k, b"
    )
    with db.read() as cur:
        cur.execute(db.sql(sql), {**params, "size": size})
        return {(str(r[0]), int(r[1])): (int(r[2]), int(r[3] or 0), int(r[4] or 0)) for r in cur.fetchall()}


def test_usage_and_spend_answer_as_the_json_queries_did(url: str) -> None:
    db = Database(url)
    try:
        batch = [
            _llm(AT + i * HOUR // 3, f"agent-{i % 3}", f"s{i % 5}", HOSTILE[i % len(HOSTILE)], i) for i in range(60)
        ]
        batch += [  # not LLM calls: never summed
            events.make_event("tool_call.decided", AT + 5, {"agent": "agent-0", "environment": "test", "tool": "t"}),
        ]
        with db.write() as cur:
            events.append(db, cur, batch)
        assert events.verify(db).ok
        filters = [
            EventFilter(),
            EventFilter(agent="agent-1"),
            EventFilter(session="s3"),
            EventFilter(since_us=AT + 2 * HOUR, until_us=AT + 9 * HOUR),
        ]
        for f in filters:
            for by in ("model", "session", "agent", "day"):
                assert queries.usage(db, f, by) == _usage_from_bodies(db, f, by), (f, by)  # type: ignore[arg-type]
        models = {r.key for r in queries.usage(db, EventFilter(), "model")}
        assert models == {model_name(m) for m in HOSTILE} and len(models) == len(HOSTILE)
        for by in ("model", "agent"):
            for agent in (None, "agent-2"):
                f = EventFilter(agent=agent, kind="llm.call", since_us=AT, until_us=AT + 24 * HOUR)
                cells = spend._summed_by_the_database(db, f, by, HOUR)  # type: ignore[arg-type]
                assert cells == _spend_from_bodies(db, f, by, HOUR), (by, agent)
    finally:
        db.close()


def test_a_model_name_is_kept_to_200_characters_readably() -> None:
    assert model_name("gpt-4o") == "gpt-4o"
    assert model_name("x" * 200) == "x" * 200
    cut = model_name(LONG)
    assert len(cut) == events.MAX_MODEL_NAME and cut == "m" * 199 + "…"
    assert model_name("nul\x00") == "nul\\x00" and model_name("lone\ud800") == "lone\\ud800"
    assert model_name("\x00" * 100) == ("\\x00" * 50)[:199] + "…"  # escaped first, then cut
    event = _llm(AT, "a", "s", LONG, 1)
    assert json.loads(event.body)["model"] == cut and event.columns["model"] == cut
