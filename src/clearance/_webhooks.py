"""Signed webhooks: delivering them from the outbox, and verifying and handling them in your app.

Each delivery is a POST of a JSON event with three headers:

- `Clearance-Webhook-Id`: the event id (`whe_…`); the same on every retry of one event.
- `Clearance-Webhook-Timestamp`: seconds since the epoch when this attempt was signed.
- `Clearance-Webhook-Signature`: `v1=` + hex HMAC-SHA256(secret, f"{timestamp}.{body}").

A receiver checks the signature (constant time) and that the timestamp is within 5 minutes, so
a captured request cannot be replayed later; replays within the window are harmless because
handling is idempotent (the approved call runs once, a denial is reported once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from . import _arden_webhooks as arden
from ._clock import now_us
from ._store import Database
from ._store import _outbox as outbox
from ._wire import DECISIONS
from .errors import (
    ConfigurationError,
    WebhookError,
)

ID_HEADER = "Clearance-Webhook-Id"
TIMESTAMP_HEADER = "Clearance-Webhook-Timestamp"
SIGNATURE_HEADER = "Clearance-Webhook-Signature"
TOLERANCE_SECONDS = 300
DELIVERY_TIMEOUT = 10.0

log = logging.getLogger("clearance")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` signed at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook's signature and age; return its event.

    Args:
        body: The raw request body, exactly as received (not re-serialised JSON).
        headers: The request headers (any mapping; names are matched case-insensitively).
        secret: The shared webhook secret.
        tolerance: How old (or how far in the future) the timestamp may be, in seconds.
        now: The time to check against (default: now).

    Returns:
        The event: `{"id", "type", "created_at_us", "approval": {...}}`.

    Raises:
        WebhookError: A missing or malformed header, a signature that does not match, a
            timestamp outside the tolerance, or a body that is not the event's JSON.
    """
    if not secret:
        raise WebhookError("no webhook secret to verify with")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise WebhookError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise WebhookError(f"{TIMESTAMP_HEADER} is not a number of seconds") from None
    age = (time.time() if now is None else now) - ts
    if abs(age) > tolerance:
        raise WebhookError(f"the webhook was signed {age:.0f}s ago, outside the {tolerance:.0f}s tolerance")
    expected = sign(secret, ts, raw)
    offered = [part.strip() for part in signature.split(",")]  # room for several during a key rotation
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise WebhookError("the webhook signature does not match")
    try:
        event = json.loads(raw)
    except ValueError:
        raise WebhookError("the webhook body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("approval"), dict) or "id" not in event:
        raise WebhookError("the webhook body is not a Clearance event")
    header_id = _header(headers, ID_HEADER)
    if header_id is not None and header_id != event["id"]:
        raise WebhookError(f"{ID_HEADER} does not match the event")
    return event


@dataclass(frozen=True)
class WebhookOutcome:
    """What `handle_webhook` did.

    Attributes:
        event_id: The event's id.
        approval_id: Its approval.
        outcome: `executed` (the approved call ran here), `denied` (the denial or timeout was
            reported to `on_denial`), `failed` (the approved call raised; reported to
            `on_denial`), `duplicate` (another delivery or process handled it already), or
            `test` (a test event sent from the dashboard: nothing to do).
        result: The call's result, when it ran here.
        error: The denial or the tool's error, when there was one.
    """

    event_id: str
    approval_id: str
    outcome: Literal["executed", "denied", "failed", "duplicate", "test"]
    result: Any = None
    error: BaseException | None = None


def handle_webhook(body: bytes | str, headers: Mapping[str, str], secret: str | None = None) -> WebhookOutcome:
    """Verify a webhook and finish its call: run it if approved, report a denial — once.

    The tool must be guarded in this process (import its module) and Clearance configured on
    the same store or server. The tool's `on_approval` / `on_denial` are called as in async
    mode. Answer 2xx whatever the outcome once this returns (a `duplicate` is not an error);
    answer 4xx on `WebhookError`.

    Args:
        body: The raw request body.
        headers: The request headers.
        secret: The webhook secret (default: the configured `webhook_secret`).

    Raises:
        WebhookError: The request is not a valid, fresh, signed Clearance webhook.
        ConfigurationError: No secret is configured, or the tool is not guarded here.
    """
    from ._guard import _modes, _runtime

    if secret is None:
        configured = _runtime.current().settings.webhook_secret
        if configured is None:
            raise ConfigurationError("no webhook secret: configure(webhook_secret=...) or CLEARANCE_WEBHOOK_SECRET")
        secret = configured.get_secret_value()
    event = verify_webhook(body, headers, secret)
    if event.get("type") == "test":
        return WebhookOutcome(event["id"], "", "test")
    approval = event["approval"]
    approval_id, tool = str(approval.get("id")), str(approval.get("tool"))
    if approval.get("status") not in DECISIONS:
        return WebhookOutcome(event["id"], approval_id, "duplicate")
    outcome, result, error = _modes.finish_decided(approval_id, tool)
    return WebhookOutcome(event["id"], approval_id, outcome, result=result, error=error)


def signed(message: outbox.Message, secret: str, *, ardenpy: bool = False) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt at `message`, signed now: Clearance's form, or ardenpy's."""
    timestamp = int(time.time())
    if ardenpy:
        body = arden.body(message.payload)
        names, signature = (arden.TIMESTAMP_HEADER, arden.SIGNATURE_HEADER), arden.sign(secret, timestamp, body)
    else:
        body = message.payload.encode()
        names, signature = (TIMESTAMP_HEADER, SIGNATURE_HEADER), sign(secret, timestamp, body)
    return body, {
        "Content-Type": "application/json",
        ID_HEADER: message.id,
        names[0]: str(timestamp),
        names[1]: signature,
        "User-Agent": "clearance-webhooks",
    }


def deliver_due(
    db: Database,
    secret: str | None,
    *,
    client: httpx.Client | None = None,
    only: tuple[str, ...] = (),
    attempted: Callable[[bool], None] | None = None,
    arden_urls: Collection[str] | None = None,
) -> int:
    """Deliver the webhooks that are due (or only those ids) once each; returns how many were sent.

    Each attempt is recorded (and told to `attempted`, with whether it was delivered); a failure
    (no 2xx, a network error, no secret) is retried later with exponential backoff, and given up
    after `outbox.MAX_ATTEMPTS`. A message to one of `arden_urls` goes out the way ardenpy reads
    it (see `_arden_webhooks`); not given, they are the ones `CLEARANCE_ARDEN_WEBHOOKS` names here
    (when that setting is not valid, nothing is sent: a message in the wrong form only fails).
    """
    if arden_urls is None:
        try:
            arden_urls = arden.environment_urls()
        except ValueError as exc:
            log.error("webhooks not delivered here: CLEARANCE_ARDEN_WEBHOOKS is not valid: %s", exc)
            return 0
    due = outbox.claim_due(db, now_us=now_us(), only=only)
    if not due:  # the common pass: nothing to send, so no client (its TLS context costs milliseconds)
        return 0
    own = client is None
    http = client or httpx.Client(timeout=DELIVERY_TIMEOUT, follow_redirects=False)
    sent = 0
    try:
        for message in due:
            started = time.perf_counter()
            code: int | None = None
            error: str | None = None
            if not secret:
                error = "no webhook secret is configured here (CLEARANCE_WEBHOOK_SECRET)"
            else:
                try:
                    body, headers = signed(message, secret, ardenpy=message.url in arden_urls)
                    code = http.post(message.url, content=body, headers=headers).status_code
                    if not 200 <= code < 300:
                        error = f"HTTP {code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                except (ValueError, LookupError, TypeError, RecursionError) as exc:  # no ardenpy form of it
                    error = f"not sent: {type(exc).__name__}: {exc}"[:500]
            outbox.record(
                db,
                message,
                now_us=now_us(),
                status_code=code,
                error=error,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            sent += error is None
            if attempted is not None:
                attempted(error is None)
    finally:
        if own:
            http.close()
    return sent
