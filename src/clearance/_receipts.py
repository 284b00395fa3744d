"""Signed approval receipts: proof, for someone outside, of who decided what about which call.

A receipt is `{"payload": {...}, "signature": "<base64>", "alg": "Ed25519"}`. The payload names
the approval, the tool, the arguments' `args_hash` (RFC 8785, and the edited arguments' when an
approver changed them), who decided, the decision, the note, when, the decision's own record
in the audit chain (position and hash) and a signed checkpoint covering that record. The
signature is the server's key's over the payload's canonical JSON (`_signing`).

The server signs only what the chain proves: the checkpoint cited is one its key signed (a row
in the table is not proof of that), the records from the call's request to it verify and end
in the hash it signs, and what the receipt names — the call, who decided, the arguments'
hash — is what those records hold. Someone who can write the database can make a receipt
refused, never signed over what they wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _signing as signing
from ._canonical import ARGS_HASH_ALG
from ._seal_memory import signed_by
from ._signing import SigningKey
from ._store import Database
from ._store import _approvals as approvals
from ._store import _archives as archives
from ._store import _events as events
from ._store import _seals as seals
from ._store._kinds import Kind

RECEIPT_TYPE = "clearance.approval_receipt"
_DECIDED: Kind = "approval.decided"
_HELD: Kind = "tool_call.decided"  # the call held for this approval, with its arguments' hash
_NAMED = ("approval_id", "call_id", "tool", "agent", "environment", "session")  # in the decision's record


class NotDecided(LookupError):
    """The approval has no decision to give a receipt for (yet)."""


class Unproven(Exception):
    """The audit chain does not prove what the receipt would say: the store was changed."""


def _text(value: Any) -> str | None:
    """Text that UTF-8 holds: a lone surrogate (never stored as such, but never trusted) escaped."""
    if value is None:
        return None
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def build(
    db: Database,
    approval_id: str,
    key: SigningKey,
    *,
    now_us: int,
    sign: Callable[[], seals.Checkpoint | None] | None = None,
) -> dict[str, Any]:
    """The signed receipt of an approval's decision; signs a checkpoint first when none covers it.

    `sign` signs that checkpoint (the server's: never a chain that lost the newest checkpoint it
    knows, `server._sealer.sign_now`); default `_seals.sign` with `key`.

    Raises:
        ApprovalNotFound: No approval has this id.
        NotDecided: It has not been decided by anyone (pending, or expired).
    """
    a = approvals.get(db, approval_id)
    found = [
        e
        for e in events.query(db, events.EventFilter(call_id=a.call_id, kind=_DECIDED))
        if e.body.get("approval_id") == a.id
    ]
    if not found:
        if a.decided_at_us is not None and archives.start(db)[0]:
            raise NotDecided(
                f"approval {approval_id!r} was decided ({a.status}), but its decision's record is archived:"
                " its receipt can no longer be signed from this store"
            )
        raise NotDecided(f"approval {approval_id!r} has not been decided ({a.status})")
    record = found[-1]
    b = record.body
    held = [
        e
        for e in events.query(db, events.EventFilter(call_id=a.call_id, kind=_HELD))
        if e.body.get("approval_id") == a.id
    ]
    chained = {f: b.get(f) for f in _NAMED} | ({"args_hash": held[0].body.get("args_hash")} if held else {})
    stored: dict[str, str | None] = {"approval_id": a.id, "call_id": a.call_id, "tool": a.tool, "agent": a.agent}
    stored |= {"environment": a.environment, "session": a.session, "args_hash": a.args_hash}
    differs = [f for f, value in chained.items() if value != stored[f]]
    if differs:
        raise Unproven(f"the approval's {', '.join(differs)} differ from what its records in the audit chain hold")
    # What is named comes from these records (a remote agent's held call may arrive after the decision)
    seqs = [record.seq, *(e.seq for e in held[:1])]
    first, last = min(seqs), max(seqs)
    checkpoint = _covering(db, key, last, sign or (lambda: seals.sign(db, key, now_us=now_us)))
    problem, last_hash = events.verify_span(db, first, checkpoint.seq)
    if problem is None and last_hash != checkpoint.hash:
        problem = f"record {checkpoint.seq} does not have the hash the checkpoint signs"
    if problem is not None:
        raise Unproven(
            f"the audit chain from the decision's records to checkpoint {checkpoint.seq} does not verify: {problem}"
        )
    payload: dict[str, Any] = {
        "v": 1,
        "type": RECEIPT_TYPE,
        "approval_id": _text(a.id),
        "call_id": _text(a.call_id),
        "tool": _text(a.tool),
        "agent": _text(a.agent),
        "environment": _text(a.environment),
        "session": _text(a.session),
        "args_hash": _text(a.args_hash),
        "edited_args_hash": _text(b.get("edited_args_hash")),
        "args_hash_alg": ARGS_HASH_ALG,
        "approver": _text(b.get("by")),
        "decision": _text(b.get("decision")),
        "note": _text(b.get("note")),
        "decided_at_us": _int(b.get("at_us")),
        "record": {"seq": record.seq, "hash": record.hash},
        "checkpoint": {"seq": checkpoint.seq, "hash": checkpoint.hash},
        "issued_at_us": now_us,
        "key_id": key.id,
    }
    return {"payload": payload, "signature": key.sign(payload), "alg": "Ed25519"}


def _covering(db: Database, key: SigningKey, seq: int, sign: Callable[[], seals.Checkpoint | None]) -> seals.Checkpoint:
    """The oldest checkpoint `key` signed over position `seq` or later; one signed now when none is.

    Raises:
        Unproven: The one signed now (or the newest, when nothing was recorded since) is not `key`'s.
    """
    found = next((cp for cp in seals.covering(db, seq) if signed_by(key, cp)), None)
    if found is None:
        found = sign() or seals.latest(db)
        if found is None or found.seq < seq or not signed_by(key, found):
            raise Unproven("no checkpoint of this server's key covers the decision's record")
    return found


def problem(receipt: Any, public: dict[str, Any]) -> str | None:
    """Why `receipt` does not verify with one of the public keys `public` (key id → key), or None."""
    if not isinstance(receipt, dict) or not isinstance(receipt.get("payload"), dict):
        return "it is not a receipt: a JSON object with a payload and a signature"
    payload = receipt["payload"]
    if payload.get("type") != RECEIPT_TYPE:
        return f"its payload's type is not {RECEIPT_TYPE!r}"
    key = public.get(str(payload.get("key_id")))
    if key is None:
        return f"it is signed by key {str(payload.get('key_id'))[:60]!r}, which is not one of the public keys given"
    if not signing.verify(key, payload, receipt.get("signature")):
        return "its signature does not verify: the receipt was changed, or not signed by this key"
    return None
