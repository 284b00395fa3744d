"""`clearance audit checkpoint | verify --head --public-key --export | verify-receipt`, and the receipt snippet
of docs/concepts/audit-integrity.md."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import clearance
from clearance import _decisions as decisions
from clearance import _receipts as receipts
from clearance import _signing as signing
from clearance._guard._governor import Governor
from clearance._store import Database

from ..conftest import REPO, run_cli
from ..integrations._shared import LEAD

PAGE = (REPO / "docs" / "concepts" / "audit-integrity.md").read_text()


def calls(gov: Governor, n: int) -> None:
    for i in range(n):
        gov.begin("issue_refund", {"order_id": f"A-{i}", "amount": 5}, "s1")
    clearance.shutdown()  # every outcome committed


def public_pem(db_path: Path, to: Path) -> Path:
    to.write_text(signing.load_or_create(db_path.parent / signing.KEY_FILE).public_pem)
    return to


def test_checkpoint_then_verify_finds_truncation_and_a_head_kept_elsewhere(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    calls(configure(), 5)
    signed = run_cli("audit", "checkpoint", db=db_path, check=True).stdout
    assert signed.startswith("signed record ")
    key_file = db_path.parent / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "nothing recorded since" in run_cli("audit", "checkpoint", db=db_path, check=True).stdout
    ok = run_cli("audit", "verify", db=db_path, check=True).stdout
    assert "1 signed checkpoints verify" in ok
    [kept] = re.findall(r"hash ([0-9a-f]{64})", ok)
    assert run_cli("audit", "verify", "--head", kept, db=db_path).returncode == 0
    bad = run_cli("audit", "verify", "--head", "nope", db=db_path)
    assert bad.returncode == 2 and "64 hexadecimal digits" in bad.stderr

    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)")
    broken = run_cli("audit", "verify", db=db_path)
    assert broken.returncode == 1 and "truncated" in broken.stderr and "Traceback" not in broken.stderr
    broken = run_cli("audit", "verify", "--head", kept, db=db_path)
    assert broken.returncode == 1


def test_an_export_verifies_offline_with_the_public_key_and_tampering_fails(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    calls(configure(), 4)
    run_cli("audit", "checkpoint", db=db_path, check=True)
    out = tmp_path / "audit.jsonl"
    run_cli("audit", "export", "-o", str(out), db=db_path, check=True)
    pem = public_pem(db_path, tmp_path / "public.pem")
    ok = run_cli("audit", "verify", "--export", str(out), "--public-key", str(pem), check=True)
    assert ok.stdout.startswith("ok: ") and "signed checkpoints verify" in ok.stdout

    lines = out.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"tool_call.decided"' in line)
    record = json.loads(lines[at])
    record["args"]["amount"] = 5000
    lines[at] = json.dumps(record) + "\n"
    (tmp_path / "changed.jsonl").write_text("".join(lines))
    changed = run_cli("audit", "verify", "--export", str(tmp_path / "changed.jsonl"), "--public-key", str(pem))
    assert changed.returncode == 1 and f"BROKEN: record {record['seq']}" in changed.stderr

    other = tmp_path / "other.pem"
    other.write_text(signing.load_or_create(tmp_path / "other-private.pem").public_pem)
    wrong = run_cli("audit", "verify", "--export", str(out), "--public-key", str(other))
    assert wrong.returncode == 1 and "not one of the public keys given" in wrong.stderr
    none = run_cli("audit", "verify", "--export", str(out))  # no key file where the default store's would be
    assert none.returncode == 2 and "--public-key FILE, or --key" in none.stderr
    assert str(tmp_path / ".clearance" / "signing-key.pem") in none.stderr
    keyed = run_cli("audit", "verify", "--export", str(out), db=db_path, check=True)  # the key file beside the store
    mine = signing.load_or_create(db_path.parent / signing.KEY_FILE).id
    assert f"trusting checkpoints of the signing key {mine} ({db_path.parent / signing.KEY_FILE})" in keyed.stdout
    stranger = run_cli("audit", "verify", "--export", str(out), "--key", str(tmp_path / "other-private.pem"))
    assert stranger.returncode == 1 and "which is not trusted" in stranger.stderr
    (tmp_path / "junk.pem").write_text("junk")
    junk = run_cli("audit", "verify", "--export", str(out), "--public-key", str(tmp_path / "junk.pem"))
    assert junk.returncode == 2 and "not an Ed25519" in junk.stderr


def test_an_export_with_its_first_records_cut_off_needs_start(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    calls(configure(), 4)
    run_cli("audit", "checkpoint", db=db_path, check=True)
    out = tmp_path / "audit.jsonl"
    run_cli("audit", "export", "-o", str(out), db=db_path, check=True)
    pem = public_pem(db_path, tmp_path / "public.pem")
    lines = out.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[2:]))
    first, before = json.loads(lines[2]), json.loads(lines[1])
    broken = run_cli("audit", "verify", "--export", str(cut), "--public-key", str(pem))
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert f"BROKEN: record {first['seq']}: the first record (line 1) does not link to GENESIS" in broken.stderr
    assert "--start HASH" in broken.stderr
    ok = run_cli("audit", "verify", "--export", str(cut), "--public-key", str(pem), "--start", before["hash"])
    assert ok.returncode == 0, ok.stderr
    assert f"starts after the record with hash {before['hash']}" in ok.stdout and "ok: " in ok.stdout
    wrong = run_cli("audit", "verify", "--export", str(cut), "--public-key", str(pem), "--start", "0" * 64)
    assert wrong.returncode == 1 and f"does not link to the --start hash {'0' * 64!r}" in wrong.stderr
    bad = run_cli("audit", "verify", "--export", str(cut), "--public-key", str(pem), "--start", "\u202e" + "0" * 63)
    assert bad.returncode == 2 and "64 hexadecimal digits" in bad.stderr and "--start" in bad.stderr
    alone = run_cli("audit", "verify", "--start", before["hash"], db=db_path)
    assert alone.returncode == 2 and "--start is for --export" in alone.stderr


def test_a_jsonl_sink_keeps_a_copy_of_every_checkpoint_that_verifies_offline(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "elsewhere.jsonl"
    gov = configure(exporters=[f"jsonl:{copy}"])
    calls(gov, 1)  # the sink starts here
    gov = configure(exporters=[f"jsonl:{copy}"])
    gov.begin("issue_refund", {"order_id": "B", "amount": 5}, "s1")
    key = signing.load_or_create(db_path.parent / signing.KEY_FILE)
    from clearance._clock import now_us
    from clearance._store import _seals as seals

    assert seals.sign(gov.db, key, now_us=now_us()) is not None
    clearance.shutdown()  # the sink delivers what was committed
    kinds = [json.loads(line)["kind"] for line in copy.read_text().splitlines()]
    assert kinds[-2:] == ["checkpoint.key_introduced", "checkpoint.signed"]
    pem = public_pem(db_path, tmp_path / "public.pem")
    first = json.loads(copy.read_text().splitlines()[0])["seq"]
    assert first > 1  # the sink started after the first call's records
    cut = run_cli("audit", "verify", "--export", str(copy), "--public-key", str(pem))
    assert cut.returncode == 1 and "does not link to GENESIS" in cut.stderr
    with sqlite3.connect(db_path) as conn:  # a file that starts later is checked from the hash before it
        [(before,)] = conn.execute("SELECT hash FROM events WHERE seq = ?", (first - 1,)).fetchall()
    ok = run_cli("audit", "verify", "--export", str(copy), "--public-key", str(pem), "--start", before)
    assert ok.returncode == 0, ok.stderr


def test_verify_trusts_the_signing_key_file_not_a_key_the_chain_introduces(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    """Someone who can write the store removes a record, rehashes, and re-signs with a key of their own."""
    calls(configure(), 3)
    run_cli("audit", "checkpoint", db=db_path, check=True)
    ok = run_cli("audit", "verify", db=db_path, check=True)
    mine = signing.load_or_create(db_path.parent / signing.KEY_FILE).id
    assert f"trusting checkpoints of the signing key {mine}" in ok.stdout
    with sqlite3.connect(db_path) as conn:  # drop the checkpoint and record 3, rehash the rest
        conn.execute("DELETE FROM events WHERE kind LIKE 'checkpoint.%' OR seq = 3")
        conn.execute("DELETE FROM checkpoints")
        prev = "0" * 64
        for seq, body in conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall():
            h = hashlib.sha256((prev + body).encode()).hexdigest()
            conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, seq))
            prev = h
    forger = tmp_path / "forger.pem"
    made = run_cli("audit", "checkpoint", "--key", str(forger), db=db_path, check=True)
    forger_id = signing.load_or_create(forger).id
    assert forger_id in made.stdout
    forged = run_cli("audit", "verify", db=db_path)
    assert forged.returncode == 1 and "Traceback" not in forged.stderr
    assert f"signed by key {forger_id}, which is not trusted" in forged.stderr and mine in forged.stderr
    # With the forger's key file named, or no key file at all, it agrees with itself — and says only that
    assert run_cli("audit", "verify", "--key", str(forger), db=db_path).returncode == 0
    (db_path.parent / signing.KEY_FILE).rename(tmp_path / "moved.pem")
    alone = run_cli("audit", "verify", db=db_path)
    assert alone.returncode == 0 and "only shown to be self-consistent" in alone.stdout
    (tmp_path / "junk.pem").write_text("junk")
    junk = run_cli("audit", "verify", "--key", str(tmp_path / "junk.pem"), db=db_path)
    assert junk.returncode == 2 and "--key" in junk.stderr and "not an Ed25519" in junk.stderr


def decided_receipt(gov: Governor, note: str) -> dict[str, object]:
    ticket = gov.begin("issue_refund", {"order_id": "A-1", "amount": 900}, "s1")
    assert ticket.approval_id and ticket.waiter
    ticket.waiter.close()
    decisions.decide(gov.db, ticket.approval_id, by=LEAD, approve=True, note=note)
    key = signing.load_or_create(Path(gov.db.url.split("///")[-1]).parent / signing.KEY_FILE)
    db = Database(gov.db.url)
    try:
        return receipts.build(db, ticket.approval_id, key, now_us=1)
    finally:
        db.close()


def test_verify_receipt_and_the_readme_snippet_check_a_real_receipt(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    receipt = decided_receipt(configure(), 'ok \x00 \u202e gnp.exe \U0001f600 "q" \\ \n done')
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    pem = public_pem(db_path, tmp_path / "clearance-public-key.pem")
    ok = run_cli("audit", "verify-receipt", str(tmp_path / "receipt.json"), "--public-key", str(pem), check=True)
    assert ok.stdout.startswith("ok: approval apr_") and "approved by user:lena" in ok.stdout

    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", PAGE, flags=re.S) if "load_pem_public_key" in b]
    assert len(snippet.strip().splitlines()) <= 20
    ran = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.startswith("verified: apr_"), ran.stderr

    tampered = json.loads(json.dumps(receipt))
    tampered["payload"]["decision"] = "denied"
    (tmp_path / "receipt.json").write_text(json.dumps(tampered))
    ran = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode != 0 and "InvalidSignature" in ran.stderr
    bad = run_cli("audit", "verify-receipt", str(tmp_path / "receipt.json"), "--public-key", str(pem))
    assert bad.returncode == 1 and "NOT VERIFIED" in bad.stderr
    (tmp_path / "junk.json").write_text("{")
    junk = run_cli("audit", "verify-receipt", str(tmp_path / "junk.json"), "--public-key", str(pem))
    assert junk.returncode == 1 and "cannot read the receipt" in junk.stderr


def test_options_that_would_be_ignored_are_refused(db_path: Path, tmp_path: Path) -> None:
    from clearance import _signing as signing

    pem = tmp_path / "pub.pem"
    pem.write_text(signing.load_or_create(tmp_path / "key.pem").public_pem)
    for extra in (("--head", "a" * 64), ("--public-key", str(pem))):
        out = run_cli("audit", "verify", "--server", "http://127.0.0.1:9", *extra, db=db_path)
        assert out.returncode == 2 and "not --server" in out.stderr
    out = run_cli("audit", "verify", "--archive", str(tmp_path), "--head", "a" * 64, db=db_path)
    assert out.returncode == 2 and "not --archive" in out.stderr
    out = run_cli("audit", "verify", "--server", "http://127.0.0.1:9", "--key", str(tmp_path / "key.pem"))
    assert out.returncode == 2 and "--key is not for --server" in out.stderr
    out = run_cli("audit", "verify", "--public-key", str(pem), "--key", str(tmp_path / "key.pem"), db=db_path)
    assert out.returncode == 2 and "give one of them" in out.stderr
    out = run_cli("audit", "verify", "--api-key", "k", db=db_path)
    assert out.returncode == 2 and "--api-key is for --server" in out.stderr
    out = run_cli("audit", "verify", db=db_path, env={"CLEARANCE_API_KEY": "k"})  # an agent's environment: fine
    assert "--api-key" not in out.stderr and "no audit database" in out.stderr
    # From the environment, CLEARANCE_SIGNING_KEY is the server's setting too: not an option given here
    env = {"CLEARANCE_SIGNING_KEY": str(tmp_path / "key.pem")}
    out = run_cli("audit", "verify", "--server", "http://127.0.0.1:9", "--api-key", "k", env=env)
    assert out.returncode == 1 and "cannot reach" in out.stderr


def test_a_chain_stripped_of_every_checkpoint_and_rehashed_is_flagged(
    configure: Callable[..., Governor], db_path: Path, tmp_path: Path
) -> None:
    """Every checkpoint removed (records and rows) and the chain rehashed agrees with itself: with
    the key file it is not a failure (a new store's key may not have signed yet), but verify says
    nothing is signed, and `--public-key` fails it."""
    from ..store.test_seals import rewrite

    calls(configure(), 4)
    run_cli("audit", "checkpoint", db=db_path, check=True)
    db = Database(str(db_path))
    try:
        with db.write() as cur:
            cur.execute("DELETE FROM events WHERE kind LIKE 'checkpoint.%'")
            cur.execute("DELETE FROM checkpoints")
        rewrite(db, 2, "forged")  # a record changed, every hash recomputed
    finally:
        db.close()
    remembered = run_cli("audit", "verify", db=db_path)  # `audit checkpoint` remembers what it signed
    assert remembered.returncode == 1 and "the newest checkpoint the signer remembers signing" in remembered.stderr
    assert "clearance audit checkpoint --forget" in remembered.stderr
    (db_path.parent / "signing-key.pem.last").unlink()  # without that memory: only the warning
    looked = run_cli("audit", "verify", db=db_path)
    assert looked.returncode == 0 and "; no signed checkpoint" in looked.stdout
    assert "WARNING: no checkpoint is in the chain: nothing here is signed" in looked.stderr
    strict = run_cli("audit", "verify", "--public-key", str(public_pem(db_path, tmp_path / "pub.pem")), db=db_path)
    assert strict.returncode == 1 and "no checkpoint signed by the keys given" in strict.stderr
    fresh = tmp_path / "fresh" / "c.db"  # no key file: nothing to warn about signing
    fresh.parent.mkdir()
    Database(str(fresh)).close()
    assert "WARNING" not in run_cli("audit", "verify", db=fresh, check=True).stderr
