"""The newest checkpoint a key has signed, kept beside the key file (`_seal_memory`), on real files."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from clearance import _seal_memory as memory
from clearance import _signing as signing
from clearance._store import _seals as seals
from clearance.errors import ConfigurationError

STORE = "/srv/clearance/clearance.db"


def load(path: Path, key: signing.SigningKey, store: str) -> seals.Checkpoint | None:
    return memory.load(path, memory.public(key), store)


def signed(key: signing.SigningKey, seq: int) -> seals.Checkpoint:
    hash_, at = f"{seq:064x}", seq * 10
    return seals.Checkpoint(seq, hash_, at, key.id, key.sign(seals.payload(seq, hash_, at, key.id)), seq + 1)


def test_it_is_kept_verified_readable_by_its_owner_only_and_only_forward(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    key = signing.load_or_create(path)
    assert load(path, key, STORE) is None  # none yet
    assert memory.remember(path, signed(key, 7), STORE)
    assert memory.path(path) == tmp_path / "signing-key.pem.last"
    assert stat.S_IMODE(memory.path(path).stat().st_mode) == 0o600
    assert load(path, key, STORE) == signed(key, 7)
    assert not memory.remember(path, signed(key, 5), STORE)  # an older one never replaces it
    assert memory.remember(path, signed(key, 9), STORE) and load(path, key, STORE) == signed(key, 9)
    assert not list(tmp_path.glob(".signing-key.pem.last.*"))  # no temporary file left


def test_another_keys_memory_is_a_rotation_and_is_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    old = signing.load_or_create(path)
    memory.remember(path, signed(old, 7), STORE)
    path.unlink()
    new = signing.load_or_create(path)  # the key file replaced
    assert load(path, new, STORE) is None
    memory.remember(path, signed(new, 12), STORE)
    assert load(path, new, STORE) == signed(new, 12)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("junk", "is not a checkpoint"),
        ('{"seq": 7, "hash": "x"', "is not a checkpoint"),  # cut short
        ("[]", "is not a checkpoint"),
        ('{"s": {"seq": "7", "hash": "a", "at_us": 1, "key_id": "k", "signature": "s"}}', "is not a checkpoint"),
        (None, "does not verify with the key"),  # a signed field changed
    ],
)
def test_a_memory_that_will_not_do_is_refused_with_its_path(tmp_path: Path, text: str | None, says: str) -> None:
    path = tmp_path / "signing-key.pem"
    key = signing.load_or_create(path)
    memory.remember(path, signed(key, 7), STORE)
    if text is None:
        data = json.loads(memory.path(path).read_text())
        data[STORE]["seq"] = 3  # pointing at an older checkpoint the rewriter kept
        text = json.dumps(data)
    memory.path(path).write_text(text)
    with pytest.raises(ConfigurationError, match=says) as raised:
        load(path, key, STORE)
    assert str(memory.path(path)) in str(raised.value)
    if says == "is not a checkpoint":  # left for a person to look at, not overwritten
        with pytest.raises(ConfigurationError, match=says):
            memory.remember(path, signed(key, 8), STORE)
        assert memory.path(path).read_text() == text


def test_each_store_a_key_signs_has_its_own_entry(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    key = signing.load_or_create(path)
    other = memory.store_name(str(tmp_path / "b.db"))
    assert other == str((tmp_path / "b.db").resolve())
    assert memory.store_name("postgresql+psycopg://u:secret@db/c") == "postgresql://db:5432/c"  # no password
    memory.remember(path, signed(key, 9), STORE)
    memory.remember(path, signed(key, 4), other)  # older than the other store's: its own store's newest
    assert load(path, key, STORE) == signed(key, 9) and load(path, key, other) == signed(key, 4)
    assert load(path, key, "postgresql://db:5432/c") is None


def test_concurrent_writers_leave_the_newest_whole(tmp_path: Path) -> None:
    """Workers and replicas share the key file: each writes what it signed or saw, at the same time."""
    path = tmp_path / "signing-key.pem"
    key = signing.load_or_create(path)
    made = [signed(key, seq) for seq in range(1, 41)]
    start = threading.Barrier(8)

    def write(mine: list[seals.Checkpoint]) -> None:
        start.wait()
        for cp in mine:
            memory.remember(path, cp, STORE)

    threads = [threading.Thread(target=write, args=(made[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert load(path, key, STORE) == made[-1]
    assert not list(tmp_path.glob(".signing-key.pem.last.*"))


def test_forget_removes_one_stores_entry_or_a_file_that_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    key = signing.load_or_create(path)
    memory.remember(path, signed(key, 9), STORE)
    memory.remember(path, signed(key, 4), "/srv/other.db")
    said = memory.forget(path, STORE)
    assert said is not None and said.startswith("the checkpoint of record 9 ")
    assert load(path, key, STORE) is None and load(path, key, "/srv/other.db") == signed(key, 4)
    assert memory.forget(path, STORE) is None
    memory.path(path).write_text("junk")
    assert "which was not one of checkpoints" in str(memory.forget(path, STORE))
    assert not memory.path(path).exists() and memory.forget(path, STORE) is None


def test_a_postgresql_store_has_one_name_however_its_url_is_spelled() -> None:
    """A differently spelled --database would otherwise find no entry and trust the store afresh."""
    names = {
        memory.store_name(url)
        for url in (
            "postgresql://db.example:5432/audit",
            "postgresql+psycopg://DB.Example/audit",
            "postgresql://lena:secret@db.example/audit?sslmode=require",
            "postgresql+psycopg://clearance@db.example:5432/audit",
        )
    }
    assert names == {"postgresql://db.example:5432/audit"}
    assert memory.store_name("postgresql://db.example:5433/audit") != "postgresql://db.example:5432/audit"
    assert memory.store_name("postgresql://db.example/other") == "postgresql://db.example:5432/other"
