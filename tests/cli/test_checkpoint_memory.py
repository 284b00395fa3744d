"""`clearance audit checkpoint` remembers the newest checkpoint of its key beside the key file, so
a rewrite made between two runs is refused as the server refuses it (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearance import _integrity as integrity
from clearance import _seal_memory as memory
from clearance import _signing as signing
from clearance._store import Database
from clearance._store import _seals as seals

from .._stores import checkpoints, records
from ..conftest import run_cli
from ..store.test_seals import add, drop_newest_checkpoint, rewrite, truncate


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    Database(url).close()
    return url


def test_a_chain_rewritten_after_an_older_checkpoint_is_not_signed(store: str, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "signing-key.pem"
    sign = ("audit", "checkpoint", "--key", str(key_file))
    records(store, 3)
    run_cli(*sign, db=store, check=True)
    records(store, 3)
    run_cli(*sign, db=store, check=True)
    key = signing.load_or_create(key_file)
    ok = run_cli("audit", "verify", "--key", str(key_file), db=store, check=True).stdout
    kept = checkpoints(store)[0].seq
    assert f"the signer's newest checkpoint, of record {kept} ({key_file}.last), is in the chain" in ok
    db = Database(store)
    try:
        newest, older = seals.page(db, limit=2)
        kept = json.loads((tmp_path / "keys" / "signing-key.pem.last").read_text())[memory.store_name(store)]
        assert (kept["seq"], kept["hash"], kept["key_id"]) == (newest.seq, newest.hash, key.id)
        # The newest checkpoint deleted (record and row), a record after the older one changed, rehashed
        drop_newest_checkpoint(db, newest)
        rewrite(db, older.record_seq + 1, "forged")
    finally:
        db.close()
    records(store, 2)
    refused = run_cli(*sign, db=store)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"not signing: the checkpoint signing record {newest.seq}" in refused.stderr
    forget = f"if the store was restored from a backup, forget it: clearance audit checkpoint --forget --key {key_file}"
    assert forget in refused.stderr
    assert checkpoints(store)[0] == older  # nothing signed
    # verify finds it too: the store alone agrees with itself, the signer's memory does not
    found = run_cli("audit", "verify", "--key", str(key_file), db=store)
    assert found.returncode == 1 and f"BROKEN: record {newest.seq}: the newest checkpoint the signer" in found.stderr
    assert forget in found.stderr


def test_a_memory_that_will_not_do_refuses_and_forget_after_a_restore_signs(store: str, tmp_path: Path) -> None:
    key_file = tmp_path / "signing-key.pem"
    sign = ("audit", "checkpoint", "--key", str(key_file))
    records(store, 3)
    run_cli(*sign, db=store, check=True)
    last = Path(f"{key_file}.last")
    last.write_text(last.read_text()[:-3])  # cut short
    records(store, 1)
    refused = run_cli(*sign, db=store)
    assert refused.returncode == 1 and f"the checkpoint memory {last} is not a checkpoint" in refused.stderr
    assert "once you know why, --forget removes it" in refused.stderr
    looked = run_cli("audit", "verify", "--key", str(key_file), db=store)  # as the signer refuses, verify fails
    unusable = f"NOT VERIFIED: not verified against the signer's memory: the checkpoint memory {last} is not a"
    assert looked.returncode == 1 and unusable in looked.stderr and "Traceback" not in looked.stderr
    assert "ok:" not in looked.stdout and "the chain agrees with itself (6 records" in looked.stderr
    forgot = run_cli(*sign, "--forget", db=store, check=True).stdout
    assert f"forgot {last}, which was not one of checkpoints" in forgot and "signed record " in forgot

    # A store restored from a backup taken before its newest checkpoint: refused until it is forgotten
    db = Database(store)
    try:
        backed_up = seals.latest(db)
        assert backed_up is not None
        add(db, 2)
        db.close()
        run_cli(*sign, db=store, check=True)
        db = Database(store)
        after = seals.latest(db)
        assert after is not None and after.seq > backed_up.seq
        truncate(db, backed_up.record_seq)  # what the backup holds
        with db.write() as cur:
            cur.execute(db.sql("DELETE FROM checkpoints WHERE seq > :s"), {"s": backed_up.seq})
    finally:
        db.close()
    records(store, 1)
    assert "restored from a backup" in run_cli(*sign, db=store).stderr
    forgot = run_cli(*sign, "--forget", db=store, check=True).stdout
    assert forgot.startswith(f"forgot the checkpoint of record {after.seq} ")  # the one signed after the backup
    key = signing.load_or_create(key_file)
    assert "signed record " in forgot and key.id in forgot
    other = str(tmp_path / "other.db")
    Database(other).close()
    nothing = run_cli(*sign, "--forget", db=other)  # a wrong --database: nothing forgotten, nothing signed
    assert nothing.returncode == 1 and f"nothing was remembered for {other} in {last}" in nothing.stderr
    assert f"it remembers checkpoints for {memory.store_name(store)}" in nothing.stderr
    assert checkpoints(other) == []
    db = Database(store)
    try:
        assert integrity.verify_store(db, anchor={key.id: key.private.public_key()}).ok
    finally:
        db.close()


def test_two_stores_beside_one_key_file_each_keep_their_own_newest(tmp_path: Path) -> None:
    """Two SQLite stores in one directory share the default key file; neither's checkpoints make the other refuse."""
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    for url in (a, b, a, b):
        Database(url).close()
        records(url, 2)
        assert run_cli("audit", "checkpoint", db=url, check=True).stdout.startswith("signed record ")
    kept = json.loads((tmp_path / "signing-key.pem.last").read_text())
    assert sorted(kept) == sorted(memory.store_name(u) for u in (a, b))


def test_another_chain_of_the_same_key_copied_in_does_not_move_the_memory(store: str, tmp_path: Path) -> None:
    """One key signs two stores: the other's records and checkpoints copied into this one carry a
    newer checkpoint that verifies; taking it as the newest would forget the one this store lost."""
    from ..store.test_seals import replace_chain

    key_file = tmp_path / "signing-key.pem"
    sign = ("audit", "checkpoint", "--key", str(key_file))
    records(store, 3)
    run_cli(*sign, db=store, check=True)
    last = Path(f"{key_file}.last")
    kept = last.read_text()
    db = Database(store)
    try:
        replace_chain(db, signing.load_or_create(key_file), 40)
        add(db, 2)
    finally:
        db.close()
    refused = run_cli(*sign, db=store)
    assert refused.returncode == 1 and "not signing: the checkpoint signing record" in refused.stderr
    assert last.read_text() == kept  # still the one this store lost
    assert run_cli("audit", "verify", "--key", str(key_file), db=store).returncode == 1


def test_forget_needs_the_key_file_and_the_store_first(store: str, tmp_path: Path) -> None:
    key_file = tmp_path / "signing-key.pem"
    records(store, 3)
    run_cli("audit", "checkpoint", "--key", str(key_file), db=store, check=True)
    typo = tmp_path / "signing-kye.pem"
    refused = run_cli("audit", "checkpoint", "--forget", "--key", str(typo), db=store)
    assert refused.returncode == 1 and f"no signing key file at {typo}" in refused.stderr
    assert not typo.exists() and len(checkpoints(store)) == 1  # no key made, nothing signed
    last = Path(f"{key_file}.last")
    last.write_text("junk")  # a memory that will not do: stays until the right store is named
    wrong = run_cli("audit", "checkpoint", "--forget", "--key", str(key_file), "--database", str(tmp_path / "no.db"))
    assert wrong.returncode == 1 and last.read_text() == "junk"


def test_verify_of_an_archive_and_its_store_checks_the_signers_memory(store: str, tmp_path: Path) -> None:
    key_file = tmp_path / "signing-key.pem"
    sign = ("audit", "checkpoint", "--key", str(key_file))
    records(store, 3)
    run_cli(*sign, db=store, check=True)
    records(store, 3)
    run_cli(*sign, db=store, check=True)
    arch = tmp_path / "arch"
    run_cli("audit", "archive", "--before", "0h", str(arch), db=store, check=True)
    check = ("audit", "verify", "--archive", str(arch), "--key", str(key_file), "--database", store)
    ok = run_cli(*check, check=True).stdout
    assert "the signer's newest checkpoint, of record" in ok
    db = Database(store)
    try:
        newest = seals.latest(db)
        assert newest is not None
        drop_newest_checkpoint(db, newest)
    finally:
        db.close()
    records(store, 2)
    found = run_cli(*check)
    assert found.returncode == 1 and f"the checkpoint signing record {newest.seq}" in found.stderr
    Path(f"{key_file}.last").write_text("junk")
    unusable = run_cli(*check)
    assert unusable.returncode == 1 and "NOT VERIFIED: not verified against the signer's memory" in unusable.stderr


@pytest.mark.postgres
def test_a_store_the_memory_names_otherwise_is_not_trusted_afresh(pg_url: str, tmp_path: Path) -> None:
    """KEY.last remembers the key's checkpoints for other stores, not this one, whose newest is the
    key's: another spelling of a remembered store's URL. Refused, the names listed, unless --adopt."""
    Database(pg_url).close()
    key_file = tmp_path / "signing-key.pem"
    sign = ("audit", "checkpoint", "--key", str(key_file))
    records(pg_url, 3)
    run_cli(*sign, db=pg_url, check=True)
    last = Path(f"{key_file}.last")
    data = json.loads(last.read_text())
    assert list(data) == [memory.store_name(pg_url)]
    last.write_text(json.dumps({"postgresql://elsewhere:5432/x": data[memory.store_name(pg_url)]}))  # as named once
    records(pg_url, 2)
    refused = run_cli(*sign, db=pg_url)
    assert refused.returncode == 1 and "remembers ones of that key for postgresql://elsewhere:5432/x" in refused.stderr
    said = run_cli("audit", "verify", "--key", str(key_file), db=pg_url, check=True)
    assert "WARNING: " in said.stderr and "postgresql://elsewhere:5432/x" in said.stderr
    assert run_cli(*sign, "--adopt", db=pg_url, check=True).stdout.startswith("signed record ")
