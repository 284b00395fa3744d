"""Signed approval receipts: proof, for someone outside, of who decided what about which call.

A receipt is `{"payload": {...}, "signature": "<base64>", "alg": "Ed25519"}`. The payload names
the approval, the tool, the arguments' `args_hash` (RFC 8785, and the edited arguments' when an
approver changed them), who decided, the decision, the note, when, the decision's own record
in the audit chain (position and hash) and the newest signed checkpoint, which covers that
record. The signature is the server's key's over the payload's canonical JSON (`_signing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _signing as signing
from ._canonical import ARGS_HASH_ALG
from ._signing import SigningKey
from ._store import Database
from ._store import _approvals as approvals
from ._store import _archives as archives
from ._store import _events as events
from ._store import _seals as seals
from ._store._kinds import Kind

RECEIPT_TYPE = "clearance.approval_receipt"
_DECIDED: Kind = "approval.decided"


class NotDecided(LookupError):
    """The approval has no decision to give a receipt for (yet)."""


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
    checkpoint = seals.latest(db)
    if checkpoint is None or checkpoint.seq < record.seq:
        made = sign() if sign is not None else seals.sign(db, key, now_us=now_us)
        checkpoint = made or seals.latest(db)
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
        "checkpoint": {"seq": checkpoint.seq, "hash": checkpoint.hash} if checkpoint else None,
        "issued_at_us": now_us,
        "key_id": key.id,
    }
    return {"payload": payload, "signature": key.sign(payload), "alg": "Ed25519"}


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
