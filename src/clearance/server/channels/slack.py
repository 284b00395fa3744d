"""Slack: approvals posted to a channel with Approve / Deny / Edit, and kept up to date.

The channel's message of each approval is redrawn whenever the approval changes, so a crash, a
Slack outage or a decision made elsewhere (dashboard, CLI, API) ends with the right message in
the channel (see `channels.deliver`). Clicks come back to `/v1/slack/interactions`, verified
with Slack's request signature; a Slack user decides as the person mapped to them.

Everything an agent controls (tool, arguments, session) is shown as Slack `plain_text`, never
as `mrkdwn`, so an argument like `<!channel>` or `<https://evil|click me>` stays text. Hidden,
direction-changing and look-alike characters are shown as named tokens (`⟨U+202E RLO⟩`, see
`_visible`) under a warning naming the arguments that hold them, large values by their size,
and the edit modal writes such characters as JSON escapes, so leaving a field alone keeps it exact.

When the rule that asked permits grants (`approval.grants`), the modal also offers "grant
similar calls for…": one choice per scope and duration the rule allows (the rule's call and
total limits apply), passed to the decision as a grant; a rule without `grants:` offers none.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from ... import _granting as granting
from ..._canonical import canonical_json
from ..._store import Approval
from ..._store._channels import Message
from ..._visible import escaped_json, hazards, visible, warning
from ..._wire import ApprovalStatus
from ..._wire._grants import GrantLimitsOut
from .._settings import ServerSettings
from . import Channel, ChannelError, Delivery
from . import _render as render
from ._render import LONG

log = logging.getLogger("clearance.slack")
_MAX_FIELDS = 10
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,39}$")
NO_GRANT = "none"
_DURATIONS = (900, 3600, 4 * 3600, 8 * 3600, 86400, 7 * 86400)  # offered when within the rule's max_duration
_SCOPES = {"session": "this session", "agent": "this agent", "requester": "the person the agent acts for"}
_CHOICE = re.compile(r"^([a-z]{1,20}):([0-9]{1,12})$")


def _plain(text: str, limit: int = LONG) -> dict[str, Any]:
    return {"type": "plain_text", "text": render.cut(text, limit) or " ", "emoji": False}


def _value(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


def _editable(value: Any) -> str:
    """A modal input's text: the value as sent, or JSON with hazards escaped when it holds any."""
    return escaped_json(value) if hazards(value) else _value(value)


def blocks(a: Approval) -> tuple[str, list[dict[str, Any]]]:
    """The notification text and the blocks of an approval's message."""
    args = render.arguments(a)
    head = render.head(a)
    items = list(args.items())
    fields = [_plain(f"{visible(name)}: {render.value(value)}") for name, value in items[:_MAX_FIELDS]]
    if len(items) > _MAX_FIELDS:
        fields[-1] = _plain(f"… and {len(items) - _MAX_FIELDS + 1} more arguments")
    out: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(head, 150)},
        {"type": "section", "fields": [_plain(line) for line in render.facts(a)]},
    ]
    alert = warning(hazards(args))
    if alert:
        out.append({"type": "section", "text": _plain(f"⚠ Look closely: {alert}.", 2000)})
    out.append({"type": "section", "text": _plain("Arguments" + (" (edited)" if a.edited_shown is not None else ""))})
    if fields:
        out.append({"type": "section", "fields": fields})
    if a.status is ApprovalStatus.PENDING:
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
        out.append({"type": "context", "elements": [_plain(render.outcome(a), 2000)]})
    return f"{head} ({a.id})", out


def _button(label: str, action: str, approval_id: str, style: str | None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": _plain(label), "action_id": action, "value": approval_id}
    if style:
        button["style"] = style
    return button


def _lasting(seconds: int) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def grant_options(a: Approval, limits: GrantLimitsOut | None) -> list[dict[str, Any]]:
    """The "grant similar calls for…" choices within the rule's limits: none when it permits no grants.

    A scope the call cannot have (a session, a person it acts for) is left out.
    """
    if limits is None:
        return []
    durations = [d for d in _DURATIONS if d < limits.max_duration] + [limits.max_duration]
    usable = {"session": bool(a.session), "agent": True, "requester": bool(a.requested_by)}
    return [
        {"text": _plain(f"{_SCOPES[scope]} for {_lasting(d)}", 75), "value": f"{scope}:{d}"}
        for scope in limits.scopes
        if usable[scope]
        for d in durations
    ]


def _limits_text(a: Approval, limits: GrantLimitsOut) -> str:
    parts = [f"calls of {visible(a.tool)} that {', '.join(visible(r) for r in a.rule_ids) or 'the rule'} asks about"]
    if limits.max_calls is not None:
        parts.append(f"at most {limits.max_calls} calls")
    parts.extend(f"{visible(n)} totalling at most {amount}" for n, amount in (limits.max_total or {}).items())
    return "Approving, also let " + ", ".join(parts) + " through without asking. Blocking rules still block."


def grant_of(values: dict[str, Any]) -> granting.GrantRequest | None:
    """The grant a submitted modal chose (None: no grant).

    Raises:
        ValueError: The choice is not one the modal offers (`scope:seconds`).
    """
    chosen = (((values.get("grant") or {}).get("value") or {}).get("selected_option") or {}).get("value")
    if chosen is None or chosen == NO_GRANT:
        return None
    match = _CHOICE.fullmatch(chosen) if isinstance(chosen, str) else None
    if match is None:
        raise ValueError(f"{render.cut(visible(str(chosen)), 60)} is not a grant this modal offers")
    return granting.GrantRequest(scope=match[1], duration=int(match[2]))


def modal(a: Approval, limits: GrantLimitsOut | None = None) -> dict[str, Any]:
    """The modal for deciding with a note and, approving, edited arguments and a grant of similar calls.

    Args:
        a: The approval.
        limits: What the rule that asked permits granting (None: no grant is offered).
    """
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
    options = grant_options(a, limits)
    if options and limits is not None:
        inputs.insert(
            1,
            {
                "type": "input",
                "block_id": "grant",
                "optional": True,
                "label": _plain("Grant similar calls for…"),
                "hint": _plain(_limits_text(a, limits), 2000),
                "element": {
                    "type": "static_select",
                    "action_id": "value",
                    "initial_option": {"text": _plain("No grant"), "value": NO_GRANT},
                    "options": [{"text": _plain("No grant"), "value": NO_GRANT}, *options],
                },
            },
        )
    for name, value in list(a.shown_args.items())[:20]:
        hint = "JSON (150, true, [1, 2]) or text; [REDACTED] keeps the hidden value"
        if hazards(value):
            hint = f"Holds hidden characters, written as JSON escapes: {render.value(value)}"
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


class Slack(Channel):
    """The Slack side of the server: the Web API client, the request verifier, the channel."""

    name = "slack"

    def __init__(self, client: WebClient, verifier: SignatureVerifier, channel: str) -> None:
        self.client, self.verifier, self.channel = client, verifier, channel

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Slack | None:
        """Slack, when its token, signing secret and channel are all set (`CLEARANCE_SLACK_*`)."""
        if settings.slack_bot_token is None or settings.slack_signing_secret is None or settings.slack_channel is None:
            return None
        base = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
        client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base, timeout=10)
        return cls(client, SignatureVerifier(settings.slack_signing_secret.get_secret_value()), settings.slack_channel)

    @classmethod
    def identity(cls, external_id: str) -> str:
        """A Slack user id (`U024BE7LH`).

        Raises:
            ValueError: When it is not one.
        """
        if not _USER_ID.fullmatch(external_id):
            raise ValueError(f"{ascii(external_id)} is not a Slack user id (like U024BE7LH)")
        return external_id

    @classmethod
    def describe(cls, settings: ServerSettings) -> dict[str, str | bool | None]:
        """The channel, the API's URL, and whether the token and signing secret are set."""
        return {
            "channel": settings.slack_channel,
            "api_url": settings.slack_api_url,
            "bot_token_set": settings.slack_bot_token is not None,
            "signing_secret_set": settings.slack_signing_secret is not None,
        }

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        """Post the approval's message to the channel (everyone there sees it; `to` is not used)."""
        text, drawn = blocks(a)
        answer = self._call(lambda: self.client.chat_postMessage(channel=self.channel, text=text, blocks=drawn))
        return Delivery({"channel": str(answer["channel"]), "ts": str(answer["ts"])})

    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        """Redraw the message: the outcome instead of the buttons, votes, an escalation."""
        assert message.ref is not None
        text, drawn = blocks(a)
        ref = message.ref
        self._call(lambda: self.client.chat_update(channel=ref["channel"], ts=ref["ts"], text=text, blocks=drawn))
        return Delivery(ref)

    @staticmethod
    def _call(send: Any) -> Any:
        try:
            return send()
        except SlackApiError as exc:  # Slack's own reason, not the whole response
            raise ChannelError(f"Slack refused it: {exc.response.get('error')}") from None

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Slack's request signature: the signing secret, within five minutes."""
        return bool(
            self.verifier.is_valid(body, headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature"))
        )

    def test(self, by: str) -> str:
        """Post a short message to the channel."""
        self._call(
            lambda: self.client.chat_postMessage(
                channel=self.channel, text=f"Clearance test message, sent by {by} from the dashboard."
            )
        )
        return f"posted to {self.channel}"

    def tell(self, channel: str | None, user: str, text: str) -> None:
        """Say something only `user` sees (why their click was refused)."""
        try:
            self.client.chat_postEphemeral(channel=channel or self.channel, user=user, text=text)
        except Exception as exc:
            log.warning("cannot tell Slack user %s: %s", user, exc)
