"""Signed checkpoints find what recomputing the chain alone cannot: truncation and rewrites."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearance import _integrity as integrity
from clearance import _signing as signing
from clearance._canonical import canonical_json
from clearance._export import lines
from clearance._store import Database
from clearance._store import _archives as archives
from clearance._store import _events as events
from clearance._store import _seals as seals
from clearance.errors import ChainBroken, ConfigurationError


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = str(tmp_path / "seals.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    store = Database(url)
    yield store
    store.close()


@pytest.fixture
def key(tmp_path: Path) -> signing.SigningKey:
    return signing.load_or_create(tmp_path / "keys" / "signing-key.pem")


def add(db: Database, n: int, *, note: str = "x") -> None:
    with db.write() as cur:
        events.append(
            db,
            cur,
            [
                events.make_event(
                    "llm.call", 1_000 + i, {"agent": "a", "environment": "e", "session": "s", "model": note}
                )
                for i in range(n)
            ],
        )


def head(db: Database) -> tuple[int, str]:
    with db.read() as cur:
        cur.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        seq, hash_ = cur.fetchone()
    return int(seq), str(hash_)


def truncate(db: Database, keep: int) -> None:
    with db.write() as cur:
        cur.execute(db.sql("DELETE FROM events WHERE seq > :n"), {"n": keep})


def drop_newest_checkpoint(db: Database, newest: seals.Checkpoint) -> None:
    """Delete the newest checkpoint, its record and the row, as someone with the database could."""
    truncate(db, newest.record_seq - 1)
    with db.write() as cur:
        cur.execute(db.sql("DELETE FROM checkpoints WHERE seq >= :s"), {"s": newest.seq})


def rechain(db: Database, model: str, *, only: int | None = None) -> None:
    """Set `model` in record `only` (else in every record that has one) and recompute every hash from
    where the chain starts, as someone with the database could."""
    with db.write() as cur:
        prev = events.chain_start(cur)[1]
        cur.execute("SELECT seq, body FROM events ORDER BY seq")
        for s, body in cur.fetchall():
            data = json.loads(body)
            if s == only or (only is None and data.get("model")):
                data["model"] = model
                body = canonical_json(data)
                cur.execute(db.sql("UPDATE events SET model = :m WHERE seq = :s"), {"m": model, "s": s})
            h = events.chain_hash(prev, body)
            cur.execute(
                db.sql("UPDATE events SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"b": body, "p": prev, "h": h, "s": s},
            )
            prev = h


def rewrite(db: Database, seq: int, model: str) -> None:
    """Change one record and recompute every later hash."""
    rechain(db, model, only=seq)


def test_a_checkpoint_signs_the_head_and_is_a_record_of_the_chain(db: Database, key: signing.SigningKey) -> None:
    add(db, 20)
    made = seals.sign(db, key, now_us=5_000)
    assert made is not None
    # the key is introduced first (record 21), the checkpoint signs it (21) and follows it (22)
    assert (made.seq, made.record_seq) == (21, 22)
    found = events.query(db, events.EventFilter(), limit=2, newest_first=True)
    assert [e.body["kind"] for e in found] == ["checkpoint.key_introduced", "checkpoint.signed"]
    assert found[0].body["public_key"] == key.public_pem and found[0].body["previous_key_id"] is None
    assert found[1].body["signed_hash"] == found[0].hash == made.hash
    assert signing.verify(signing.load_public(key.public_pem), made.payload(), made.signature)
    assert seals.sign(db, key, now_us=6_000) is None  # nothing recorded since: none signed
    assert seals.latest(db) == made
    report = integrity.verify_store(db)
    assert report.ok and report.checkpoints == 1 and report.checkpoint_seq == 21


def test_every_asks_for_that_many_records_since_the_last(db: Database, key: signing.SigningKey) -> None:
    add(db, 3)
    assert seals.sign(db, key, now_us=1, every=5) is None
    add(db, 2)
    assert seals.sign(db, key, now_us=2, every=5) is not None
    assert seals.pending(db)[0] == 0


def test_an_empty_log_is_not_signed(db: Database, key: signing.SigningKey) -> None:
    assert seals.sign(db, key, now_us=1) is None
    assert integrity.verify_store(db).ok


@pytest.mark.parametrize("removed", [1, 10])
def test_truncation_of_the_last_records_is_found(db: Database, key: signing.SigningKey, removed: int) -> None:
    add(db, 30)
    assert seals.sign(db, key, now_us=1) is not None
    top, _ = head(db)
    assert integrity.verify_store(db).ok
    truncate(db, top - removed)
    assert events.verify(db).ok  # the hash chain alone sees nothing wrong
    report = integrity.verify_store(db)
    assert not report.ok and report.broken_seq == top - removed + 1
    assert "truncated" in (report.problem or "")


def test_truncation_after_the_last_checkpoint_is_found_with_a_head_kept_elsewhere(
    db: Database, key: signing.SigningKey
) -> None:
    add(db, 5)
    seals.sign(db, key, now_us=1)
    add(db, 10)
    _, kept = head(db)
    assert integrity.verify_store(db, head=kept).ok
    truncate(db, head(db)[0] - 1)
    assert integrity.verify_store(db).ok  # the checkpoint is older than what was removed
    report = integrity.verify_store(db, head=kept)
    assert not report.ok and "head hash" in (report.problem or "")
    assert not integrity.verify_store(db, head="ab" * 32).ok


def test_a_record_changed_and_every_later_hash_recomputed_is_found(db: Database, key: signing.SigningKey) -> None:
    add(db, 20)
    seals.sign(db, key, now_us=1)
    add(db, 5)
    kept = head(db)[1]
    rewrite(db, 5, "forged")
    assert events.verify(db).ok  # the chain links again
    report = integrity.verify_store(db)
    assert not report.ok and report.broken_seq == 22  # the checkpoint record signs the old record 21
    assert "recomputed" in (report.problem or "")
    assert not integrity.verify_store(db, head=kept).ok


def test_a_forged_checkpoint_record_is_found(db: Database, key: signing.SigningKey, tmp_path: Path) -> None:
    """Rewriting the checkpoint record to sign the new hashes needs the key: its signature fails."""
    add(db, 10)
    seals.sign(db, key, now_us=1)
    rewrite(db, 5, "forged")
    with db.write() as cur:  # the checkpoint now names the new hash of record 11, and the chain is recomputed
        cur.execute("SELECT body FROM events WHERE seq = 12")
        data = json.loads(cur.fetchone()[0])
        cur.execute("SELECT hash FROM events WHERE seq = 11")
        data["signed_hash"] = cur.fetchone()[0]
        cur.execute(db.sql("UPDATE events SET body = :b WHERE seq = 12"), {"b": canonical_json(data)})
    rewrite(db, 0, "")  # recompute every hash
    report = integrity.verify_store(db)
    assert not report.ok and report.broken_seq == 12 and "signature does not verify" in (report.problem or "")


def test_a_checkpoint_by_a_key_the_chain_never_introduced_is_refused(db: Database, tmp_path: Path) -> None:
    add(db, 3)
    stranger = signing.load_or_create(tmp_path / "stranger.pem")
    seq, hash_ = head(db)
    signature = stranger.sign(seals.payload(seq, hash_, 1, stranger.id))
    fields = {"agent": "*", "environment": "*", "session": None, "signed_seq": seq, "signed_hash": hash_}
    fields |= {"key_id": stranger.id, "signature": signature}
    with db.write() as cur:
        events.append(db, cur, [events.make_event("checkpoint.signed", 1, fields)])
    report = integrity.verify_store(db)
    assert not report.ok and report.broken_seq == 4 and "introduces it" in (report.problem or "")
    trusted = integrity.trusted_keys([stranger.public_pem.encode()])
    assert integrity.verify_store(db, trusted=trusted).ok  # given the key, it verifies


def forge(db: Database, keep: int, forger: signing.SigningKey) -> None:
    """Rewrite the chain as someone who can write the store but lacks the key: cut the
    checkpoints after record `keep` off, change record 5, rehash, and sign with their own key."""
    truncate(db, keep)
    with db.write() as cur:
        cur.execute(db.sql("DELETE FROM checkpoints WHERE record_seq > :n"), {"n": keep})
    rewrite(db, 5, "forged")
    assert seals.sign(db, forger, now_us=9) is not None


def test_a_chain_re_signed_with_a_key_it_introduces_fails_against_the_configured_key(
    db: Database, key: signing.SigningKey, tmp_path: Path
) -> None:
    add(db, 10)
    seals.sign(db, key, now_us=1)
    configured = integrity.trusted_keys([key.public_pem.encode()])
    assert integrity.verify_store(db, anchor=configured).ok
    forger = signing.load_or_create(tmp_path / "forger.pem")
    forge(db, 10, forger)
    assert integrity.verify_store(db).ok  # the chain agrees with itself: all that is left without a key
    report = integrity.verify_store(db, anchor=configured)
    assert not report.ok and report.broken_seq == head(db)[0], report  # the forger's checkpoint
    assert f"signed by key {forger.id}, which is not trusted" in (report.problem or "")
    assert key.id in (report.problem or "")


def test_a_rewrite_after_the_last_checkpoint_of_the_configured_key_is_found(
    db: Database, key: signing.SigningKey, tmp_path: Path
) -> None:
    """The forger keeps the configured key's checkpoint and forges only the records after it."""
    add(db, 4)
    seals.sign(db, key, now_us=1)  # records 5 (introduced) and 6 (signed)
    add(db, 6)
    forger = signing.load_or_create(tmp_path / "forger.pem")
    with db.write() as cur:  # change record 8, rehash from there on
        cur.execute("SELECT seq, body FROM events WHERE seq >= 8 ORDER BY seq")
        rows = cur.fetchall()
        cur.execute("SELECT hash FROM events WHERE seq = 7")
        prev = cur.fetchone()[0]
        for seq, body in rows:
            data = json.loads(body)
            data["model"] = "forged" if seq == 8 else data["model"]
            body = canonical_json(data)
            h = events.chain_hash(prev, body)
            cur.execute(
                db.sql("UPDATE events SET body = :b, prev_hash = :p, hash = :h, model = :m WHERE seq = :s"),
                {"b": body, "p": prev, "h": h, "m": data["model"], "s": seq},
            )
            prev = h
    seals.sign(db, forger, now_us=2)
    configured = integrity.trusted_keys([key.public_pem.encode()])
    assert integrity.verify_store(db).ok
    report = integrity.verify_store(db, anchor=configured)
    assert not report.ok and report.broken_seq == head(db)[0] and forger.id in (report.problem or "")


def test_a_rotated_out_key_is_trusted_where_a_checkpoint_of_the_configured_key_follows(
    db: Database, tmp_path: Path
) -> None:
    old, new = signing.load_or_create(tmp_path / "old.pem"), signing.load_or_create(tmp_path / "new.pem")
    add(db, 3)
    seals.sign(db, old, now_us=1)
    add(db, 3)
    configured = integrity.trusted_keys([new.public_pem.encode()])
    report = integrity.verify_store(db, anchor=configured)  # the new key has signed nothing yet
    assert not report.ok and report.broken_seq == 5 and "clearance audit checkpoint" in (report.problem or "")
    seals.sign(db, new, now_us=2)
    report = integrity.verify_store(db, anchor=configured)
    assert report.ok and report.checkpoints == 2, report
    other = integrity.trusted_keys([signing.load_or_create(tmp_path / "other.pem").public_pem.encode()])
    assert not integrity.verify_store(db, anchor=other).ok


def test_key_rotation_is_recorded_and_old_checkpoints_verify_with_their_key(db: Database, tmp_path: Path) -> None:
    old, new = signing.load_or_create(tmp_path / "old.pem"), signing.load_or_create(tmp_path / "new.pem")
    add(db, 3)
    first = seals.sign(db, old, now_us=1)
    add(db, 3)
    second = seals.sign(db, new, now_us=2)
    assert first is not None and second is not None and (first.key_id, second.key_id) == (old.id, new.id)
    [rotated] = events.query(db, events.EventFilter(kind="checkpoint.key_introduced"), limit=1, newest_first=True)
    assert rotated.body["key_id"] == new.id and rotated.body["previous_key_id"] == old.id
    assert seals.keys(db) == {old.id: old.public_pem, new.id: new.public_pem}
    assert integrity.verify_store(db).checkpoints == 2
    both = integrity.trusted_keys([old.public_pem.encode(), new.public_pem.encode()])
    assert integrity.verify_store(db, trusted=both).ok
    only_new = integrity.trusted_keys([new.public_pem.encode()])
    report = integrity.verify_store(db, trusted=only_new)
    assert not report.ok and "not one of the public keys given" in (report.problem or "")


def test_an_export_verifies_offline_with_only_the_public_key(db: Database, key: signing.SigningKey) -> None:
    add(db, 5, note='hostile \x00 \u202e \U0001f600 \\ " \n')
    add(db, 5, note="1e16 " + "y" * 5000)
    seals.sign(db, key, now_us=1)
    exported = list(lines(events.iterate(db, events.EventFilter()), "jsonl"))
    trusted = integrity.trusted_keys([key.public_pem.encode()])
    report = integrity.verify_export(exported, trusted)
    assert report.ok and report.checked == 12 and report.checkpoints == 1, report
    assert integrity.verify_export(list(reversed(exported)), trusted).ok  # the server's export is newest first

    tampered = json.loads(exported[3])
    tampered["model"] = "changed"
    changed = [*exported[:3], json.dumps(tampered) + "\n", *exported[4:]]
    report = integrity.verify_export(changed, trusted)
    assert not report.ok and report.broken_seq == 4

    assert not integrity.verify_export(exported[:3] + exported[4:], trusted).ok  # a record removed
    other = signing.load_or_create(Path(os.getcwd()) / "other.pem")
    report = integrity.verify_export(exported, integrity.trusted_keys([other.public_pem.encode()]))
    assert not report.ok and "not one of the public keys given" in (report.problem or "")
    report = integrity.verify_export(exported[:10], trusted)  # cut before its checkpoint
    assert not report.ok and "no signed checkpoint" in (report.problem or "")
    assert not integrity.verify_export(["not json\n"], trusted).ok


def sink_lines(db: Database) -> list[str]:
    """The records as a JSON-lines sink writes them: each line says the hash it follows."""
    with db.read() as cur:
        cur.execute("SELECT seq, id, prev_hash, hash, body FROM events ORDER BY seq")
        rows = cur.fetchall()
    return [
        json.dumps({"seq": r[0], "id": r[1], "prev_hash": r[2], "hash": r[3], "event": json.loads(r[4])}) + "\n"
        for r in rows
    ]


def test_an_export_or_sink_file_with_its_first_records_cut_off_does_not_verify(
    db: Database, key: signing.SigningKey
) -> None:
    """Checked from wherever it starts, a copy whose first records were removed would still verify."""
    add(db, 6)
    seals.sign(db, key, now_us=1)
    trusted = integrity.trusted_keys([key.public_pem.encode()])
    exported = list(lines(events.iterate(db, events.EventFilter()), "jsonl"))
    sink = sink_lines(db)
    assert integrity.verify_export(exported, trusted).ok and integrity.verify_export(sink, trusted).ok
    before_cut = json.loads(exported[2])["hash"]  # of record 3: the cut copies start at record 4
    for cut in (exported[3:], sink[3:]):
        report = integrity.verify_export(cut, trusted)
        assert not report.ok and report.broken_seq == 4 and report.checked == 0, report
        assert "the first record (line 1) does not link to GENESIS" in (report.problem or "")
        assert "--start HASH" in (report.problem or "")
        report = integrity.verify_export(cut, trusted, start=before_cut.upper())  # a file that starts later
        assert report.ok and report.checked == len(cut) and report.checkpoints == 1, report
    wrong = json.loads(exported[1])["hash"]
    for cut, says in ((exported[3:], "(or it was changed)"), (sink[3:], f"it follows hash {before_cut!r}")):
        report = integrity.verify_export(cut, trusted, start=wrong)
        problem = report.problem or ""
        assert not report.ok and report.broken_seq == 4
        assert f"does not link to the --start hash {wrong!r}" in problem and says in problem
    report = integrity.verify_export(sink[4:], trusted, start=before_cut)  # one more record cut off
    assert not report.ok and "records before it were cut off" in (report.problem or "")


def test_the_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "d" / "k.pem"
    made = signing.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_or_create(path).id == made.id
    path.write_text("not a key")
    with pytest.raises(ConfigurationError, match="not an unencrypted PEM"):
        signing.load_or_create(path)


def test_the_default_key_sits_beside_the_sqlite_store(tmp_path: Path) -> None:
    assert signing.default_key_path(str(tmp_path / "x.db")) == tmp_path / "signing-key.pem"
    assert signing.default_key_path(f"sqlite:///{tmp_path}/x.db") == tmp_path / "signing-key.pem"
    assert signing.default_key_path("postgresql+psycopg://h/db") == Path(".clearance") / "signing-key.pem"


def test_with_keys_to_trust_a_chain_whose_checkpoints_were_removed_and_rehashed_is_refused(
    db: Database, key: signing.SigningKey
) -> None:
    add(db, 20)
    seals.sign(db, key, now_us=1)
    add(db, 5)
    with db.write() as cur:  # someone with the database drops every checkpoint, edits, rehashes
        cur.execute("DELETE FROM events WHERE kind LIKE 'checkpoint.%'")
        cur.execute("DELETE FROM checkpoints")
        cur.execute("SELECT seq, body FROM events ORDER BY seq")
        prev = events.GENESIS
        for s, body in cur.fetchall():
            if s == 5:
                body = canonical_json({**json.loads(body), "forged": True})
            h = events.chain_hash(prev, body)
            cur.execute(
                db.sql("UPDATE events SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"b": body, "p": prev, "h": h, "s": s},
            )
            prev = h
    assert integrity.verify_store(db).ok  # without a key to trust, nothing says a checkpoint was ever there
    trusted = integrity.trusted_keys([key.public_pem.encode()])
    report = integrity.verify_store(db, trusted=trusted)
    assert not report.ok and "no checkpoint signed by the keys given" in (report.problem or "")


def _load_key(path: str, go: Any, out: Any) -> None:
    go.wait()
    try:
        out.put(signing.load_or_create(path).id)
    except Exception as exc:  # reported to the test, which names it
        out.put(f"{type(exc).__name__}: {exc}")


def test_processes_starting_at_once_all_load_the_one_key_created(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        path = str(tmp_path / f"key-{round_}.pem")
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_load_key, args=(path, go, out)) for _ in range(8)]
        for p in procs:
            p.start()
        go.set()
        ids = {out.get(timeout=60) for _ in procs}
        for p in procs:
            p.join(60)
        assert ids == {signing.load_or_create(path).id}, ids
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"key-{i}.pem" for i in range(10))  # no leftovers


def test_the_signer_refuses_a_chain_that_no_longer_holds_the_checkpoint_it_saw(
    db: Database, key: signing.SigningKey
) -> None:
    """Deleting the newest checkpoints and rewriting what they signed would otherwise get the
    rewrite signed by the real key at the next checkpoint; the signer that saw them refuses."""
    add(db, 10)
    first = seals.sign(db, key, now_us=1)
    add(db, 10)
    second = seals.sign(db, key, now_us=2, known=first)  # the chain holds `first`: signed
    assert first is not None and second is not None
    add(db, 3)
    truncate(db, second.record_seq - 1)  # the newest checkpoint's record, and everything after it
    with db.write() as cur:
        cur.execute(db.sql("DELETE FROM checkpoints WHERE seq >= :s"), {"s": second.seq})
    rewrite(db, first.record_seq + 2, "forged")  # after the older checkpoint: it still verifies
    add(db, 3)
    assert integrity.verify_store(db).ok  # nothing in the store shows it now
    with pytest.raises(ChainBroken, match=f"signing record {second.seq} .* is gone from the checkpoints"):
        seals.sign(db, key, now_us=3, known=second)
    assert seals.latest(db) == first  # nothing was signed


def test_the_signer_refuses_when_the_record_it_saw_signed_has_another_hash(
    db: Database, key: signing.SigningKey
) -> None:
    add(db, 10)
    first = seals.sign(db, key, now_us=1)
    assert first is not None
    rewrite(db, 4, "forged")  # before the checkpoint: every later hash recomputed, the row kept
    add(db, 2)
    with pytest.raises(ChainBroken, match=f"no longer has that hash at record {first.seq}"):
        seals.sign(db, key, now_us=2, known=first)
    add(db, 2)
    with db.write() as cur:  # its own record changed too (another signature copied in)
        cur.execute(
            db.sql("UPDATE events SET body = replace(body, :old, :new) WHERE seq = :s"),
            {"old": first.signature, "new": "AAAA", "s": first.record_seq},
        )
    rewrite(db, 1, "a")  # rehash again so the chain links
    with pytest.raises(ChainBroken):
        seals.sign(db, key, now_us=3, known=first)


def test_the_signer_accepts_a_newer_checkpoint_and_one_archived(db: Database, key: signing.SigningKey) -> None:
    """A replica's newer checkpoint, and one whose records were archived since, are no rewrite."""
    add(db, 10)
    first = seals.sign(db, key, now_us=1)
    add(db, 10)
    second = seals.sign(db, key, now_us=2)  # another replica's, say
    add(db, 5)
    assert first is not None and second is not None
    assert seals.sign(db, key, now_us=3, known=first) is not None
    got = archives.due(db, before_us=10**12, limit=10**6, max_bytes=10**9, upto=second.record_seq)
    assert got[-1][0] == second.record_seq
    archives.remove(db, "events-test.jsonl.gz", got, sha256="0" * 64, now_us=5)  # the records of both left
    add(db, 3)
    assert seals.sign(db, key, now_us=4, known=second) is not None


def replace_chain(db: Database, key: signing.SigningKey, n: int) -> seals.Checkpoint:
    """Put another chain signed by the same key in the store's place (another store's, copied in): its checkpoint."""
    with db.write() as cur:
        cur.execute("DELETE FROM events")
        cur.execute("DELETE FROM checkpoints")
    add(db, n, note="elsewhere")
    made = seals.sign(db, key, now_us=50)
    assert made is not None
    return made


def test_a_newer_checkpoint_is_adopted_only_while_the_chain_holds_the_known_one(
    db: Database, key: signing.SigningKey
) -> None:
    """Another store's chain and checkpoints copied in (one key signs both): its newer checkpoint
    verifies, but adopting it would make the signer's memory forget the one this store lost."""
    from clearance import _seal_memory as memory

    add(db, 5)
    known = seals.sign(db, key, now_us=1)
    add(db, 5)
    newer = seals.sign(db, key, now_us=2)  # a replica's: the chain holds `known`
    assert known is not None and newer is not None
    assert memory.newest(db, key, known, seals.latest(db)) == newer
    copied = replace_chain(db, key, 30)
    assert copied.seq > newer.seq and memory.signed_by(key, copied)
    assert memory.newest(db, key, newer, seals.latest(db)) == newer  # not adopted
    with pytest.raises(ChainBroken):
        seals.sign(db, key, now_us=3, known=newer)


def rehash_after_start(db: Database, model: str) -> None:
    """Change every record left and recompute their hashes from where the chain now starts."""
    rechain(db, model)


def test_a_forged_archive_boundary_past_the_known_checkpoint_is_refused(db: Database, key: signing.SigningKey) -> None:
    """The `archives` table is the database's word: an archive row made up past the known checkpoint,
    the records up to it deleted and the rest rewritten chaining from it, is not taken as archived."""
    add(db, 5)
    known = seals.sign(db, key, now_us=1)
    assert known is not None
    add(db, 5)
    rows = archives.due(db, before_us=10**12, limit=10**6, max_bytes=10**9, upto=known.record_seq + 2)
    archives.remove(db, "events-forged.jsonl.gz", rows, sha256="0" * 64, now_us=5)  # the made-up archive
    rehash_after_start(db, "forged")
    add(db, 2)
    anchor = {key.id: key.private.public_key()}
    assert integrity.verify_store(db, anchor=anchor).ok  # the store agrees with itself
    with pytest.raises(ChainBroken, match=f"signing record {known.seq} .* is archived by the database's account"):
        seals.sign(db, key, now_us=3, known=known)
    found = integrity.verify_store(db, anchor=anchor, known=known)
    assert not found.ok and "no newer checkpoint of key" in str(found.problem)


def test_archiving_keeps_what_the_newest_checkpoint_signs(
    db: Database, key: signing.SigningKey, tmp_path: Path
) -> None:
    """So a chain archived in earnest still holds the signer's newest checkpoint, or a newer one."""
    from clearance import _archive

    add(db, 5)
    newest = seals.sign(db, key, now_us=1)
    add(db, 5)
    assert newest is not None
    done = _archive.archive(db, tmp_path / "arch", before_us=10**12)
    assert done.start_seq == newest.seq - 1
    add(db, 2)
    assert seals.sign(db, key, now_us=2, known=newest) is not None
