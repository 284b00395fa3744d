"""Admin: which integrations are configured (secrets never shown), and a test message to each.

Approval channels and webhooks are configured in the server's environment (`CLEARANCE_SLACK_*`,
`CLEARANCE_SMTP_*`, `CLEARANCE_WEBHOOK_*`); the dashboard shows what is set, how each channel's
deliveries went, and sends a test, so an admin can tell a wrong channel or secret from a broken
receiver before a real approval depends on it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ... import _webhooks as webhooks
from ..._clock import now_us
from ..._store import _channels as messages
from ..._store._events import new_id
from ..._store._keys import ApiKey
from ..._text import Text
from ..._wire import Sent
from .._auth import actor, require
from .._errors import APIError
from .._settings import ServerSettings
from ..channels import Channel, ChannelError, kinds

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[ApiKey, Depends(require("admin"))]


class ChannelState(Sent):
    """An approval channel: its settings (never a secret's value) and how its deliveries went."""

    name: str
    configured: bool
    settings: dict[str, str | bool | None]
    messages: int = Field(description="approvals it sent a message for")
    sent: int = Field(description="messages sent, updates included")
    failures: int = Field(description="attempts that failed (each is retried)")
    last_error: str | None
    parked: int = Field(
        0,
        description="messages that failed too often in a row: tried again hourly, or when their approval changes",
    )


class WebhookState(Sent):
    """Webhooks as configured here."""

    secret_set: bool
    allowed: list[str]


class Integrations(Sent):
    """What is configured (never a secret's value)."""

    channels: list[ChannelState]
    webhooks: WebhookState


@router.get("/integrations", summary="Approval channel and webhook settings (admin)")
def integrations(request: Request, _: Admin) -> Integrations:
    """What the server was started with, and how each approval channel's deliveries went.

    Set by `CLEARANCE_*` variables (see the README); the tallies count every replica's work.
    """
    s: ServerSettings = request.app.state.settings
    running: dict[str, Channel] = request.app.state.channels
    shown = {**{name: type(c) for name, c in running.items()}, **kinds()}
    states = []
    for name, kind in sorted(shown.items()):
        tally = messages.tally(request.app.state.db, name)
        states.append(
            ChannelState(
                name=name,
                configured=name in running,
                settings=kind.describe(s),
                messages=tally.messages,
                sent=tally.sent,
                failures=tally.failures,
                last_error=tally.last_error,
                parked=tally.parked,
            )
        )
    return Integrations(
        channels=states,
        webhooks=WebhookState(secret_set=s.webhook_secret is not None, allowed=list(s.webhook_allowed)),
    )


class TestResult(Sent):
    """How a test message went."""

    ok: bool
    detail: str
    status_code: int | None = None
    duration_ms: float


@router.post("/channels/{name}/test", summary="Send a test message through an approval channel (admin)")
async def channel_test(name: Annotated[str, Path(max_length=40)], request: Request, admin: Admin) -> TestResult:
    """Send a short message through the channel and report what its service said.

    Slack posts to its channel; e-mail mails the sender's own address.
    """
    channel: Channel | None = request.app.state.channels.get(name)
    if channel is None:
        raise APIError(409, f"{ascii(name)} is not a configured approval channel here: see its CLEARANCE_* settings")
    started = time.perf_counter()

    def send() -> TestResult:
        try:
            detail = channel.test(actor(admin))
        except ChannelError as exc:  # the service's own reason
            return TestResult(ok=False, detail=str(exc)[:500], duration_ms=_ms(started))
        except Exception as exc:  # unreachable, timed out, refused the login
            return TestResult(ok=False, detail=f"{type(exc).__name__}: {exc}"[:500], duration_ms=_ms(started))
        return TestResult(ok=True, detail=detail, duration_ms=_ms(started))

    return await run_in_threadpool(send)


@router.post("/slack/test", summary="Post a test message to the Slack channel (admin)")
async def slack_test(request: Request, admin: Admin) -> TestResult:
    """`POST /v1/admin/channels/slack/test`, by its older name."""
    return await channel_test("slack", request, admin)


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
