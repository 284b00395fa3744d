"""The CLI shows hidden and direction-changing characters by name and says where they are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from clearance._guard._governor import Governor
from clearance._visible import describe
from clearance.cli import main

ARGS = {"order_id": "refund\u202etxt.exe", "note\u200b": "p\u0430ypal.com", "amount": 900}


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def no_hidden(text: str) -> None:
    assert [f"U+{ord(c):04X}" for c in text if describe(c) is not None and c != "\n"] == []


@pytest.fixture
def pending(configure: Callable[..., Governor]) -> str:
    ticket = configure().begin("issue_refund", ARGS, "s1")
    assert ticket.approval_id and ticket.waiter
    ticket.waiter.close()
    return ticket.approval_id


def test_approvals_list_names_hidden_characters_and_warns(pending: str, db_path: Path) -> None:
    code, out, err = cli("approvals", "list", "--database", str(db_path))
    assert code == 0 and pending in out
    assert '"note⟨U+200B ZWSP⟩": "p⟨U+0430 Cyrillic⟩' in out  # the cell is cut at 60 characters
    assert len(out.strip().splitlines()) == 2  # the warning goes to stderr: one row per approval
    assert err.strip() == (
        f"warning: {pending}: this call holds invisible or direction-changing characters and letters from"
        " another script inside a word: the key /note⟨U+200B ZWSP⟩ (U+200B ZWSP),"
        " /note⟨U+200B ZWSP⟩ (U+0430 Cyrillic), /order_id (U+202E RLO)"
    )
    no_hidden(out + err)


def test_deciding_shows_the_call_as_it_will_run(pending: str, db_path: Path) -> None:
    code, out, err = cli("approve", pending, "--by", "alice", "--database", str(db_path))
    assert code == 0 and '"order_id": "refund⟨U+202E RLO⟩txt.exe"' in out
    assert "/order_id (U+202E RLO)" in err
    no_hidden(out + err)


def test_audit_tail_flags_and_show_names_every_hidden_character(pending: str, db_path: Path) -> None:
    code, out, _ = cli("audit", "tail", "--kind", "tool_call.decided", "--database", str(db_path))
    assert code == 0 and len(out.strip().splitlines()) == 1
    assert "p⟨U+0430 Cyrillic⟩ypal.com" in out
    assert out.rstrip().endswith("⚠ hidden characters at /args/note⟨U+200B ZWSP⟩, /args/order_id")
    no_hidden(out)
    code, out, _ = cli("audit", "show", pending, "--database", str(db_path))
    assert code == 0
    assert "# warning: this record holds invisible or direction-changing characters" in out
    assert '"order_id": "refund⟨U+202E RLO⟩txt.exe"' in out
    no_hidden(out)
