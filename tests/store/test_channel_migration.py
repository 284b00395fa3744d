"""Migration 0010 moves Slack's columns into the channel tables and back, data included, on both stores."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from clearance._guard._record import record_call
from clearance._store import Database
from clearance._store import _channels as channels
from clearance._store import _users as users
from clearance.policy import parse_policy

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: args.amount > 200, effect: require_approval}
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("pg_url"))


def _migrate(url: str, to: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(resources.files("clearance._store") / "migrations"))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, to)
    engine.dispose()


def test_slack_data_survives_the_move_down_and_up_again(url: str) -> None:
    db = Database(url)
    user = users.create(db, "lena", "correct horse battery", ["approver"], by="t")
    users.update(db, "lena", identities={"slack": "U0LENA", "email": "lena@example.com"}, by="t")
    posted, claimed = [
        record_call(
            db,
            parse_policy(POLICY),
            agent="a",
            environment="test",
            tool="issue_refund",
            args={"amount": n},
            session="s",
        ).approval_id
        for n in (300, 400)
    ]
    assert posted is not None and claimed is not None
    assert channels.claim(db, posted, "slack", now_us=5, stale_us=1)
    channels.drawn(
        db, posted, "slack", state="pending/0/0", shows=lambda a: "pending/0/0", ref={"channel": "C1", "ts": "1.2"}
    )
    assert channels.claim(db, claimed, "slack", now_us=7, stale_us=1)
    db.close()

    _migrate(url, "0009", down=True)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert not {"channel_messages", "channel_identities"} & set(inspect(conn).get_table_names())
        rows = conn.execute(
            text("SELECT id, slack_channel, slack_ts, slack_shown, slack_claimed_at_us FROM approvals ORDER BY id")
        ).fetchall()
        assert {r[0]: tuple(r[1:]) for r in rows} == {
            posted: ("C1", "1.2", "pending/0/0", None),  # its claim let go once drawn
            claimed: (None, None, None, 7),
        }
        assert conn.execute(text("SELECT slack_user_id FROM users")).scalar_one() == "U0LENA"
    engine.dispose()

    _migrate(url, "0010")
    db = Database(url)
    try:
        lena = users.by_identity(db, "slack", "U0LENA")
        assert lena is not None and lena.id == user.id and lena.identities == {"slack": "U0LENA"}  # e-mail is new
        moved = channels.message(db, posted, "slack")
        assert moved == channels.Message(posted, "slack", {"channel": "C1", "ts": "1.2"}, "pending/0/0", "pending/0/0")
        assert channels.message(db, claimed, "slack") == channels.Message(claimed, "slack", None, None, None)
        assert not channels.claim(db, claimed, "slack", now_us=7, stale_us=1)  # the claim came along
        assert channels.tally(db, "slack").messages == 1
    finally:
        db.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        gone = [c["name"] for t in ("approvals", "users") for c in inspect(conn).get_columns(t)]
        assert not [c for c in gone if c.startswith("slack")]
    engine.dispose()
