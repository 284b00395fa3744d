"""Admin: which integrations are configured (secrets never shown), and a test message to each.

Slack and webhooks are configured in the server's environment (`CLEARANCE_SLACK_*`,
`CLEARANCE_WEBHOOK_*`); the dashboard shows what is set and sends a test, so an admin can tell a
wrong channel or secret from a broken receiver before a real approval depends on it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ... import _webhooks as webhooks
from ..._clock import now_us
from ..._store._events import new_id
from ..._store._keys import ApiKey
from ..._text import Text
from .._auth import actor, require
from .._errors import APIError
from .._settings import ServerSettings

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[ApiKey, Depends(require("admin"))]


class SlackState(BaseModel):
    """Slack as configured here."""

    configured: bool
    channel: str | None
    api_url: str
    bot_token_set: bool
    signing_secret_set: bool


class WebhookState(BaseModel):
    """Webhooks as configured here."""

    secret_set: bool
    allowed: list[str]


class Integrations(BaseModel):
    """What is configured (never a secret's value)."""

    slack: SlackState
    webhooks: WebhookState


@router.get("/integrations", summary="Slack and webhook settings (admin)")
def integrations(request: Request, _: Admin) -> Integrations:
    """What the server was started with; set by `CLEARANCE_*` variables (see the README)."""
    s: ServerSettings = request.app.state.settings
    return Integrations(
        slack=SlackState(
            configured=request.app.state.slack is not None,
            channel=s.slack_channel,
            api_url=s.slack_api_url,
            bot_token_set=s.slack_bot_token is not None,
            signing_secret_set=s.slack_signing_secret is not None,
        ),
        webhooks=WebhookState(secret_set=s.webhook_secret is not None, allowed=list(s.webhook_allowed)),
    )


class TestResult(BaseModel):
    """How a test message went."""

    ok: bool
    detail: str
    status_code: int | None = None
    duration_ms: float


@router.post("/slack/test", summary="Post a test message to the Slack channel (admin)")
async def slack_test(request: Request, admin: Admin) -> TestResult:
    """Post a short message to the configured channel and report Slack's answer."""
    slack = request.app.state.slack
    if slack is None:
        raise APIError(409, "Slack is not configured: set CLEARANCE_SLACK_BOT_TOKEN, _SIGNING_SECRET and _CHANNEL")
    started = time.perf_counter()

    def post() -> TestResult:
        try:
            slack.client.chat_postMessage(
                channel=slack.channel, text=f"Clearance test message, sent by {actor(admin)} from the dashboard."
            )
        except Exception as exc:  # SlackApiError carries Slack's own reason
            reason = getattr(exc, "response", None)
            text = reason.get("error") if reason is not None else f"{type(exc).__name__}: {exc}"
            return TestResult(ok=False, detail=f"Slack refused it: {text}", duration_ms=_ms(started))
        return TestResult(ok=True, detail=f"posted to {slack.channel}", duration_ms=_ms(started))

    return await run_in_threadpool(post)


class WebhookTest(BaseModel):
    """Where to send a test webhook."""

    model_config = ConfigDict(extra="forbid")

    url: Text = Field(min_length=8, max_length=2000, pattern=r"^https?://")


@router.post("/webhooks/test", summary="Send a signed test webhook (admin)")
async def webhook_test(body: WebhookTest, request: Request, admin: Admin) -> TestResult:
    """POST a signed `test` event to `url`, which must start with an allowed prefix.

    Signed like every webhook (`Clearance-Webhook-Signature`); `clearance.handle_webhook`
    verifies it and returns the outcome `test` without doing anything.
    """
    s: ServerSettings = request.app.state.settings
    if s.webhook_secret is None:
        raise APIError(409, "no webhook secret is configured (CLEARANCE_WEBHOOK_SECRET)")
    if not any(body.url.startswith(prefix) for prefix in s.webhook_allowed):
        raise APIError(
            422,
            "the URL does not start with an allowed prefix (CLEARANCE_WEBHOOK_ALLOWED)",
            details=[{"location": "body.url", "message": body.url}],
        )
    secret = s.webhook_secret.get_secret_value()
    event_id = new_id("whe")
    # The shape of every event, so `verify_webhook` accepts it; `handle_webhook` answers it "test".
    payload = json.dumps(
        {"id": event_id, "type": "test", "created_at_us": now_us(), "by": actor(admin), "approval": {}}
    ).encode()

    def send() -> TestResult:
        started = time.perf_counter()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            webhooks.ID_HEADER: event_id,
            webhooks.TIMESTAMP_HEADER: str(timestamp),
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret, timestamp, payload),
            "User-Agent": "clearance-webhooks",
        }
        try:
            with httpx.Client(timeout=webhooks.DELIVERY_TIMEOUT, follow_redirects=False) as http:
                code = http.post(body.url, content=payload, headers=headers).status_code
        except httpx.HTTPError as exc:
            return TestResult(ok=False, detail=f"{type(exc).__name__}: {exc}"[:500], duration_ms=_ms(started))
        ok = 200 <= code < 300
        return TestResult(
            ok=ok, detail="delivered" if ok else f"HTTP {code}", status_code=code, duration_ms=_ms(started)
        )

    return await run_in_threadpool(send)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
