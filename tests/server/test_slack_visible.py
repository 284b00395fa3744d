"""Slack shows hidden and direction-changing characters by name, warns, and keeps edits exact."""

from __future__ import annotations

import json
from typing import Any

from clearance._visible import describe
from clearance.server.channels._render import value as _shown

from .test_slack import click, pending, signed, slack, status, submit

__all__ = ["slack"]  # the fixture, shared with test_slack

URL = "/v1/slack/interactions"


def _texts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for block in blocks:
        for part in [block.get("text"), block.get("label"), block.get("hint"), *(block.get("fields") or [])]:
            if isinstance(part, dict) and "type" in part:
                out.append(part)
    return out


def test_the_message_names_hidden_characters_and_warns(slack: dict[str, Any]) -> None:
    pending(slack, file_name="refund\u202etxt.exe", to="pay\u200bpal.com", host="p\u0430ypal.com")
    [message] = slack["fake"].wait_for("chat.postMessage")
    texts = _texts(message["blocks"])
    assert all(t["type"] == "plain_text" for t in texts)  # mrkdwn never: <!channel> stays text
    shown = " | ".join(t["text"] for t in texts)
    assert "<!channel> <https://evil.example|click me> *bold*" in shown
    assert "file_name: refund⟨U+202E RLO⟩txt.exe" in shown
    assert "to: pay⟨U+200B ZWSP⟩pal.com" in shown
    assert "host: p⟨U+0430 Cyrillic⟩ypal.com" in shown
    assert (
        "⚠ Look closely: this call holds invisible or direction-changing characters and letters from another"
        " script inside a word: /file_name (U+202E RLO), /host (U+0430 Cyrillic), /to (U+200B ZWSP)."
    ) in shown
    sent = json.dumps(message, ensure_ascii=False)
    assert [c for c in sent if describe(c) is not None] == []


def test_a_clean_message_has_no_warning(slack: dict[str, Any]) -> None:
    pending(slack)
    [message] = slack["fake"].wait_for("chat.postMessage")
    assert "Look closely" not in json.dumps(message["blocks"])


def test_the_modal_writes_hidden_characters_as_escapes_and_keeps_untouched_values_exact(
    slack: dict[str, Any],
) -> None:
    client, fake = slack["client"], slack["fake"]
    approval_id = pending(slack, file_name="refund\u202etxt.exe", to="pay\u200bpal.com")
    fake.wait_for("chat.postMessage")
    assert client.post(URL, **signed(click("U0LENA", "edit", approval_id))).status_code == 200
    [opened] = fake.wait_for("views.open")
    inputs = {b["block_id"]: b for b in opened["view"]["blocks"] if b["type"] == "input"}
    assert inputs["arg:file_name"]["element"]["initial_value"] == '"refund\\u202etxt.exe"'
    assert "refund⟨U+202E RLO⟩txt.exe" in inputs["arg:file_name"]["hint"]["text"]
    assert inputs["arg:amount"]["element"]["initial_value"] == "850"
    # Slack sends every input back: the untouched ones as they were drawn.
    answer = submit(
        "U0LENA",
        approval_id,
        amount="300",
        file_name='"refund\\u202etxt.exe"',
        to='"paypal.com"',
    )
    ok = client.post(URL, **signed(answer))
    assert ok.status_code == 200, ok.text
    final = status(slack, approval_id)
    assert final.status == "approved"
    assert final.edited_args is not None
    assert final.edited_args["file_name"] == "refund\u202etxt.exe"  # exact, not the token text
    assert final.edited_args["to"] == "paypal.com" and final.edited_args["amount"] == 300
    [update] = fake.wait_for("chat.update")
    assert "to: paypal.com" in json.dumps(update["blocks"], ensure_ascii=False)


def test_large_values_are_shown_by_their_size() -> None:
    assert _shown({f"k{i}": i for i in range(5000)}).startswith("{5,000 keys} {")
    assert _shown(list(range(30))).startswith("[30 items] [")
    assert _shown("x" * 1000).startswith("(1,000 characters) xxx")
    assert _shown({"a": "\u200b"}) == '{"a":"⟨U+200B ZWSP⟩"}'
