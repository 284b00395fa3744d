"""Slack: approvals posted to a channel with Approve / Deny / Edit, and kept up to date.

The server reconciles Slack with the store rather than sending one-off messages: every pending
approval without a message gets one, and every message whose approval changed since it was
drawn is redrawn. So a crash, a Slack outage or a decision made elsewhere (dashboard, CLI, API)
ends with the right message in the channel, and replicas on one database post each approval
once (a claim per approval, retried after a minute if its poster died).

Everything an agent controls (tool, arguments, session) is shown as Slack `plain_text`, never
as `mrkdwn`, so an argument like `<!channel>` or `<https://evil|click me>` stays text. Hidden,
direction-changing and look-alike characters are shown as named tokens (`⟨U+202E RLO⟩`, see
`_visible`) under a warning naming the arguments that hold them, large values by their size,
and the edit modal writes such characters as JSON escapes, so leaving a field alone keeps it exact.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from .._canonical import canonical_json
from .._clock import now_us
from .._store import Approval, Database
from .._store import _approvals as approvals
from .._visible import escaped_json, hazards, shown, visible, warning

log = logging.getLogger("clearance.slack")
CLAIM_SECONDS = 60
_MAX_FIELDS = 10
_MAX_TEXT = 300
_MANY = 20  # entries of an object or array written out before it is shown by its size


def _plain(text: str, limit: int = _MAX_TEXT) -> dict[str, Any]:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text or " ", "emoji": False}


def _value(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _shown(value: Any) -> str:
    """A value as an approver reads it: hazards as tokens, a large object or array by its size."""
    if isinstance(value, dict) and len(value) > _MANY:
        return f"{{{len(value):,} keys}} " + canonical_json(shown(value))
    if isinstance(value, list) and len(value) > _MANY:
        return f"[{len(value):,} items] " + canonical_json(shown(value))
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return f"({len(value):,} characters) " + visible(value)
    return visible(value) if isinstance(value, str) else canonical_json(shown(value))


def _editable(value: Any) -> str:
    """A modal input's text: the value as sent, or JSON with hazards escaped when it holds any."""
    return escaped_json(value) if hazards(value) else _value(value)


def _when(us: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(us / 1e6)) if us else "-"


def blocks(a: Approval) -> tuple[str, list[dict[str, Any]]]:
    """The notification text and the blocks of an approval's message."""
    args = a.edited_shown if a.edited_shown is not None else a.shown_args
    tool = visible(a.tool)
    head = f"Approval needed: {tool}" if a.status == "pending" else f"{a.status.capitalize()}: {tool}"
    facts = [
        _plain(f"Agent: {visible(a.agent)} ({a.environment})"),
        _plain(f"Session: {visible(a.session or '-')}"),
        _plain(f"Rule: {', '.join(a.rule_ids) or '-'}"),
        _plain(f"Reason: {visible(a.reason)}"),
        _plain(f"Expires: {_when(a.expires_at_us)}"),
    ]
    if a.approvers or a.escalated_at_us:
        facts.append(_plain(f"Who may decide: {', '.join(a.deciders) or 'any approver'}"))
    if a.quorum > 1:
        facts.append(_plain(f"Approvals: {len(a.votes)} of {a.quorum}"))
    items = list(args.items())
    fields = [_plain(f"{visible(name)}: {_shown(value)}") for name, value in items[:_MAX_FIELDS]]
    if len(items) > _MAX_FIELDS:
        fields[-1] = _plain(f"… and {len(items) - _MAX_FIELDS + 1} more arguments")
    out: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(head, 150)},
        {"type": "section", "fields": facts},
    ]
    alert = warning(hazards(args))
    if alert:
        out.append({"type": "section", "text": _plain(f"⚠ Look closely: {alert}.", 2000)})
    out.append({"type": "section", "text": _plain("Arguments" + (" (edited)" if a.edited_shown is not None else ""))})
    if fields:
        out.append({"type": "section", "fields": fields})
    if a.status == "pending":
        out.append(
            {
                "type": "actions",
                "block_id": "decide",
                "elements": [
                    _button("Approve", "approve", a.id, "primary"),
                    _button("Deny", "deny", a.id, "danger"),
                    _button("Edit or add a note…", "edit", a.id, None),
                ],
            }
        )
    else:
        by = f" by {a.decided_by}" if a.decided_by else ""
        note = f" — {a.note}" if a.note else ""
        out.append({"type": "context", "elements": [_plain(f"{a.status}{by} at {_when(a.decided_at_us)}{note}", 2000)]})
    return f"{head} ({a.id})", out


def _button(label: str, action: str, approval_id: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": _plain(label), "action_id": action, "value": approval_id}
    if style:
        button["style"] = style
    return button


def modal(a: Approval) -> dict[str, Any]:
    """The modal for deciding with a note and, approving, edited arguments."""
    inputs: list[dict[str, Any]] = [
        {
            "type": "input",
            "block_id": "decision",
            "label": _plain("Decision"),
            "element": {
                "type": "static_select",
                "action_id": "value",
                "initial_option": {"text": _plain("Approve"), "value": "approve"},
                "options": [
                    {"text": _plain("Approve"), "value": "approve"},
                    {"text": _plain("Deny"), "value": "deny"},
                ],
            },
        },
        {
            "type": "input",
            "block_id": "note",
            "optional": True,
            "label": _plain("Note for the agent"),
            "element": {"type": "plain_text_input", "action_id": "value", "multiline": True, "max_length": 2000},
        },
    ]
    for name, value in list(a.shown_args.items())[:20]:
        hint = "JSON (150, true, [1, 2]) or text; [REDACTED] keeps the hidden value"
        if hazards(value):
            hint = f"Holds hidden characters, written as JSON escapes: {_shown(value)}"
        inputs.append(
            {
                "type": "input",
                "block_id": f"arg:{name}"[:255],
                "optional": True,
                "label": _plain(visible(name), 2000),
                "hint": _plain(hint, 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "initial_value": _editable(value)[:3000],
                },
            }
        )
    return {
        "type": "modal",
        "callback_id": "clearance_decide",
        "private_metadata": a.id,
        "title": _plain("Decide", 24),
        "submit": _plain("Submit", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {"type": "section", "text": _plain(f"{visible(a.tool)} for {visible(a.agent)}: {visible(a.reason)}", 2000)},
            *inputs,
        ],
    }


def edits_of(a: Approval, values: dict[str, Any]) -> dict[str, Any] | None:
    """The arguments a modal's inputs changed (None: none), values read as JSON when they parse."""
    changed: dict[str, Any] = {}
    for block_id, inputs in values.items():
        if not block_id.startswith("arg:"):
            continue
        name = block_id.removeprefix("arg:")
        raw = (inputs.get("value") or {}).get("value")
        if (
            raw is None
            or name not in a.shown_args
            or raw in (_value(a.shown_args[name]), _editable(a.shown_args[name]))
        ):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if value != a.shown_args[name] or type(value) is not type(a.shown_args[name]):
            changed[name] = value
    return changed or None


@dataclass
class Slack:
    """The Slack side of the server: the Web API client, the request verifier, the channel."""

    client: WebClient
    verifier: SignatureVerifier
    channel: str

    def sync(self, db: Database) -> int:
        """Post what has no message yet and redraw what changed; returns how many were sent."""
        sent = 0
        for a in approvals.slack_due(db, now_us=now_us(), stale_us=CLAIM_SECONDS * 1_000_000):
            try:
                sent += self._sync_one(db, a)
            except SlackApiError as exc:
                log.warning("Slack refused the message of %s: %s", a.id, exc.response.get("error"))
            except Exception as exc:  # network: the next pass retries
                log.warning("cannot reach Slack for %s: %s", a.id, exc)
        return sent

    def _sync_one(self, db: Database, a: Approval) -> int:
        text, drawn = blocks(a)
        if a.slack_ts is None:
            if not approvals.slack_claim(db, a.id, now_us=now_us(), stale_us=CLAIM_SECONDS * 1_000_000):
                return 0
            answer = self.client.chat_postMessage(channel=self.channel, text=text, blocks=drawn)
            approvals.slack_drawn(
                db, a.id, drawn=approvals.slack_state(a), channel=str(answer["channel"]), ts=str(answer["ts"])
            )
            return 1
        assert a.slack_channel is not None
        self.client.chat_update(channel=a.slack_channel, ts=a.slack_ts, text=text, blocks=drawn)
        approvals.slack_drawn(db, a.id, drawn=approvals.slack_state(a))
        return 1

    def tell(self, channel: str | None, user: str, text: str) -> None:
        """Say something only `user` sees (why their click was refused)."""
        try:
            self.client.chat_postEphemeral(channel=channel or self.channel, user=user, text=text)
        except Exception as exc:
            log.warning("cannot tell Slack user %s: %s", user, exc)
