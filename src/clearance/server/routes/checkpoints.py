"""Signed checkpoints of the audit chain, the keys that signed them, and approval receipts.

Approvers and admins read them; an agent's key does not (403): a checkpoint covers every
agent's records, and a receipt is a person's decision.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Field

from ... import _receipts as receipts
from ..._clock import now_us
from ..._store import Database
from ..._store import _seals as seals
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire import Sent
from ...errors import ApprovalNotFound
from .. import _sealer as sealer
from .._auth import current_key, database
from .._errors import INT64_MAX, APIError

router = APIRouter(prefix="/v1", tags=["audit"])
Db = Annotated[Database, Depends(database)]


async def auditor(key: ApiKey = Depends(current_key)) -> ApiKey:  # noqa: B008
    """A caller who reads the whole log's integrity records: an approver or an admin.

    Raises:
        APIError: 403 for an agent's key.
    """
    if not {"approver", "admin"} & set(key.scopes):
        raise APIError(403, "checkpoints and receipts are read by approvers and admins, not agent keys")
    return key


Auditor = Annotated[ApiKey, Depends(auditor)]


class CheckpointOut(Sent):
    """A signed checkpoint: the chain head it signs, and the signature."""

    seq: int = Field(description="The chain position it signs")
    hash: str = Field(description="That record's chain hash")
    at_us: int = Field(description="When it was signed (µs since the epoch, UTC)")
    key_id: str = Field(description="The key that signed it (`ed25519:…`; `GET /v1/checkpoints/keys`)")
    signature: str = Field(description="Base64 Ed25519 signature of `signed`'s RFC 8785 canonical JSON")
    record_seq: int = Field(description="Where its own `checkpoint.signed` record sits in the chain")
    signed: dict[str, Any] = Field(description="The payload the signature covers")


class CheckpointPage(Sent):
    """Checkpoints, newest first."""

    checkpoints: list[CheckpointOut]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page; None: no more")


class SigningKeyOut(Sent):
    """A key introduced in the chain (`checkpoint.key_introduced`)."""

    key_id: str
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo)")


def _out(c: seals.Checkpoint) -> CheckpointOut:
    return CheckpointOut(**c.__dict__, signed=c.payload())


@router.get("/checkpoints", summary="Signed checkpoints of the audit chain, newest first (approver, admin)")
async def list_checkpoints(
    _: Auditor,
    db: Db,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="Only those signing positions below")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    """Each checkpoint the server signed.

    Keep the newest (or its hash) elsewhere: `clearance audit verify --head` finds records
    deleted or rewritten since.
    """
    found = await run_in_threadpool(lambda: seals.page(db, before=before, limit=limit + 1))
    more = len(found) > limit
    found = found[:limit]
    return CheckpointPage(checkpoints=[_out(c) for c in found], next_cursor=found[-1].seq if more else None)


@router.get("/checkpoints/keys", summary="The public keys that signed checkpoints (approver, admin)")
async def checkpoint_keys(_: Auditor, request: Request, db: Db) -> list[SigningKeyOut]:
    """Every key the chain introduces, and the server's current one (first), as PEM."""
    current = request.app.state.signing_key
    found = await run_in_threadpool(seals.keys, db)
    found.pop(current.id, None)
    return [SigningKeyOut(key_id=current.id, public_key=current.public_pem)] + [
        SigningKeyOut(key_id=k, public_key=v) for k, v in found.items()
    ]


@router.get(
    "/approvals/{approval_id}/receipt",
    summary="The signed receipt of an approval's decision (approver, admin)",
    response_class=JSONResponse,
)
async def receipt(approval_id: Annotated[Text, Path(max_length=200)], _: Auditor, request: Request, db: Db) -> Any:
    """Who decided what about which call, signed with the server's key, as a download.

    Check it with `clearance audit verify-receipt FILE --public-key KEY` or the README's snippet.
    """
    state, at = request.app.state, now_us()
    try:
        made = await run_in_threadpool(
            receipts.build, db, approval_id, state.signing_key, now_us=at, sign=lambda: sealer.sign_now(state, at)
        )
    except ApprovalNotFound:
        raise APIError(404, f"no approval has the id {approval_id!r}") from None
    except receipts.NotDecided as exc:
        raise APIError(409, str(exc)) from None
    except sealer.Refused:  # the checkpoint a receipt needs would sign a rewritten chain (the log says why)
        raise APIError(
            409,
            "no receipt: a checkpoint covering the decision would sign an audit chain that lost a checkpoint this"
            " server signed (the server's log says more; an administrator runs clearance audit verify)",
        ) from None
    except receipts.Unproven as exc:
        raise APIError(409, f"no receipt: {exc}") from None
    safe_id = "".join(ch for ch in approval_id if ch.isascii() and (ch.isalnum() or ch in "_-"))[:80]
    return JSONResponse(
        made, headers={"Content-Disposition": f'attachment; filename="receipt-{safe_id or "approval"}.json"'}
    )
