"""Slack's interactive requests: Approve / Deny buttons, and the modal for edits, notes and grants.

Authenticated by Slack's request signature (the app's signing secret, 5-minute window), not by
an API key. The clicking Slack user must be mapped to an enabled Clearance person
(`PATCH /v1/users/{username} {"slack_user_id": "U…"}`), who decides with their own roles;
everything else is refused, audited, and told only to them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ... import _decisions as decisions
from ..._grant_views import offers
from ..._granting import GrantRequest
from ..._store import Database
from ..._store import _approvals as approvals
from ..._store import _users as users
from ...errors import ApprovalEditRejected, ApprovalError, ApprovalNotFound, GrantRejected
from .. import _longpoll as longpoll
from .. import _tracing as tracing
from .._auth import database
from .._errors import APIError
from ..channels.slack import Slack, edits_of, grant_of, modal

router = APIRouter(prefix="/v1/slack", tags=["slack"])
Db = Annotated[Database, Depends(database)]
_ERROR_CHARS = 150  # of a message under a modal's field


def _slack(request: Request) -> Slack:
    slack = request.app.state.channels.get(Slack.name)
    if not isinstance(slack, Slack):
        raise APIError(404, "Slack is not configured on this server")
    return slack


def _who(db: Database, slack_user: str) -> decisions.Decider | None:
    person = users.by_identity(db, Slack.name, slack_user)
    if person is None:
        return None
    return decisions.Decider(f"user:{person.username}", frozenset(person.roles))


def _decide(
    request: Request,
    db: Database,
    approval_id: str,
    who: decisions.Decider,
    *,
    approve: bool,
    note: str | None = None,
    args: dict[str, Any] | None = None,
    grant: GrantRequest | None = None,
) -> None:
    """`decisions.decide` as `who`, traced as an approver's decision (`_tracing.deciding`)."""
    with tracing.deciding(request, approval_id, approve=approve, by=who.name) as traced:
        traced(decisions.decide(db, approval_id, approve=approve, by=who, note=note, args=args, grant=grant))


@router.post("/interactions", summary="Slack's interactive requests (signed by Slack)", response_model=None)
async def interactions(request: Request, db: Db) -> Response:
    """Verify Slack's signature, then act on a button click or a submitted modal."""
    slack = _slack(request)
    body = await request.body()
    if not slack.verify(body, request.headers):
        raise APIError(401, "the Slack signature is missing, stale or wrong")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        kind = payload["type"]
        slack_user = str(payload["user"]["id"])
    except (KeyError, IndexError, ValueError, TypeError, UnicodeDecodeError):
        raise APIError(422, "not a Slack interaction payload") from None
    if kind == "block_actions":
        return await _clicked(request, db, slack, payload, slack_user)
    if kind == "view_submission":
        return await _submitted(request, db, slack, payload, slack_user)
    return Response(status_code=200)


async def _clicked(request: Request, db: Database, slack: Slack, payload: dict[str, Any], slack_user: str) -> Response:
    try:
        action = payload["actions"][0]
        name, approval_id = str(action["action_id"]), str(action["value"])
    except (KeyError, IndexError, TypeError):
        raise APIError(422, "a Slack action without an action_id and value") from None
    channel = (payload.get("channel") or {}).get("id")
    who = _who(db, slack_user)
    if who is None:
        why = await _unmapped(db, approval_id, slack_user, approve=name != "deny")
        await run_in_threadpool(slack.tell, channel, slack_user, why)
        return Response(status_code=200)
    if name == "edit":
        try:
            approval = await run_in_threadpool(approvals.get, db, approval_id)
        except ApprovalNotFound:
            await run_in_threadpool(slack.tell, channel, slack_user, f"no approval has the id {approval_id}")
            return Response(status_code=200)
        limits, _ = await run_in_threadpool(offers, db, approval)
        trigger = payload.get("trigger_id")
        await run_in_threadpool(lambda: slack.client.views_open(trigger_id=trigger, view=modal(approval, limits)))
        return Response(status_code=200)
    if name not in ("approve", "deny"):
        return Response(status_code=200)
    try:
        await run_in_threadpool(_decide, request, db, approval_id, who, approve=name == "approve")
    except (ApprovalError, ApprovalNotFound) as exc:
        await run_in_threadpool(slack.tell, channel, slack_user, str(exc))
        return Response(status_code=200)
    longpoll.announce(request, "approvals")  # the message is redrawn with the outcome at once
    return Response(status_code=200)


async def _submitted(
    request: Request, db: Database, slack: Slack, payload: dict[str, Any], slack_user: str
) -> Response:
    try:
        view = payload["view"]
        approval_id = str(view["private_metadata"])
        values: dict[str, Any] = view["state"]["values"]
    except (KeyError, TypeError):
        raise APIError(422, "a Slack view without its approval and values") from None
    who = _who(db, slack_user)
    if who is None:
        return _errors({"decision": await _unmapped(db, approval_id, slack_user, approve=True)})
    selected = ((values.get("decision") or {}).get("value") or {}).get("selected_option") or {}
    approve = selected.get("value", "approve") != "deny"
    note = ((values.get("note") or {}).get("value") or {}).get("value") or None
    try:
        grant = grant_of(values)
    except ValueError as exc:
        return _errors({"grant": str(exc)[:_ERROR_CHARS]})
    try:
        approval = await run_in_threadpool(approvals.get, db, approval_id)
        args = edits_of(approval, values) if approve else None
        await run_in_threadpool(
            lambda: _decide(request, db, approval_id, who, approve=approve, note=note, args=args, grant=grant)
        )
    except ApprovalEditRejected as exc:
        errors: dict[str, str] = {}
        for problem in exc.problems:
            name = problem.split(":", 1)[0]
            errors[f"arg:{name}" if f"arg:{name}" in values else "decision"] = problem[:150]
        return _errors(errors)
    except GrantRejected as exc:
        return await _grant_refused(slack, slack_user, exc, "grant" in values)
    except (ApprovalError, ApprovalNotFound) as exc:
        return _errors({"decision": str(exc)[:150]})
    longpoll.announce(request, "approvals")
    if grant is not None:
        longpoll.announce(request, "grants")
    return Response(status_code=200)


async def _grant_refused(slack: Slack, slack_user: str, exc: GrantRejected, offered: bool) -> JSONResponse:
    """Keep the modal open with why the grant was refused (the approval stays pending).

    The modal shows a short message under the field; when the problems do not fit, all of them
    also reach the approver as a message only they see.
    """
    text = "; ".join(exc.problems)
    if len(text) > _ERROR_CHARS:
        whole = "The grant was refused (the approval is still pending):\n" + "\n".join(f"• {p}" for p in exc.problems)
        await run_in_threadpool(slack.tell, None, slack_user, whole)
        text = text[: _ERROR_CHARS - 1] + "…"
    return _errors({"grant" if offered else "decision": text})


async def _unmapped(db: Database, approval_id: str, slack_user: str, *, approve: bool) -> str:
    """Audit a decision from a Slack user who is no Clearance person; say why it was refused."""
    why = f"Slack user {slack_user} is not a Clearance user: an admin maps them first"
    who = decisions.Decider(f"slack:{slack_user}")
    await run_in_threadpool(lambda: decisions.refuse(db, approval_id, who, approve=approve, why=why))
    return why


def _errors(errors: dict[str, str]) -> JSONResponse:
    """Keep the modal open with these messages under its inputs."""
    return JSONResponse({"response_action": "errors", "errors": errors})
