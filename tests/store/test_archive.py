"""Archiving old records to verified segments (issue 18), on SQLite and PostgreSQL.

The chain in the database then starts at the last archived hash; the segments verify offline
and chain from GENESIS to it; hostile record bodies come back byte-exact.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from clearance import _archive
from clearance._store import Database
from clearance._store import _archives as archives
from clearance._store import _events as events
from clearance.errors import ChainBroken, StoreError

from ._migrate import migrate

_ALL = f"SELECT {', '.join(events.ROW_COLUMNS)} FROM events ORDER BY seq"
# Text a record may hold: bidirectional and invisible characters, separators, other scripts, and
# the JSON escapes of a NUL and of lone surrogates (PostgreSQL keeps no raw NUL in text).
HOSTILE = 'a\\u0000b \\ud800 \\udfff\\ud83d \\"q\\" \u202eevil\u202c \u2028 \u200b заказ 🧾 \\\\ \\t'

AT, BODY, HASH = (events.ROW_COLUMNS.index(c) for c in ("at_us", "body", "hash"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = str(tmp_path / "audit.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Database(url)
    yield store
    store.close()


def raw_append(db: Database, at_us: int, note: str) -> None:
    """A record whose body is written by hand (not canonical JSON), as another writer could."""
    with db.write() as cur:
        prev = events.chain_start(cur)[1]
        cur.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1")
        row = cur.fetchone()
        prev = row[0] if row else prev
        event_id = events.new_id("evt")
        body = (
            f'{{"v":1,"id":"{event_id}","kind":"llm.call","at_us":{at_us},"agent":"a","environment":"t",'
            f'"note":"{note}"}}'
        )
        h = events.chain_hash(prev, body)
        cur.execute(
            db.sql(
                "INSERT INTO events (id, kind, at_us, agent, environment, body, prev_hash, hash)"
                " VALUES (:id, 'llm.call', :at, 'a', 't', :body, :prev, :hash)"
            ),
            {"id": event_id, "at": at_us, "body": body, "prev": prev, "hash": h},
        )


def fill(db: Database, n: int) -> None:
    """`n` records at times 1..n, every other one with hostile text written by hand."""
    for at in range(1, n + 1):
        if at % 2:
            raw_append(db, at, HOSTILE)
        else:
            with db.write() as cur:
                fields = {"agent": "a", "environment": "t", "session": f"s{at % 3}", "tokens": at, "note": "x\u202ey"}
                events.append(db, cur, [events.make_event("llm.call", at, fields)])


def rows(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as cur:
        cur.execute(_ALL)
        return [tuple(r) for r in cur.fetchall()]


def segment_rows(directory: Path) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for path in sorted(directory.glob("events-*.json")):
        out += _archive.read_segment(path)[1]
    return out


def test_archives_a_prefix_in_segments_and_the_chain_continues(db: Database, tmp_path: Path) -> None:
    fill(db, 30)
    before = rows(db)
    done = _archive.archive(db, tmp_path / "arch", before_us=21, per_segment=7)
    assert [(m.boundary.first_seq, m.boundary.last_seq) for m in done.segments] == [(1, 7), (8, 14), (15, 20)]
    assert done.records == 20 and (done.start_seq, done.start_hash) == (20, before[19][HASH])
    assert rows(db) == before[20:]
    assert segment_rows(tmp_path / "arch") == before[:20]  # every column, byte-exact
    assert json.loads(before[2][BODY])["note"].startswith("a\x00b \ud800 \udfff\ud83d")  # what was archived
    report = events.verify(db)
    assert report.ok and report.checked == 10 and report.head_seq == 30
    offline = _archive.check(tmp_path / "arch")
    assert offline.ok and (offline.segments, offline.records, offline.last_seq) == (3, 20, 20)
    assert offline.last_hash == before[19][HASH]
    whole = _archive.check(tmp_path / "arch", db)
    assert whole.ok and (whole.records, whole.last_seq, whole.last_hash) == (30, 30, before[-1][HASH])
    manifest = json.loads((tmp_path / "arch" / "events-000000000001-000000000007.json").read_text())
    assert manifest["prev_hash"] == events.GENESIS and manifest["checkpoint"] is None
    assert [a.segment for a in archives.recorded(db)] == [m.segment for m in done.segments]
    # An archived record is gone from reads; the first one left still checks against the boundary.
    assert events.locate(db, 20) is None
    found = events.locate(db, 21)
    assert found is not None and found.problem is None
    # Appending continues the chain from the head.
    with db.write() as cur:
        events.append(db, cur, [events.make_event("llm.call", 99, {"agent": "a", "environment": "t"})])
    assert events.verify(db).ok and rows(db)[-1][0] == 31
    again = _archive.archive(db, tmp_path / "arch", before_us=21)
    assert again.segments == [] and again.start_seq == 20  # nothing older is left: idempotent


def test_ingest_counts_an_archived_record_sent_again_as_a_duplicate(db: Database, tmp_path: Path) -> None:
    """Archive lists the ids it removes; the next run lists those of segments archived before 0021."""
    fill(db, 12)
    first = _archive.archive(db, tmp_path / "arch", before_us=7, per_segment=3)
    assert [m.boundary.records for m in first.segments] == [3, 3] and first.listed == 0
    archived = segment_rows(tmp_path / "arch")
    resent = [
        {"v": 1, "id": r[1], "kind": "llm.call", "at_us": r[AT], "agent": "a", "environment": "t"} for r in archived
    ]
    assert events.ingest(db, resent) == (0, 6)
    with db.write() as cur:  # a store archived before migration 0021
        cur.execute("DELETE FROM archived_ids")
        cur.execute("UPDATE archives SET ids_listed = 0")
    one = first.segments[0].segment.replace(".jsonl.gz", ".json")
    (tmp_path / "arch" / one).rename(tmp_path / one)
    again = _archive.archive(db, tmp_path / "arch", before_us=7)
    assert again.segments == [] and again.listed == 3 and again.unlisted == [first.segments[0].segment]
    (tmp_path / one).rename(tmp_path / "arch" / one)
    again = _archive.archive(db, tmp_path / "arch", before_us=7)
    assert (again.listed, again.unlisted) == (3, [])
    assert _archive.archive(db, tmp_path / "arch", before_us=7).listed == 0
    assert events.ingest(db, resent) == (0, 6)
    assert events.verify(db).ok and _archive.check(tmp_path / "arch", db).ok


def test_ingest_finds_ids_the_joined_lookup_cannot_carry(db: Database) -> None:
    """PostgreSQL looks a batch's ids up joined by commas in one parameter; an id that holds a
    comma, or is empty, is looked up as a list instead: still found here and among archived ids."""

    def body(event_id: str) -> dict[str, Any]:
        return {"v": 1, "id": event_id, "kind": "llm.call", "at_us": 5, "agent": "a", "environment": "t"}

    odd = [body("evt_a,evt_b"), body(""), body("evt_a")]
    assert events.ingest(db, odd) == (3, 0)
    assert events.ingest(db, odd) == (0, 3)
    assert events.ingest(db, [body("")]) == (0, 1)  # joined, one empty id would be no id at all
    assert events.ingest(db, [body("evt_b"), body("evt_a,evt_b")]) == (1, 1)  # a comma splits nothing
    with db.write() as cur:
        cur.execute(db.sql("INSERT INTO archived_ids (id, seq) VALUES (:id, 1)"), {"id": "x,y"})
    assert events.ingest(db, [body("x,y"), body("x"), body("y")]) == (2, 1)
    assert events.verify(db).ok


def test_an_id_already_listed_does_not_stop_the_archive(db: Database, tmp_path: Path) -> None:
    """Before 0021 a re-sent record could be appended again after its original was archived: the same
    id twice in the chain. Listing one copy's id, then archiving the other, must not fail for good."""
    fill(db, 12)
    _archive.archive(db, tmp_path / "arch", before_us=4, per_segment=3)
    with db.read() as cur:
        cur.execute("SELECT id FROM events ORDER BY seq LIMIT 1")
        later = cur.fetchone()[0]  # a record still here, whose id the list already holds, as if it came twice
    with db.write() as cur:
        cur.execute(db.sql("INSERT INTO archived_ids (id, seq) VALUES (:id, 1)"), {"id": later})
    done = _archive.archive(db, tmp_path / "arch", before_us=9, per_segment=3)
    assert done.records > 0
    assert events.verify(db).ok and _archive.check(tmp_path / "arch", db).ok


def test_a_segment_holding_an_id_appended_twice_is_listed_once(db: Database, tmp_path: Path) -> None:
    """Before 0021 a re-sent record's second copy could be archived (listing its id with its own
    position) while the first copy's segment was not listed yet: that segment's ids are then never
    all in its range. It is listed once, not read again and called unknown on every run."""
    fill(db, 12)
    first = _archive.archive(db, tmp_path / "arch", before_us=4, per_segment=3)
    early = first.segments[0].segment
    with db.read() as cur:
        cur.execute("SELECT id FROM archived_ids ORDER BY seq LIMIT 1")
        twice = cur.fetchone()[0]
    with db.write() as cur:  # as 0021 left such a store: the first segment unlisted, its first id listed later
        cur.execute(db.sql("UPDATE archives SET ids_listed = 0 WHERE segment = :s"), {"s": early})
        cur.execute(db.sql("DELETE FROM archived_ids WHERE seq <= 3 AND id <> :id"), {"id": twice})
        cur.execute(db.sql("UPDATE archived_ids SET seq = 11 WHERE id = :id"), {"id": twice})
    assert [a.segment for a in archives.unlisted(db)] == [early]
    again = _archive.archive(db, tmp_path / "arch", before_us=4)
    assert (again.listed, again.unlisted) == (2, [])
    assert archives.unlisted(db) == []
    (tmp_path / "arch" / early.replace(".jsonl.gz", ".json")).unlink()  # no longer read, so not missed
    last = _archive.archive(db, tmp_path / "arch", before_us=4)
    assert (last.listed, last.unlisted) == (0, [])


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_migration_marks_the_segments_whose_ids_are_listed(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0022 counts, once, what 0021 counted on every run: the segments whose ids are all listed."""
    url = f"sqlite:///{tmp_path / 'm.db'}" if store == "sqlite" else str(request.getfixturevalue("pg_url"))
    migrate(url, "0021")
    engine = create_engine(url)
    with engine.begin() as conn:
        for n, (first, last) in enumerate([(1, 3), (4, 6), (7, 9)]):
            conn.execute(
                text(
                    "INSERT INTO archives (segment, first_seq, prev_hash, last_seq, last_hash, records, sha256,"
                    " first_at_us, last_at_us, archived_at_us) VALUES (:s, :f, 'p', :l, 'h', 3, 'x', 0, 0, 0)"
                ),
                {"s": f"seg{n}", "f": first, "l": last},
            )
        # The second segment's third id was listed with a later copy's position (appended twice before 0021)
        listed = [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (6, "e"), (11, "f")]
        for seq, event_id in listed:
            conn.execute(text("INSERT INTO archived_ids (id, seq) VALUES (:id, :seq)"), {"id": event_id, "seq": seq})
    engine.dispose()
    db = Database(url)  # migrates to the head
    try:
        assert [a.segment for a in archives.unlisted(db)] == ["seg2"]
    finally:
        db.close()


def test_the_newest_record_always_stays(db: Database, tmp_path: Path) -> None:
    fill(db, 5)
    done = _archive.archive(db, tmp_path / "arch", before_us=10**15)
    assert done.records == 4 and [r[0] for r in rows(db)] == [5]
    with db.write() as cur:  # the next record links to the head, and takes the next position
        events.append(db, cur, [events.make_event("llm.call", 6, {"agent": "a", "environment": "t"})])
    assert [r[0] for r in rows(db)] == [5, 6]
    assert events.verify(db).ok and _archive.check(tmp_path / "arch", db).ok


def test_records_newer_than_the_cut_stop_the_prefix(db: Database, tmp_path: Path) -> None:
    fill(db, 4)
    raw_append(db, 1000, "new")
    raw_append(db, 2, "older, but after a newer one")  # archived only once the one before it is
    raw_append(db, 3000, "head")
    done = _archive.archive(db, tmp_path / "arch", before_us=100)
    assert done.records == 4 and [r[AT] for r in rows(db)] == [1000, 2, 3000]


def test_deleting_the_first_record_left_or_moving_the_boundary_is_detected(db: Database, tmp_path: Path) -> None:
    fill(db, 10)
    _archive.archive(db, tmp_path / "arch", before_us=6)
    with db.write() as cur:
        cur.execute("DELETE FROM events WHERE seq = 6")
    report = events.verify(db)
    assert not report.ok and report.broken_seq == 7 and report.problem is not None
    assert "records 6 to 6 before it are missing" in report.problem
    assert not _archive.check(tmp_path / "arch", db).ok
    # Recording a later boundary to hide the deletion breaks the link to the archives instead.
    with db.write() as cur:
        cur.execute("UPDATE archives SET last_seq = 6")
    assert not events.verify(db).ok
    assert not _archive.check(tmp_path / "arch", db).ok


def test_a_changed_record_stops_the_archive_before_it(db: Database, tmp_path: Path) -> None:
    fill(db, 12)
    with db.write() as cur:
        cur.execute("UPDATE events SET body = REPLACE(body, 'x', 'X') WHERE seq = 8")
    with pytest.raises(ChainBroken) as info:
        _archive.archive(db, tmp_path / "arch", before_us=11, per_segment=3)
    assert info.value.seq == 8
    assert [r[0] for r in rows(db)][0] == 7  # segments 1-3 and 4-6 left; nothing from 7 on
    assert sorted(p.name for p in (tmp_path / "arch").glob("*.gz")) == [
        "events-000000000001-000000000003.jsonl.gz",
        "events-000000000004-000000000006.jsonl.gz",
    ]


def test_remove_deletes_nothing_but_the_rows_verified(db: Database) -> None:
    fill(db, 6)
    got = archives.due(db, before_us=5, limit=10, max_bytes=10**9)
    assert [r[0] for r in got] == [1, 2, 3, 4]
    changed = [*got[:-1], (*got[-1][:BODY], got[-1][BODY] + " ", *got[-1][BODY + 1 :])]
    with pytest.raises(StoreError, match="changed since"):
        archives.remove(db, "events-x.jsonl.gz", changed, sha256="0" * 64, now_us=1)
    with pytest.raises(StoreError, match="another archive ran"):
        archives.remove(db, "events-x.jsonl.gz", got[1:], sha256="0" * 64, now_us=1)
    assert len(rows(db)) == 6 and archives.recorded(db) == []
    archives.remove(db, "events-x.jsonl.gz", got, sha256="0" * 64, now_us=1)
    assert [r[0] for r in rows(db)] == [5, 6] and events.verify(db).ok


def _rewrite(path: Path, edit: Any) -> None:
    """Change a segment's records and make its manifest's hash agree (a careful forger)."""
    with gzip.open(path, "rt", encoding="ascii") as f:
        lines = f.readlines()
    lines = edit(lines)
    with gzip.open(path, "wt", encoding="ascii") as f:
        f.writelines(lines)
    manifest_path = path.with_name(path.name.replace(".jsonl.gz", ".json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"], manifest["bytes"] = _archive._digest(path)
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("flip_byte", "SHA-256 or size differs"),
        ("truncate", "SHA-256 or size differs"),
        ("forge_body", "does not match its hash"),
        ("drop_record", "records do not match the boundary"),
        ("remove_segment", "records 6 to 10 before it are missing"),
        ("remove_manifest", "records 6 to 10 before it are missing"),
        ("bad_manifest", "not a readable manifest"),
        ("deep_line", "not a readable segment"),
        ("not_a_record", "not a readable segment"),
    ],
)
def test_damaged_archives_are_reported(db: Database, tmp_path: Path, damage: str, says: str) -> None:
    fill(db, 16)
    arch = tmp_path / "arch"
    _archive.archive(db, arch, before_us=16, per_segment=5)
    seg = arch / "events-000000000006-000000000010.jsonl.gz"
    manifest = seg.with_name("events-000000000006-000000000010.json")
    if damage == "flip_byte":
        data = bytearray(seg.read_bytes())
        data[len(data) // 2] ^= 1
        seg.write_bytes(bytes(data))
    elif damage == "truncate":
        seg.write_bytes(seg.read_bytes()[:-10])
    elif damage == "forge_body":
        _rewrite(seg, lambda lines: [lines[0], lines[1].replace('\\"a\\"', '\\"b\\"', 1), *lines[2:]])
    elif damage == "drop_record":
        _rewrite(seg, lambda lines: lines[:-1])
    elif damage == "deep_line":
        _rewrite(seg, lambda lines: [*lines[:2], "[" * 100_000 + "\n", *lines[3:]])
    elif damage == "not_a_record":
        _rewrite(seg, lambda lines: [*lines[:2], '{"seq": 7}\n', *lines[3:]])
    elif damage == "remove_segment":
        seg.unlink()
        manifest.unlink()
    elif damage == "remove_manifest":
        manifest.unlink()
    else:
        manifest.write_text("{not json")
    report = _archive.check(arch)
    assert not report.ok and report.problem is not None and says in report.problem, report.problem
    assert not _archive.check(arch, db).ok


SEG_4_6 = "events-000000000004-000000000006.jsonl.gz"


def test_a_segment_the_database_records_must_be_there(db: Database, tmp_path: Path) -> None:
    fill(db, 8)
    _archive.archive(db, tmp_path / "one", before_us=4)
    _archive.archive(db, tmp_path / "two", before_us=7)
    assert _archive.check(tmp_path / "two").problem == (
        "events-000000000004-000000000006.jsonl.gz: record 4: records 1 to 3 before it are missing (deleted?)"
    )
    report = _archive.check(tmp_path / "one", db)
    assert not report.ok
    assert report.problem == f"the database records segment {SEG_4_6} as archived, but it is not in {tmp_path / 'one'}"
    for name in (SEG_4_6, SEG_4_6.replace(".jsonl.gz", ".json")):  # the archives brought together
        (tmp_path / "two" / name).rename(tmp_path / "one" / name)
    assert _archive.check(tmp_path / "one", db).ok


def test_records_a_sink_has_not_delivered_stay_unless_asked(db: Database, tmp_path: Path) -> None:
    fill(db, 12)
    with db.write() as cur:
        for sink, position in (("slow", 5), ("siem", 9)):
            cur.execute(
                db.sql("INSERT INTO sink_positions (sink, position, updated_at_us) VALUES (:s, :p, 0)"),
                {"s": sink, "p": position},
            )
    done = _archive.archive(db, tmp_path / "arch", before_us=100)
    assert (done.records, done.held_by) == (5, ("slow", 5))
    with db.write() as cur:
        cur.execute("UPDATE sink_positions SET position = 11 WHERE sink = 'slow'")
    done = _archive.archive(db, tmp_path / "arch", before_us=100)
    assert (done.records, done.held_by) == (4, ("siem", 9))
    done = _archive.archive(db, tmp_path / "arch", before_us=100, past_sinks=True)
    assert (done.records, done.held_by, done.start_seq) == (2, None, 11)
    assert _archive.check(tmp_path / "arch", db).ok


def test_segments_of_another_database_are_never_removed(db: Database, tmp_path: Path) -> None:
    other = Database(str(tmp_path / "other.db"))
    try:
        fill(other, 10)
        _archive.archive(other, tmp_path / "arch", before_us=8)
        theirs = {p.name: p.read_bytes() for p in (tmp_path / "arch").glob("events-*")}
        fill(db, 10)
        with pytest.raises(StoreError, match="holds events-000000000001-000000000007.jsonl.gz, which this database"):
            _archive.archive(db, tmp_path / "arch", before_us=8)
        assert {p.name: p.read_bytes() for p in (tmp_path / "arch").glob("events-*")} == theirs
        assert len(rows(db)) == 10 and _archive.check(tmp_path / "arch", other).ok
    finally:
        other.close()


def test_a_segment_keeps_its_newest_checkpoint_and_the_archive_check_verifies_it(db: Database, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from clearance import _signing as signing
    from clearance._store import _seals as seals

    fill(db, 10)
    key = signing.load_or_create(tmp_path / "key.pem")
    signed = seals.sign(db, key, now_us=10)
    assert signed is not None
    for at in range(40, 43):
        raw_append(db, at, "later")
    newest = seals.sign(db, key, now_us=45)  # its records stay: only the older one's may go
    assert newest is not None
    done = _archive.archive(db, tmp_path / "arch", before_us=50)
    assert done.start_seq == newest.seq - 1
    [segment] = done.segments
    assert segment.boundary.first_seq <= signed.seq <= segment.boundary.last_seq
    assert segment.checkpoint is not None and segment.checkpoint["signature"] == signed.signature
    manifest = json.loads((tmp_path / "arch" / segment.segment.replace(".jsonl.gz", ".json")).read_text())
    assert manifest["checkpoint"]["hash"] == signed.hash
    assert _archive.check(tmp_path / "arch", trusted={key.id: key.private.public_key()}).ok
    stranger = Ed25519PrivateKey.generate().public_key()
    refused = _archive.check(tmp_path / "arch", trusted={key.id: stranger})
    assert not refused.ok and "record 12: its checkpoint's signature does not verify" in str(refused.problem)
    from clearance import _integrity

    assert _integrity.verify_store(db, anchor={key.id: key.private.public_key()}).ok
    back, stored = _archive.read_segment(tmp_path / "arch" / segment.segment.replace(".jsonl.gz", ".json"))
    forged = dataclasses.replace(back, checkpoint={**back.checkpoint, "hash": "0" * 64})  # type: ignore[dict-item]
    with pytest.raises(_archive.ArchiveProblem, match="a hash that record does not have"):
        _archive._recomputed(forged, stored, 0, events.GENESIS)


def test_a_key_whose_introduction_was_archived_is_introduced_again(db: Database, tmp_path: Path) -> None:
    """Else the next checkpoint names a key no record in the database introduces, and a verify
    without the key file (the chain's own keys) reports the store broken."""
    from clearance import _integrity
    from clearance import _signing as signing
    from clearance._store import _seals as seals

    fill(db, 10)
    key = signing.load_or_create(tmp_path / "key.pem")
    assert seals.sign(db, key, now_us=10) is not None
    for at in range(40, 43):
        raw_append(db, at, "later")
    assert seals.sign(db, key, now_us=45) is not None  # the newest checkpoint's records stay
    assert _archive.archive(db, tmp_path / "arch", before_us=50).records == 14  # the introduction too
    raw_append(db, 50, "after")
    made = seals.sign(db, key, now_us=60)
    assert made is not None
    introduced = events.query(db, events.EventFilter(kind="checkpoint.key_introduced"))
    assert [e.body["key_id"] for e in introduced] == [key.id] and introduced[0].seq == made.seq
    assert _integrity.verify_store(db, anchor={key.id: key.private.public_key()}).ok
    assert seals.sign(db, key, now_us=70) is None  # nothing since
    raw_append(db, 80, "more")
    assert seals.sign(db, key, now_us=90) is not None
    assert len(events.query(db, events.EventFilter(kind="checkpoint.key_introduced"))) == 1  # not again


def test_a_copy_of_the_database_archiving_to_the_same_directory_sets_the_original_segments_aside(
    tmp_path: Path,
) -> None:
    import shutil

    original = Database(str(tmp_path / "a.db"))
    fill(original, 30)
    original.close()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")  # a clone taken before the original archives
    a, b = Database(str(tmp_path / "a.db")), Database(str(tmp_path / "b.db"))
    try:
        [theirs] = _archive.archive(a, tmp_path / "arch", before_us=23).segments
        kept = (tmp_path / "arch" / theirs.segment).read_bytes()
        _archive.archive(b, tmp_path / "arch", before_us=11)
        aside = list((tmp_path / "arch" / _archive.SET_ASIDE).iterdir())
        assert [p.read_bytes() for p in aside if p.name.startswith(theirs.segment)] == [kept]
        assert _archive.check(tmp_path / "arch", b).ok
    finally:
        a.close()
        b.close()


def test_a_head_kept_before_archiving_verifies_at_a_segment_end_and_is_explained_inside_one(
    db: Database, tmp_path: Path
) -> None:
    from clearance import _integrity

    fill(db, 30)
    kept = rows(db)
    _archive.archive(db, tmp_path / "arch", before_us=21, per_segment=10)  # segments 1-10, 11-20
    assert _integrity.verify_store(db, head=kept[19][HASH]).ok  # the end of a segment
    assert _integrity.verify_store(db, head=kept[25][HASH]).ok  # still in the database
    inside = _integrity.verify_store(db, head=kept[14][HASH])
    assert not inside.ok and "inside the archived records (up to 20)" in (inside.problem or "")
