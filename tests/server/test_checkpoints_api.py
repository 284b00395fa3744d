"""Signed checkpoints and approval receipts over HTTP, on both stores."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance import _decisions as decisions
from clearance import _integrity as integrity
from clearance import _receipts as receipts
from clearance import _signing as signing
from clearance._canonical import canonical_json
from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store import _events as events
from clearance._store import _seals as seals
from clearance.server import ServerSettings, create_app

from .._wait import until
from .conftest import post_raw

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 30m}}
"""
LEAD = decisions.Decider("user:lena", frozenset({"approver"}))


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@contextlib.contextmanager
def _client(server_db: str, **settings: Any) -> Iterator[TestClient]:
    app = create_app(ServerSettings(database_url=server_db, max_body_bytes=2_000_000, **settings))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def client(server_db: str) -> Iterator[TestClient]:
    with _client(server_db) as c:
        yield c


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    found = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
        "agent": {"X-API-Key": make_key("agent", agent="refunds")},
    }
    rev = client.post("/v1/policies", headers=found["admin"], json={"text": POLICY}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=found["admin"], json={}).status_code == 200
    return found


def pending(client: TestClient, keys: dict[str, dict[str, str]], amount: int = 900) -> str:
    r = client.post("/v1/check", headers=keys["agent"], json={"tool": "issue_refund", "args": {"amount": amount}})
    return str(r.json()["approval_id"])


def public_keys(client: TestClient, keys: dict[str, dict[str, str]]) -> dict[str, Any]:
    found = client.get("/v1/checkpoints/keys", headers=keys["approver"]).json()
    return integrity.trusted_keys([k["public_key"].encode() for k in found])


def test_receipts_of_approved_edited_and_denied_calls_verify_and_tampering_shows(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str
) -> None:
    approved, edited, denied = pending(client, keys), pending(client, keys, 700), pending(client, keys, 800)
    assert client.post(f"/v1/approvals/{approved}/approve", headers=keys["approver"], json={"note": "ok"}).is_success
    r = client.post(f"/v1/approvals/{edited}/approve", headers=keys["approver"], json={"args": {"amount": 250}})
    assert r.is_success, r.text
    assert client.post(f"/v1/approvals/{denied}/deny", headers=keys["approver"], json={"note": "no"}).is_success
    trusted = public_keys(client, keys)
    got = {}
    for apr in (approved, edited, denied):
        r = client.get(f"/v1/approvals/{apr}/receipt", headers=keys["admin"])
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        got[apr] = r.json()
        assert receipts.problem(got[apr], trusted) is None
    a, e, d = (got[x]["payload"] for x in (approved, edited, denied))
    listed = client.get(f"/v1/approvals/{approved}", headers=keys["admin"]).json()
    assert (a["decision"], a["note"], a["tool"], a["args_hash"]) == (
        "approved",
        "ok",
        "issue_refund",
        listed["args_hash"],
    )
    assert a["approver"].startswith("key:") and a["edited_args_hash"] is None
    assert e["edited_args_hash"] and e["edited_args_hash"] != e["args_hash"]
    assert (d["decision"], d["note"]) == ("denied", "no")
    # the receipt names the decision's record, and a signed checkpoint that covers it
    db = Database(server_db)
    try:
        record = events.locate(db, d["record"]["seq"])
        assert record is not None and record.event.hash == d["record"]["hash"]
        assert record.event.body["approval_id"] == denied
        assert d["checkpoint"]["seq"] >= d["record"]["seq"]
        assert integrity.verify_store(db, trusted=trusted).ok
    finally:
        db.close()

    for field, value in [("decision", "approved"), ("note", "ok."), ("args_hash", "0" * 64), ("approver", "user:x")]:
        tampered = copy.deepcopy(got[denied])
        tampered["payload"][field] = value
        assert "does not verify" in (receipts.problem(tampered, trusted) or "")
    other = signing.load_or_create("other.pem")
    assert "not one of the public keys" in (receipts.problem(got[denied], {other.id: other.private.public_key()}) or "")
    assert receipts.problem({"payload": []}, trusted) is not None


def test_agent_keys_read_no_checkpoints_nor_receipts(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    apr = pending(client, keys)
    assert client.post(f"/v1/approvals/{apr}/approve", headers=keys["approver"], json={}).is_success
    assert client.get(f"/v1/approvals/{apr}/receipt", headers=keys["approver"]).status_code == 200
    for path in ("/v1/checkpoints", "/v1/checkpoints/keys", f"/v1/approvals/{apr}/receipt"):
        r = client.get(path, headers=keys["agent"])
        assert r.status_code == 403, (path, r.text)
        assert client.get(path).status_code == 401


def test_receipts_of_no_decision_are_refused_plainly(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    apr = pending(client, keys)
    r = client.get(f"/v1/approvals/{apr}/receipt", headers=keys["admin"])
    assert r.status_code == 409 and "has not been decided" in r.json()["error"]["message"]
    for bad in ("apr_nope", "apr_\u202e", "x" * 300, "%00", "\U0001f600"):
        assert client.get(f"/v1/approvals/{bad}/receipt", headers=keys["admin"]).status_code in (404, 422)


@pytest.mark.parametrize(
    "note",
    ["NUL \x00 here", "right-to-left \u202eoverride", "lone \ud800 surrogate", "long " + "n" * 1_000_000],
    ids=["nul", "rtl", "surrogate", "1mb"],
)
def test_hostile_notes_never_break_a_receipt(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str, note: str
) -> None:
    over_http, stored = pending(client, keys), pending(client, keys, 650)
    r = post_raw(client, f"/v1/approvals/{over_http}/deny", {"note": note}, keys["approver"])
    assert r.status_code < 500
    receipt = client.get(f"/v1/approvals/{over_http}/receipt", headers=keys["admin"])
    assert receipt.status_code == (200 if r.is_success else 409), receipt.text
    db = Database(server_db)  # a note that came another way (the CLI, the SDK) as the store holds it
    try:
        try:
            decisions.decide(db, stored, approve=False, by=LEAD, note=note)
        except Exception:  # the store refuses it where it comes in (a lone surrogate; a NUL on PostgreSQL)
            return
    finally:
        db.close()
    receipt = client.get(f"/v1/approvals/{stored}/receipt", headers=keys["admin"])
    assert receipt.status_code == 200, receipt.text
    assert receipts.problem(receipt.json(), public_keys(client, keys)) is None
    assert receipt.json()["payload"]["note"].startswith(note[:4])


def test_checkpoints_are_paged_newest_first_and_verify(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str
) -> None:
    key = client.app.state.signing_key  # type: ignore[attr-defined]
    db = Database(server_db)
    try:
        made = []
        for n in range(3):
            pending(client, keys, 300 + n)
            made.append(seals.sign(db, key, now_us=n + 1))
    finally:
        db.close()
    first = client.get("/v1/checkpoints", headers=keys["approver"], params={"limit": 2}).json()
    assert [c["seq"] for c in first["checkpoints"]] == [m.seq for m in reversed(made[1:])]  # type: ignore[union-attr]
    rest = client.get("/v1/checkpoints", headers=keys["admin"], params={"before": first["next_cursor"]}).json()
    assert [c["seq"] for c in rest["checkpoints"]] == [made[0].seq] and rest["next_cursor"] is None  # type: ignore[union-attr]
    trusted = public_keys(client, keys)
    for c in first["checkpoints"] + rest["checkpoints"]:
        assert signing.verify(trusted[c["key_id"]], c["signed"], c["signature"])
    verified = client.get("/v1/audit/verify", headers=keys["admin"]).json()
    assert verified["ok"] and verified["checkpoints"] == 3
    for bad in ({"limit": 0}, {"limit": 10**6}, {"before": -1}, {"before": "NaN"}, {"before": 2**70}):
        assert client.get("/v1/checkpoints", headers=keys["admin"], params=bad).status_code == 422


def test_the_server_verify_trusts_its_own_key_not_one_the_chain_introduces(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str, tmp_path: Any
) -> None:
    """A rewrite re-signed with a key the chain introduces itself agrees with itself; the server says whose it is."""
    own = client.app.state.signing_key  # type: ignore[attr-defined]
    forger = signing.load_or_create(tmp_path / "forger.pem")
    db = Database(server_db)
    try:
        pending(client, keys, 300)
        assert seals.sign(db, own, now_us=1) is not None
        pending(client, keys, 301)
        assert client.get("/v1/audit/verify", headers=keys["admin"]).json()["ok"]
        assert seals.sign(db, forger, now_us=2) is not None  # a checkpoint by a key of someone else's
        assert integrity.verify_store(db).ok  # the chain itself introduces the forger's key
    finally:
        db.close()
    verified = client.get("/v1/audit/verify", headers=keys["admin"]).json()
    assert not verified["ok"] and f"signed by key {forger.id}, which is not trusted" in verified["problem"]
    assert own.id in verified["problem"]


def test_the_server_signs_every_n_records(server_db: str, make_key: Any) -> None:
    with _client(server_db, checkpoint_every=5, checkpoint_interval=86_400) as c:
        admin = {"X-API-Key": make_key("admin", agent=None)}
        agent = {"X-API-Key": make_key("agent", agent="refunds")}
        rev = c.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
        assert c.post(f"/v1/policies/{rev}/activate", headers=admin, json={}).status_code == 200
        for n in range(6):
            r = c.post("/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": n}})
            assert r.status_code == 200, r.text
        until(lambda: c.get("/v1/checkpoints", headers=admin).json()["checkpoints"], "a checkpoint after 5 records")


def test_the_server_signs_after_the_interval_and_never_when_nothing_changed(
    clock: ManualClock, server_db: str, make_key: Any
) -> None:
    with _client(server_db, checkpoint_every=10**6, checkpoint_interval=60) as c:
        admin = {"X-API-Key": make_key("admin", agent=None)}
        c.post("/v1/check", headers={"X-API-Key": make_key("agent", agent="a")}, json={"tool": "t", "args": {}})
        clock.wait_parked("checkpoint signer")
        assert c.get("/v1/checkpoints", headers=admin).json()["checkpoints"] == []  # not yet 60 s
        clock.advance(61)
        until(lambda: c.get("/v1/checkpoints", headers=admin).json()["checkpoints"], "a checkpoint after 60 s")
        clock.wait_parked("checkpoint signer")
        clock.advance(61)  # nothing recorded since: no new checkpoint
        clock.wait_parked("checkpoint signer")
        assert len(c.get("/v1/checkpoints", headers=admin).json()["checkpoints"]) == 1


def test_the_server_will_not_sign_a_chain_rewritten_after_it_saw_a_checkpoint(
    clock: ManualClock, server_db: str, make_key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone with the database deletes the newest checkpoint (record and row) and rewrites a record
    after the one before it, rehashing the rest: the store alone still verifies, and the next
    checkpoint would sign the rewrite with the server's own key. The server saw the deleted one:
    it signs nothing, says why in its log, and counts it."""
    from ..store.test_seals import rewrite, truncate

    with _client(server_db, checkpoint_every=3, checkpoint_interval=86_400) as c:
        admin = {"X-API-Key": make_key("admin", agent=None)}
        agent = {"X-API-Key": make_key("agent", agent="refunds")}
        rev = c.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
        assert c.post(f"/v1/policies/{rev}/activate", headers=admin, json={}).status_code == 200

        def calls(n: int) -> None:
            for i in range(n):
                r = c.post("/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": i}})
                assert r.status_code == 200, r.text

        def signed() -> int:
            return len(c.get("/v1/checkpoints", headers=admin).json()["checkpoints"])

        def pass_after(n: int) -> None:
            calls(n)
            clock.wait_parked("checkpoint signer")
            clock.advance(3)

        pass_after(3)
        until(lambda: signed() == 1, "the first checkpoint")
        pass_after(3)
        until(lambda: signed() == 2, "the second checkpoint")
        db = Database(server_db)
        try:
            newest = seals.latest(db)
            older = seals.page(db, limit=2)[1]
            assert newest is not None
            truncate(db, newest.record_seq - 1)
            with db.write() as cur:
                cur.execute(db.sql("DELETE FROM checkpoints WHERE seq >= :s"), {"s": newest.seq})
            rewrite(db, older.record_seq + 1, "forged")
            assert integrity.verify_store(db).ok  # the store alone shows nothing
        finally:
            db.close()
        with caplog.at_level("ERROR", logger="clearance.server"):
            pass_after(4)
            clock.wait_parked("checkpoint signer")  # the pass ran and refused
            assert signed() == 1
            assert f"not signing a checkpoint: the checkpoint signing record {newest.seq}" in caplog.text
            assert c.app.state.metrics.checkpoints_refused._value.get() >= 1  # type: ignore[attr-defined]
            pass_after(1)
            clock.wait_parked("checkpoint signer")
            assert signed() == 1  # still refused; logged once
            assert caplog.text.count("not signing a checkpoint") == 1


def test_a_checkpoint_memory_that_will_not_do_is_refused_and_counted(
    clock: ManualClock, server_db: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest checkpoint kept beside the key file (`_seal_memory`) is unreadable: the server does
    not fall back on whatever the store holds; it refuses, says so once, and counts every refusal."""
    from ..store.test_seals import add

    key = tmp_path / "keys" / "signing-key.pem"
    key.parent.mkdir()
    (tmp_path / "keys" / "signing-key.pem.last").write_text("{")
    with (
        caplog.at_level("ERROR", logger="clearance.server"),
        _client(server_db, signing_key=str(key), checkpoint_every=1, checkpoint_interval=86_400) as c,
    ):
        db = Database(server_db)
        try:
            add(db, 2)
            for _ in range(2):
                clock.wait_parked("checkpoint signer")
                clock.advance(3)
            clock.wait_parked("checkpoint signer")
            assert seals.latest(db) is None
        finally:
            db.close()
        assert c.app.state.metrics.checkpoints_refused._value.get() >= 2  # type: ignore[attr-defined]
    assert f"not signing checkpoints: the checkpoint memory {key}.last is not a checkpoint" in caplog.text
    assert caplog.text.count("not signing a checkpoint:") == 1


def test_a_receipt_says_only_what_the_chain_proves(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str
) -> None:
    """Whoever writes the database gets a receipt refused, never signed over what they wrote: a decision's
    record changed without rehashing, or the approvals table saying other arguments than the chain."""
    decided = pending(client, keys)
    assert client.post(f"/v1/approvals/{decided}/approve", headers=keys["approver"], json={}).is_success
    first = client.get(f"/v1/approvals/{decided}/receipt", headers=keys["admin"])
    assert first.status_code == 200
    record = first.json()["payload"]["record"]["seq"]
    db = Database(server_db)
    try:
        with db.write() as cur:
            cur.execute(db.sql("SELECT body FROM events WHERE seq = :s"), {"s": record})
            body = cur.fetchone()[0]
            forged = canonical_json({**json.loads(body), "by": "user:mallory"})
            cur.execute(db.sql("UPDATE events SET body = :b WHERE seq = :s"), {"b": forged, "s": record})
        r = client.get(f"/v1/approvals/{decided}/receipt", headers=keys["admin"])
        assert r.status_code == 409
        assert f"record {record}: its content does not match its hash" in r.json()["error"]["message"]
        with db.write() as cur:
            cur.execute(db.sql("UPDATE events SET body = :b WHERE seq = :s"), {"b": body, "s": record})
            cur.execute(db.sql("UPDATE approvals SET args_hash = :h WHERE id = :id"), {"h": "f" * 64, "id": decided})
        r = client.get(f"/v1/approvals/{decided}/receipt", headers=keys["admin"])
        assert r.status_code == 409 and "args_hash differ from what its records" in r.json()["error"]["message"]
    finally:
        db.close()


def test_a_receipt_does_not_sign_a_chain_rewritten_after_the_checkpoint_the_server_knows(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A receipt signs a checkpoint covering its decision when none does: through the signer's check, so
    deleting the newest checkpoint, rewriting and asking for a receipt does not get the rewrite signed."""
    from ..store.test_seals import rewrite, truncate

    first = pending(client, keys)
    assert client.post(f"/v1/approvals/{first}/approve", headers=keys["approver"], json={}).is_success
    assert client.get(f"/v1/approvals/{first}/receipt", headers=keys["admin"]).status_code == 200  # signs one
    db = Database(server_db)
    try:
        signed = seals.latest(db)
        assert signed is not None and client.app.state.sealed == signed  # type: ignore[attr-defined]
        truncate(db, signed.record_seq - 1)  # the checkpoint deleted (record and row), a record before it changed
        with db.write() as cur:
            cur.execute("DELETE FROM checkpoints")
        rewrite(db, signed.seq - 1, "forged")
        second = pending(client, keys)
        assert client.post(f"/v1/approvals/{second}/approve", headers=keys["approver"], json={}).is_success
        with caplog.at_level("ERROR", logger="clearance.server"):
            r = client.get(f"/v1/approvals/{second}/receipt", headers=keys["admin"])
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        message = r.json()["error"]["message"]
        assert "no receipt: a checkpoint covering the decision would sign an audit chain that lost" in message
        assert "signing-key" not in message and "--forget" not in message  # the server's paths stay in its log
        assert f"the checkpoint signing record {signed.seq}" in caplog.text
        assert seals.latest(db) is None  # nothing signed
        assert client.app.state.metrics.checkpoints_refused._value.get() >= 1  # type: ignore[attr-defined]
        verified = client.get("/v1/audit/verify", headers=keys["admin"]).json()  # the store alone agrees with itself
        assert not verified["ok"] and verified["problem"].startswith(integrity.REMEMBERED)
        head = events.verify(db).head_seq
        with db.write() as cur:  # a checkpoint row of their own making, covering the decision
            cur.execute(
                db.sql(
                    "INSERT INTO checkpoints (seq, hash, at_us, key_id, signature, record_seq)"
                    " VALUES (:s, :h, 1, :k, 'x', :r)"
                ),
                {"s": head, "h": events.verify(db).head_hash, "k": signed.key_id, "r": head + 1},
            )
        assert client.get(f"/v1/approvals/{second}/receipt", headers=keys["admin"]).status_code == 409
    finally:
        db.close()


def test_a_second_app_on_the_key_file_does_not_sign_what_the_first_would_refuse(
    clock: ManualClock, server_db: str, make_key: Any, tmp_path: Any
) -> None:
    """Workers (or replicas) share the store and the key file. One signed the newest checkpoint;
    it is deleted and a record after the older one rewritten: another, which read the key file's
    memory before that one was signed, must not sign the rewrite; its verify finds it."""
    from clearance.server import _sealer as sealer

    from ..store.test_seals import add, rewrite, truncate

    key = str(tmp_path / "keys" / "signing-key.pem")
    never = {"signing_key": key, "checkpoint_every": 10**6, "checkpoint_interval": 86_400}
    admin = {"X-API-Key": make_key("admin", agent=None)}
    with _client(server_db, **never) as one, _client(server_db, **never) as two:
        db = Database(server_db)
        try:
            add(db, 3)
            older = sealer.sign_now(one.app.state, 1)  # type: ignore[attr-defined]
            add(db, 3)
            newest = sealer.sign_now(one.app.state, 2)  # type: ignore[attr-defined]
            assert older is not None and newest is not None
            truncate(db, newest.record_seq - 1)
            with db.write() as cur:
                cur.execute(db.sql("DELETE FROM checkpoints WHERE seq >= :s"), {"s": newest.seq})
            rewrite(db, older.record_seq + 1, "forged")
            add(db, 3)
            with pytest.raises(sealer.Refused, match=f"the checkpoint signing record {newest.seq}"):
                sealer.sign_now(two.app.state, 3)  # type: ignore[attr-defined]
            assert seals.latest(db) == older
        finally:
            db.close()
        found = two.get("/v1/audit/verify", headers=admin).json()
        assert not found["ok"] and f"signing record {newest.seq}" in found["problem"]


def test_the_verify_route_is_not_ok_when_the_signers_memory_will_not_do(
    server_db: str, make_key: Any, tmp_path: Any
) -> None:
    key = tmp_path / "keys" / "signing-key.pem"
    key.parent.mkdir()
    (tmp_path / "keys" / "signing-key.pem.last").write_text("{")
    with _client(server_db, signing_key=str(key), checkpoint_every=10**6, checkpoint_interval=86_400) as c:
        r = c.get("/v1/audit/verify", headers={"X-API-Key": make_key("admin", agent=None)})
    assert r.status_code == 200
    found = r.json()
    assert not found["ok"] and found["broken_seq"] is None
    assert found["problem"].startswith(f"not verified against the signer's memory: the checkpoint memory {key}.last")
