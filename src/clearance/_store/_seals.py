"""Signed checkpoints of the audit chain: the server's signature over the chain head.

A checkpoint signs `{"v", "type": "clearance.checkpoint", "seq", "hash", "at_us", "key_id"}`
(see `_signing`) for the record at `seq`. It is written in the same transaction as a record of
its own, `checkpoint.signed`, appended right after the head it signs, so every event sink (a
JSON-lines file, a SIEM) receives a copy the database's owner cannot take back, and every
export carries it. The `checkpoints` table indexes them for reading. The first checkpoint a
key signs follows a `checkpoint.key_introduced` record carrying that key's public half: the
log itself says which key signed what, and when the key changed. A key whose introduction was
archived is introduced again (its `previous_key_id` is then itself) before it signs next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .. import _signing as signing
from .._signing import SigningKey
from ..errors import ChainBroken
from ._db import Database
from ._events import GENESIS, append, chain_start, make_event

CHECKPOINT_TYPE = "clearance.checkpoint"
_COLS = "seq, hash, at_us, key_id, signature, record_seq"
_HEAD = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
_LATEST = f"SELECT {_COLS} FROM checkpoints ORDER BY seq DESC LIMIT 1"
_SYSTEM = {"agent": "*", "environment": "*", "session": None}


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint.

    Attributes:
        seq: The chain position it signs.
        hash: The chain hash of that record.
        at_us: When it was signed.
        key_id: The key that signed it (`ed25519:…`).
        signature: The base64 Ed25519 signature of `payload()`'s canonical JSON.
        record_seq: Where its own `checkpoint.signed` record sits in the chain (`seq + 1`).
    """

    seq: int
    hash: str
    at_us: int
    key_id: str
    signature: str
    record_seq: int

    def payload(self) -> dict[str, Any]:
        """What the signature covers."""
        return payload(self.seq, self.hash, self.at_us, self.key_id)


def payload(seq: int, hash_: str, at_us: int, key_id: str) -> dict[str, Any]:
    """The signed payload of a checkpoint."""
    return {"v": 1, "type": CHECKPOINT_TYPE, "seq": seq, "hash": hash_, "at_us": at_us, "key_id": key_id}


def from_body(body: Mapping[str, Any], record_seq: int) -> Checkpoint | None:
    """The checkpoint a `checkpoint.signed` record carries (None when its fields are not all there)."""
    try:
        return Checkpoint(
            int(body["signed_seq"]),
            str(body["signed_hash"]),
            int(body["at_us"]),
            str(body["key_id"]),
            str(body["signature"]),
            record_seq,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _row(r: Any) -> Checkpoint:
    return Checkpoint(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), int(r[5]))


def latest(db: Database) -> Checkpoint | None:
    """The newest checkpoint, or None."""
    with db.read() as cur:
        cur.execute(_LATEST)
        r = cur.fetchone()
    return _row(r) if r else None


def newest_within(db: Database, first_seq: int, last_seq: int) -> Checkpoint | None:
    """The newest checkpoint signing a position from `first_seq` to `last_seq` (an archive segment's)."""
    with db.read() as cur:
        cur.execute(
            db.sql(f"SELECT {_COLS} FROM checkpoints WHERE seq >= :first AND seq <= :last ORDER BY seq DESC LIMIT 1"),
            {"first": first_seq, "last": last_seq},
        )
        r = cur.fetchone()
    return _row(r) if r else None


def covering(db: Database, seq: int, *, limit: int = 100) -> list[Checkpoint]:
    """Checkpoints signing position `seq` or a later one, oldest first (rows: not proof of a signature)."""
    with db.read() as cur:
        sql = f"SELECT {_COLS} FROM checkpoints WHERE seq >= :seq ORDER BY seq LIMIT :n"
        cur.execute(db.sql(sql), {"seq": seq, "n": limit})
        return [_row(r) for r in cur.fetchall()]


def pending(db: Database) -> tuple[int, Checkpoint | None]:
    """How many records came after the newest checkpoint's own record, and that checkpoint (a read)."""
    with db.read() as cur:
        cur.execute(_LATEST)
        r = cur.fetchone()
        cur.execute(_HEAD)
        head = cur.fetchone()
    last = _row(r) if r else None
    return (int(head[0]) if head else 0) - (last.record_seq if last else 0), last


def page(db: Database, *, before: int | None = None, limit: int = 100) -> list[Checkpoint]:
    """Checkpoints newest first, those signing positions below `before` when given."""
    where, params = ("WHERE seq < :before ", {"before": before}) if before is not None else ("", {})
    with db.read() as cur:
        sql = f"SELECT {_COLS} FROM checkpoints {where}ORDER BY seq DESC LIMIT :n"
        cur.execute(db.sql(sql), {**params, "n": limit})
        return [_row(r) for r in cur.fetchall()]


def sign(
    db: Database, key: SigningKey, *, now_us: int, every: int | None = None, known: Checkpoint | None = None
) -> Checkpoint | None:
    """Sign the chain head now, unless nothing but the last checkpoint was recorded since it.

    With `every`, only when at least that many records came after the last checkpoint
    (replicas on one store each ask; the store's write lock lets one sign). A key that has
    not signed here before is introduced first, by a record carrying its public half.
    `known` is a checkpoint the signer saw earlier (the server keeps the newest): the chain
    must still hold it, else signing now would put a valid signature on a chain someone
    rewrote after deleting the checkpoints that show it.

    Returns:
        The new checkpoint, or None when none was due.

    Raises:
        ChainBroken: The chain no longer holds `known` (nothing is signed).
    """
    with db.write() as cur:
        cur.execute(_LATEST)
        r = cur.fetchone()
        last = _row(r) if r else None
        if known is not None:
            gone = _missing(db, cur, known, last, {key.id: key.private.public_key()})
            if gone is not None:
                raise ChainBroken(known.seq, gone)
        cur.execute(_HEAD)
        head = cur.fetchone()
        head_seq = int(head[0]) if head else 0
        since = head_seq - (last.record_seq if last else 0)
        if since <= 0 or (every is not None and since < every):
            return None
        # Introduced again when its introduction was archived: the chain in the database then
        # still says which key signs, for a verify without the key (`clearance audit archive`)
        if last is None or last.key_id != key.id or not _introduced_here(db, cur, key.id):
            introduced = {**_SYSTEM, "key_id": key.id, "public_key": key.public_pem}
            introduced["previous_key_id"] = last.key_id if last else None
            append(db, cur, [make_event("checkpoint.key_introduced", now_us, introduced)])
            cur.execute(_HEAD)
            head = cur.fetchone()
        seq, hash_ = (int(head[0]), str(head[1])) if head else (0, GENESIS)
        signature = key.sign(payload(seq, hash_, now_us, key.id))
        fields = {**_SYSTEM, "signed_seq": seq, "signed_hash": hash_, "key_id": key.id, "signature": signature}
        append(db, cur, [make_event("checkpoint.signed", now_us, fields)])
        cur.execute(_HEAD)
        record_seq = int(cur.fetchone()[0])
        made = Checkpoint(seq, hash_, now_us, key.id, signature, record_seq)
        cur.execute(
            db.sql(f"INSERT INTO checkpoints ({_COLS}) VALUES (:seq, :hash, :at_us, :key_id, :signature, :record_seq)"),
            made.__dict__,
        )
    return made


def _introduced_here(db: Database, cur: Any, key_id: str) -> bool:
    """Whether a `checkpoint.key_introduced` record of `key_id` is in the database (not archived)."""
    cur.execute("SELECT body FROM events WHERE kind = 'checkpoint.key_introduced'")  # ix_events_keys
    return any((data := _loaded(body)) is not None and data.get("key_id") == key_id for (body,) in cur.fetchall())


def keys(db: Database) -> dict[str, str]:
    """Every key introduced in the chain: key id → public key PEM (the later record wins)."""
    found: dict[str, str] = {}
    with db.read() as cur:
        cur.execute(db.sql("SELECT body FROM events WHERE kind = :k ORDER BY seq"), {"k": "checkpoint.key_introduced"})
        rows = cur.fetchall()
    for (body,) in rows:
        data = _loaded(body)
        if data is not None and isinstance(data.get("key_id"), str) and isinstance(data.get("public_key"), str):
            found[data["key_id"]] = data["public_key"]
    return found


def missing(db: Database, known: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """Why the chain no longer holds `known` as it was signed (None: it does, or it was archived).

    `keys`: public keys by id; archived is believed only when a newer checkpoint of `known`'s
    key, signed by it, is in the chain as it was signed (`_missing`).
    """
    with db.read() as cur:
        cur.execute(_LATEST)
        r = cur.fetchone()
        return _missing(db, cur, known, _row(r) if r else None, keys)


def _missing(
    db: Database, cur: Any, known: Checkpoint, last: Checkpoint | None, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """Why the chain in the database no longer holds `known` as it was signed (None: it does, or it was archived).

    Where the chain starts (the `archives` table) is the database's word, and whoever can
    write the database could move it past `known`, delete the records up to it and rewrite
    the rest. So `known` counts as archived only when the chain holds a newer checkpoint of its
    key, signed by it, as it was signed: the records up to that one cannot be changed without
    changing its hash. `clearance audit archive` keeps the newest checkpoint's records, so a
    chain archived in earnest always holds one.
    """
    signed = f"the checkpoint signing record {known.seq} (hash {known.hash[:16]}…, its own record {known.record_seq})"
    if last is None or last.seq < known.seq:
        return f"{signed} is gone from the checkpoints: they were deleted, and the records they sign may be rewritten"
    archived_to = chain_start(cur)[0]
    if known.seq <= archived_to:
        if _vouched_for(db, cur, known, archived_to, keys.get(known.key_id)):
            return None
        return (
            f"{signed} is archived by the database's account (its chain starts after record {archived_to}), but no"
            f" newer checkpoint of key {known.key_id} in the chain shows the records after it unchanged: the"
            " account may be forged and the records rewritten"
        )
    return _changed(db, cur, known, signed)


def _changed(db: Database, cur: Any, cp: Checkpoint, signed: str) -> str | None:
    """Why the chain's records at `cp`'s positions are not those it signed (None: they are)."""
    cur.execute(
        db.sql("SELECT seq, hash, kind, body FROM events WHERE seq IN (:signed, :own)"),
        {"signed": cp.seq, "own": cp.record_seq},
    )
    rows = {int(r[0]): r for r in cur.fetchall()}
    row = rows.get(cp.seq)
    if row is None or row[1] != cp.hash:
        return f"{signed}: the chain no longer has that hash at record {cp.seq}: records were rewritten"
    row = rows.get(cp.record_seq)
    body = _loaded(row[3]) if row is not None else None
    if row is None or row[2] != "checkpoint.signed" or body is None or body.get("signature") != cp.signature:
        return f"{signed}: its record {cp.record_seq} is gone or changed: records were rewritten"
    return None


def _vouched_for(db: Database, cur: Any, known: Checkpoint, after: int, public: Ed25519PublicKey | None) -> bool:
    """Whether a newer checkpoint signed by `public`, signing a record after `after`, is in the chain as signed."""
    if public is None:
        return False
    cur.execute(
        db.sql(f"SELECT {_COLS} FROM checkpoints WHERE key_id = :k AND seq > :after ORDER BY seq DESC LIMIT 16"),
        {"k": known.key_id, "after": max(after, known.seq)},
    )
    newer = [_row(r) for r in cur.fetchall()]  # a few: rows made up to slow this down are refused
    return any(signing.verify(public, cp.payload(), cp.signature) and _changed(db, cur, cp, "") is None for cp in newer)


def _loaded(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
