"""A restarted `clearance serve` remembers the newest checkpoint it signed (kept beside the key file):
a chain rewritten while it was down is not signed, a memory file that will not do is refused, and
after a restore from a backup the operator has it forgotten (docs/operations/backup.md)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearance._store import Database

from .._stores import checkpoints, records
from .._wait import until
from ..conftest import run_cli
from ..store.test_seals import drop_newest_checkpoint, rewrite
from .conftest import Server, _free_port


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys" / "signing-key.pem"
    monkeypatch.setenv("CLEARANCE_SIGNING_KEY", str(path))
    monkeypatch.setenv("CLEARANCE_CHECKPOINT_EVERY", "3")
    monkeypatch.setenv("CLEARANCE_CHECKPOINT_INTERVAL", "86400")
    return path


@pytest.fixture
def server(any_store: str, tmp_path: Path, key_file: Path) -> Iterator[Server]:
    Database(any_store).close()
    s = Server(any_store, _free_port(), tmp_path / "server.log", make_keys=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def signs(server: Server, n: int) -> None:
    """Record three and wait until the server has signed its `n`th checkpoint."""
    records(str(server.db), 3)
    until(lambda: len(checkpoints(str(server.db))) >= n, f"checkpoint {n} signed")


def refuses(server: Server, says: str) -> None:
    """Record enough for a checkpoint, and wait until the server's log says it refused."""
    records(str(server.db), 3)
    until(lambda: says in server.log.read_text(), f"the server refuses: {says}")


def test_a_chain_rewritten_while_the_server_was_down_is_not_signed_after_a_restart(
    server: Server, key_file: Path
) -> None:
    url = str(server.db)
    signs(server, 1)
    signs(server, 2)
    assert f"the signing key file is {key_file}" in server.log.read_text()
    server.stop()
    newest, older = checkpoints(url)[:2]
    db = Database(url)
    try:  # the newest checkpoint deleted (record and row), a record after the older one changed, rehashed
        drop_newest_checkpoint(db, newest)
        rewrite(db, older.record_seq + 1, "forged")
    finally:
        db.close()
    server.start()
    refuses(server, f"not signing a checkpoint: the checkpoint signing record {newest.seq}")
    forget = f"if the store was restored from a backup, forget it: clearance audit checkpoint --forget --key {key_file}"
    assert forget in server.log.read_text()
    assert checkpoints(url)[0] == older  # nothing signed


def test_a_memory_file_that_will_not_do_is_refused_with_a_clear_log_line(server: Server, key_file: Path) -> None:
    signs(server, 1)
    server.stop()
    last = Path(f"{key_file}.last")
    last.write_text(last.read_text().replace('"seq": ', '"seq": 1'))  # a signed field changed
    server.start()
    refuses(server, f"not signing checkpoints: the checkpoint memory {last} does not verify with the key")
    assert len(checkpoints(str(server.db))) == 1


def test_after_a_restore_from_a_backup_removing_the_memory_lets_it_sign(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented restore: the backup lacks the newest checkpoint; the server refuses it as it
    would a rewrite, until the operator has it forgotten (`clearance audit checkpoint --forget`)."""
    url = tmp_path / "live.db"
    Database(str(url)).close()
    server = Server(url, _free_port(), tmp_path / "server.log", make_keys=False)
    server.start()
    try:
        signs(server, 1)
        run_cli("db", "backup", str(tmp_path / "backup.db"), db=url, check=True)
        signs(server, 2)
        server.stop()
        shutil.copyfile(tmp_path / "backup.db", url)  # restore
        for extra in ("-wal", "-shm"):
            Path(f"{url}{extra}").unlink(missing_ok=True)
        server.start()
        refuses(server, "if the store was restored from a backup, forget it: clearance audit checkpoint --forget")
        server.stop()
        forgot = run_cli("audit", "checkpoint", "--forget", db=url, check=True).stdout  # CLEARANCE_SIGNING_KEY
        assert forgot.startswith("forgot the checkpoint of record ") and "signed record " in forgot
        server.start()
        signs(server, 3)
        verified = run_cli("audit", "verify", db=url, check=True).stdout  # trusting CLEARANCE_SIGNING_KEY
        assert "3 signed checkpoints verify" in verified and f"({key_file})" in verified
    finally:
        server.stop()


@pytest.mark.postgres
def test_serve_on_postgresql_says_where_its_default_key_file_is(pg_url: str, tmp_path: Path) -> None:
    """The PostgreSQL default is relative to the working directory: serve prints the absolute path and warns."""
    Database(pg_url).close()
    server = Server(pg_url, _free_port(), tmp_path / "server.log", make_keys=False)
    server.start()
    server.stop()
    said = server.log.read_text()
    assert f"the signing key file is {tmp_path / '.clearance' / 'signing-key.pem'}" in said
    assert "set CLEARANCE_SIGNING_KEY so every start and every replica uses the same key" in said
