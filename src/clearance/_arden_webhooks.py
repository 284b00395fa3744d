"""Webhooks the way ardenpy's `handle_webhook` reads them, for agents that use ardenpy's webhook mode.

ardenpy 0.5 sends nothing on `POST /policy/check` that says "webhook mode" (its `webhook_url`
argument is never sent): Arden keeps each agent's webhook URL on the server. So does Clearance:
`CLEARANCE_ARDEN_WEBHOOKS` names, per agent, a receiver that speaks ardenpy. An approval asked
through `/policy/check` by such an agent is a webhook-mode approval to that URL, and every
webhook delivered to one of those URLs is shaped and signed the way ardenpy verifies it:

- `X-Arden-Timestamp`: seconds since the epoch when this attempt was signed.
- `X-Arden-Signature`: `sha256=` + hex HMAC-SHA256(secret, f"{timestamp}.{body}"), with the
  server's `CLEARANCE_WEBHOOK_SECRET` (ardenpy's `signing_key`).
- `Clearance-Webhook-Id`: the event id, the same on every retry (ardenpy ignores it).
- Body: `{event_type: action_approved | action_denied, timestamp, action: {action_id, tool_name,
  status, agent_id, context}, approval: {action, admin_user_id, notes}}`.

The format belongs to the receiver, not to the approval: a receiver running ardenpy can verify
nothing else, so whichever process delivers, a message to an Arden URL goes out in this form.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from ._canonical import canonical_json
from ._names import name_problem
from ._store._events import iso
from ._wire import ApprovalStatus

TIMESTAMP_HEADER = "X-Arden-Timestamp"
SIGNATURE_HEADER = "X-Arden-Signature"
ANY_AGENT = "*"
MAX_URL = 2000
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Arden-Signature` value for `body` signed at `timestamp` (ardenpy's scheme)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def url_problem(url: str) -> str | None:
    """Why `url` is not a webhook URL Clearance will POST to, or None.

    Only printable ASCII (no spaces, control or bidirectional characters: punycode an
    international host), at most `MAX_URL` characters, `http` or `https` with a host and a
    valid port, and neither credentials nor a fragment.
    """
    if len(url) > MAX_URL:
        return f"a webhook URL has at most {MAX_URL} characters (this one has {len(url)})"
    if not _PRINTABLE_ASCII.fullmatch(url):
        at = next(i for i, c in enumerate(url) if not 0x21 <= ord(c) <= 0x7E)
        return f"a webhook URL holds only printable ASCII; {ascii(url[at])} at position {at} is not"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not url.startswith(f"{parts.scheme}://"):
        return f"a webhook URL starts with http:// or https:// ({ascii(url[:40])} does not)"
    if "@" in parts.netloc:
        return "a webhook URL carries no credentials (user@host)"
    try:
        port_ok = bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        port_ok = False
    if not port_ok:
        return f"a webhook URL names a host and, if any, a port from 1 to 65535 ({ascii(parts.netloc[:60])} does not)"
    if "#" in url:
        return "a webhook URL has no fragment (#…): it is never sent"
    return None


def targets(value: object) -> tuple[tuple[str, str], ...]:
    """`CLEARANCE_ARDEN_WEBHOOKS` read: comma-separated `agent=url` pairs (`*=url`: any other agent).

    Raises:
        ValueError: A pair that is not `agent=url`, an agent named twice, a name or URL that is
            not valid (see `url_problem`).
    """
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, Mapping):
        value = [f"{agent}={url}" for agent, url in value.items()]
    if not isinstance(value, Sequence):
        raise ValueError("give agent=url pairs, comma-separated")
    found: dict[str, str] = {}
    for pair in value:
        if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
            agent, url = (str(x) for x in pair)
        elif isinstance(pair, str) and "=" in pair:
            agent, url = (x.strip() for x in pair.split("=", 1))
        else:
            raise ValueError(f"{ascii(str(pair)[:60])} is not agent=url")
        problem = None if agent == ANY_AGENT else name_problem(agent, "the agent")
        problem = problem or url_problem(url)
        if problem is not None:
            raise ValueError(f"{ascii(agent[:60])}: {problem}")
        if agent in found:
            raise ValueError(f"the agent {agent!r} is named twice")
        found[agent] = url
    return tuple(found.items())


def environment_urls() -> frozenset[str]:
    """The receivers `CLEARANCE_ARDEN_WEBHOOKS` names in this process's environment.

    For the processes other than the server that deliver webhooks (`clearance worker`,
    `clearance approvals approve`): they must send an Arden URL's messages in ardenpy's form too.

    Raises:
        ValueError: The setting is not valid (see `targets`).
    """
    return frozenset(url for _, url in targets(os.environ.get("CLEARANCE_ARDEN_WEBHOOKS", "")))


def target_for(configured: Sequence[tuple[str, str]], agent: str) -> str | None:
    """The URL an agent's ardenpy approvals are announced at: its own, else `*`'s, else None."""
    by_agent = dict(configured)
    return by_agent.get(agent, by_agent.get(ANY_AGENT))


def body(payload: str) -> bytes:
    """The ardenpy body for a stored webhook event (see `_store._approvals.webhook_payload`).

    An approval approved is `action_approved`; denied, expired or cancelled is `action_denied`
    (ardenpy calls `on_denial` for it), with its status in `action.clearance_status`. The
    context is the arguments that run — an approver's edit, else as proposed — as recorded,
    so redacted values stay redacted.
    """
    event = json.loads(payload)
    a = event["approval"]
    approved = a["status"] == ApprovalStatus.APPROVED
    context = a["edited_args"] if a.get("edited_args") is not None else a["args"]
    notes = a.get("note") or (None if approved or a["status"] == ApprovalStatus.DENIED else a["status"])
    return canonical_json(
        {
            "id": event["id"],
            "event_type": "action_approved" if approved else "action_denied",
            "timestamp": iso(event["created_at_us"]),
            "action": {
                "action_id": a["id"],
                "tool_name": a["tool"],
                "status": "approved" if approved else "denied",
                "clearance_status": a["status"],
                "agent_id": a["agent"],
                "context": context,
            },
            "approval": {
                "action": "approve" if approved else "deny",
                "admin_user_id": a.get("decided_by"),
                "notes": notes,
            },
        }
    ).encode()
