"""Approval channels behind one interface: a channel that fails or hangs harms no other, and
replicas announce each approval once."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import ManualClock, now_us
from clearance._store import Approval, Database
from clearance._store import _channels as messages
from clearance._store import _keys as keys
from clearance._store import _users as users
from clearance._store._channels import Message
from clearance.server import ServerSettings, create_app
from clearance.server.channels import Channel, Delivery, Undelivered, configured, deliver, kinds

from .._wait import until
from .test_email import POLICY, Sink


class Broken(Channel):
    """A channel whose service always fails."""

    name = "broken"

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Broken:
        return cls()

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        raise ConnectionError("the service is down")

    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        raise ConnectionError("the service is down")

    def test(self, by: str) -> str:
        raise ConnectionError("the service is down")


class Stuck(Broken):
    """A channel whose service never answers (until the test lets it go)."""

    name = "stuck"

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        self.entered.set()
        self.release.wait()
        return Delivery({"late": True})


def _store(tmp_path: Path) -> tuple[str, str]:
    db_path = str(tmp_path / "c.db")
    db = Database(db_path)
    _, admin = keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
    users.create(db, "lena", "correct horse battery", ["approver", "support-lead"], by="t")
    users.update(db, "lena", identities={"email": "lena@example.com"}, by="t")
    db.close()
    return db_path, admin


def _settings(db_path: str, sink: Sink) -> ServerSettings:
    return ServerSettings(
        database_url=db_path,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_from="approvals@clearance.example.com",
        smtp_starttls=False,
        public_url="https://clearance.example.com",
    )


def _ask(client: TestClient, admin: dict[str, str], agent_key: str) -> str:
    rev = client.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
    r = client.post(
        "/v1/check", headers={"X-API-Key": agent_key}, json={"tool": "issue_refund", "args": {"amount": 900}}
    )
    return str(r.json()["approval_id"])


def _agent(db_path: str) -> str:
    db = Database(db_path)
    try:
        return keys.create(db, name="g", scopes=["agent"], agent="refunds", environment="test", created_by="t")[1]
    finally:
        db.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Sink, str, ServerSettings, dict[str, str]]]:
    sink = Sink(tmp_path / "mails")
    sink.start()
    db_path, admin_key = _store(tmp_path)
    try:
        yield sink, db_path, _settings(db_path, sink), {"X-API-Key": admin_key}
    finally:
        sink.stop()


def test_a_failing_or_hanging_channel_harms_no_other(setup: tuple[Sink, str, ServerSettings, dict[str, str]]) -> None:
    sink, db_path, settings, admin = setup
    stuck = Stuck()
    app = create_app(settings, channels=[*configured(settings), Broken(), stuck])
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            approval_id = _ask(client, admin, _agent(db_path))
            [(envelope, message)] = sink.wait_for(1)  # e-mail goes on
            assert envelope["to"] == ["lena@example.com"] and approval_id in message["Subject"]
            assert stuck.entered.wait(10)  # and the hanging channel is still inside its call

            def broken() -> dict[str, Any]:
                found = client.get("/v1/admin/integrations", headers=admin).json()["channels"]
                return {c["name"]: c for c in found}

            until(lambda: broken()["broken"]["failures"] >= 2)  # retried, each failure counted
            state = broken()
            assert state["broken"]["last_error"] == "ConnectionError: the service is down"
            assert state["broken"]["configured"] and state["stuck"]["messages"] == 0
            assert state["email"]["messages"] == 1 and state["slack"]["configured"] is False
            tested = client.post("/v1/admin/channels/broken/test", headers=admin).json()
            assert tested["ok"] is False and tested["detail"] == "ConnectionError: the service is down"
            assert client.post("/v1/admin/channels/slack/test", headers=admin).status_code == 409
        # the server stopped though the stuck channel never returned
    finally:
        stuck.release.set()


def test_replicas_announce_each_approval_once(setup: tuple[Sink, str, ServerSettings, dict[str, str]]) -> None:
    sink, db_path, settings, admin = setup
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as one,
        TestClient(create_app(settings), raise_server_exceptions=False) as two,
    ):
        agent = _agent(db_path)
        ids = [_ask(one, admin, agent), _ask(two, admin, agent), _ask(one, admin, agent)]
        mails = sink.wait_for(3)
        assert sorted(i for i in ids for _, m in mails if i in m["Subject"]) == sorted(ids)

        def drawn() -> bool:
            found = one.get("/v1/admin/integrations", headers=admin).json()["channels"]
            return any(c["name"] == "email" and c["messages"] == 3 for c in found)

        until(drawn)
        assert len(sink.mails()) == 3  # once each, whichever replica claimed it


class Picky(Broken):
    """A channel whose service refuses some approvals' messages for good, and takes the others."""

    name = "picky"

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.announced: list[str] = []

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        if a.id in self.refused:
            raise ConnectionError(f"{a.id} is refused")
        self.announced.append(a.id)
        return Delivery({"id": a.id})


def test_messages_that_keep_failing_cannot_crowd_out_the_others(tmp_path: Path, clock: ManualClock) -> None:
    from clearance._guard._record import record_call
    from clearance.policy import parse_policy

    db_path, _ = _store(tmp_path)
    db = Database(db_path)
    policy = parse_policy(POLICY)
    ids = [
        record_call(
            db, policy, agent="a", environment="test", tool="issue_refund", args={"amount": 900}, session="s"
        ).approval_id
        for _ in range(51)
    ]
    picky = Picky()
    picky.refused = {str(i) for i in ids[:50]}  # more than one pass takes, and older than the last
    try:
        with pytest.raises(Undelivered, match="50 undelivered"):
            deliver(db, picky)  # the 50 oldest: every one fails, the service looks down
        assert picky.announced == []
        assert deliver(db, picky) == 1  # the 50 wait for their backoff: the one never tried goes
        assert picky.announced == [ids[50]]
    finally:
        db.close()


def test_a_failed_message_waits_for_its_own_backoff_then_is_parked(tmp_path: Path, clock: ManualClock) -> None:
    from clearance._guard._record import record_call
    from clearance.policy import parse_policy

    db_path, _ = _store(tmp_path)
    db = Database(db_path)
    policy = parse_policy(POLICY)
    picky = Picky()

    def ask() -> str:
        return str(
            record_call(
                db, policy, agent="a", environment="test", tool="issue_refund", args={"amount": 900}, session="s"
            ).approval_id
        )

    try:
        poison = ask()
        picky.refused = {poison}
        assert deliver(db, picky) == 0  # one message failed: no reason to slow the channel
        fresh = ask()
        assert deliver(db, picky) == 1 and picky.announced == [fresh]  # the failed one waits
        clock.advance(0.9)
        assert deliver(db, picky) == 0  # still waiting: at least a second after a first failure
        for failing in range(2, messages.PARK_AFTER + 1):
            clock.advance(messages.MOST_SECONDS)
            deliver(db, picky)
            assert messages.tally(db, picky.name).failures == failing
        assert messages.tally(db, picky.name).parked == 1
        clock.advance(messages.MOST_SECONDS)
        assert messages.due(db, picky.name, now_us=now_us(), stale_us=60_000_000) == []  # parked
        assert messages.backoff(1) >= 1 and messages.backoff(50) <= messages.MOST_SECONDS
    finally:
        db.close()


class Poison(Picky):
    """A channel whose service refuses the first approval it is told of, for ever."""

    name = "poison"

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0
        self.changed = threading.Condition()

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        with self.changed:
            self.refused = self.refused or {a.id}
            self.tries += a.id in self.refused
            self.changed.notify_all()
            return super().announce(a, to)

    def wait(self, condition: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, 10)


def test_a_message_that_keeps_failing_holds_up_no_new_approval(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "PARK_AFTER", 7)
    db_path, admin_key = _store(tmp_path)
    admin, poison = {"X-API-Key": admin_key}, Poison()
    with TestClient(create_app(ServerSettings(database_url=db_path), channels=[poison])) as client:
        agent = _agent(db_path)
        _ask(client, admin, agent)

        def announced_at_once(amount: int) -> None:  # the clock stands still: only the change wakes the channel
            r = client.post(
                "/v1/check", headers={"X-API-Key": agent}, json={"tool": "issue_refund", "args": {"amount": amount}}
            )
            poison.wait(lambda: r.json()["approval_id"] in poison.announced)

        def state() -> dict[str, Any]:
            found = client.get("/v1/admin/integrations", headers=admin).json()["channels"]
            return next(c for c in found if c["name"] == "poison")

        for tries in range(1, 7):
            until(lambda: state()["failures"] >= tries)  # noqa: B023 (counted: its backoff runs from now)
            clock.advance(2**tries)  # past its backoff (and long before the approval expires): tried again
        announced_at_once(901)
        until(lambda: state()["failures"] >= 7)
        announced_at_once(902)
        assert state()["failures"] == 7 and state()["parked"] == 1 and state()["messages"] == 2
        clock.advance(2**8)  # parked: no longer tried
        announced_at_once(903)
        assert poison.tries == 7


PLUGIN_CHANNEL = """
from clearance.server.channels import Channel, Delivery


class Pager(Channel):
    name = "pager"

    @classmethod
    def from_settings(cls, settings):
        return cls()

    @classmethod
    def identity(cls, external_id):
        return external_id

    @classmethod
    def describe(cls, settings):
        return {"configured": True}

    def shows(self, a):
        return str(a.status)

    def announce(self, a, to):
        return Delivery(ref=a.id, sent=len(to))

    def update(self, a, message, to):
        return Delivery(ref=a.id, sent=len(to))

    def test(self, by):
        return "paged"
"""


def test_channels_are_found_in_their_modules_and_through_entry_points(tmp_path: Path) -> None:
    """A new channel touches only its own module: the built-in ones are found, another package's by its entry point."""

    assert {"email", "slack"} <= set(kinds())
    (tmp_path / "pager_channel.py").write_text(PLUGIN_CHANNEL)
    info = tmp_path / "pager_channel-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pager-channel\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[clearance.channels]\npager = pager_channel:Pager\n")
    sys.path.insert(0, str(tmp_path))
    kinds.cache_clear()
    try:
        assert kinds()["pager"].__name__ == "Pager"
        assert "pager" in [c.name for c in configured(ServerSettings(database_url=str(tmp_path / "x.db")))]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pager_channel", None)
        kinds.cache_clear()


class Recorder(Broken):
    """A channel that takes everything, and remembers what it was asked to send."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        self.calls.append(("announce", a.status, None))
        return Delivery({"n": len(self.calls)})

    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        self.calls.append(("update", a.status, message.ref))
        return Delivery(message.ref or {})


def _pending(db: Database, policy: str = POLICY) -> str:
    from clearance._guard._record import record_call
    from clearance.policy import parse_policy

    return str(
        record_call(
            db,
            parse_policy(policy),
            agent="a",
            environment="test",
            tool="issue_refund",
            args={"amount": 900},
            session="s",
        ).approval_id
    )


def test_a_replica_that_saw_no_message_updates_the_one_another_sent(any_store: str) -> None:
    """B found the approval without a message; A announced it, then it was decided: B updates A's message."""
    from clearance import _decisions as decisions
    from clearance.server.channels import _deliver_one

    one, two = Database(any_store), Database(any_store)
    recorder = Recorder()
    try:
        approval_id = _pending(one)
        [(a, stale)] = messages.due(two, recorder.name, now_us=now_us(), stale_us=60_000_000)
        assert stale.ref is None
        assert deliver(one, recorder) == 1  # A announces it
        decisions.decide(
            one, approval_id, approve=False, by=decisions.Decider("user:lena", frozenset({"approver", "support-lead"}))
        )
        assert _deliver_one(two, recorder, a, stale, 60_000_000) == 1  # B, with what it read before
        assert recorder.calls == [("announce", "pending", None), ("update", "denied", {"n": 1})]
        assert messages.message(one, approval_id, recorder.name) == Message(
            approval_id, recorder.name, {"n": 1}, "denied/0/0", "denied/0/0"
        )
    finally:
        one.close()
        two.close()


def _plugin(tmp_path: Path, name: str, entry_points: str) -> None:
    """A fake installed package on sys.path: its dist-info names `entry_points` in clearance.channels."""
    info = tmp_path / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[clearance.channels]\n{entry_points}\n")


def test_a_broken_or_impostor_plugin_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin that cannot load stops nothing; one named like a built-in channel does not replace it."""
    from clearance.server.channels.email import Email

    (tmp_path / "broken_channel.py").write_text("raise ImportError('needs a library that is not installed')\n")
    (tmp_path / "impostor_channel.py").write_text(PLUGIN_CHANNEL.replace('name = "pager"', 'name = "email"'))
    _plugin(tmp_path, "broken_channel", "broken = broken_channel:Broken")
    _plugin(tmp_path, "impostor_channel", "email = impostor_channel:Pager")
    sys.path.insert(0, str(tmp_path))
    kinds.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="clearance.channels"):
            found = kinds()
        assert {"email", "slack"} <= set(found) and found["email"] is Email
        assert [c.name for c in configured(ServerSettings(database_url=str(tmp_path / "x.db")))] == []
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert "broken = broken_channel:Broken" in warned and "ImportError" in warned
        assert "impostor_channel:Pager" in warned and "built-in" in warned
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_channel", None)
        sys.modules.pop("impostor_channel", None)
        kinds.cache_clear()


class Flaky(Recorder):
    """A channel whose service is down while `down` is set, and takes everything otherwise."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.down, self.tries = True, 0

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        self.tries += 1
        if self.down:
            raise ConnectionError("the service is down")
        return super().announce(a, to)

    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        self.tries += 1
        if self.down:
            raise ConnectionError("the service is down")
        return super().update(a, message, to)


def test_a_long_outage_of_the_service_parks_nothing(tmp_path: Path, clock: ManualClock) -> None:
    """Every message failing together is the service down, not the messages: none is parked for it."""
    db_path, _ = _store(tmp_path)
    db, flaky = Database(db_path), Flaky()
    try:
        ids = [_pending(db) for _ in range(3)]
        passes = 3 * messages.PARK_AFTER
        for _ in range(passes):  # hours of outage
            with pytest.raises(Undelivered, match="3 undelivered"):
                deliver(db, flaky)
            assert deliver(db, flaky) == 0  # each waits a little before it is tried again
            clock.advance(messages.OUTAGE_SECONDS)
        tally = messages.tally(db, flaky.name)
        assert tally.failures == 3 * passes and tally.parked == 0  # every failure counted, none parked
        flaky.down = False
        assert deliver(db, flaky) == 3  # the service is back: every approval is announced at once
        assert sorted(str(m.approval_id) for i in ids if (m := messages.message(db, i, flaky.name))) == sorted(ids)
    finally:
        db.close()


def test_a_parked_message_is_tried_again_hourly_and_when_its_approval_changes(
    tmp_path: Path, clock: ManualClock
) -> None:
    from clearance import _decisions as decisions
    from clearance._store import _approvals as approvals
    from clearance._wire import ApprovalStatus

    db_path, _ = _store(tmp_path)
    db, flaky = Database(db_path), Flaky()
    lena = decisions.Decider("user:lena", frozenset({"approver", "support-lead"}))
    try:
        approval_id = _pending(db, POLICY.replace("timeout: 30m", "timeout: 24h"))  # pending for hours
        for _ in range(messages.PARK_AFTER):  # it alone fails, again and again: parked
            deliver(db, flaky)
            clock.advance(messages.MOST_SECONDS)
        assert messages.tally(db, flaky.name).parked == 1 and flaky.tries == messages.PARK_AFTER
        clock.advance(messages.PARKED_SECONDS / 2 - messages.MOST_SECONDS)
        assert deliver(db, flaky) == 0 and flaky.tries == messages.PARK_AFTER  # parked: left alone a while
        clock.advance(messages.PARKED_SECONDS / 2)
        flaky.down = False
        assert deliver(db, flaky) == 1 and flaky.calls == [("announce", "pending", None)]  # but tried again
        assert messages.tally(db, flaky.name).parked == 0

        flaky.down = True
        decisions.decide(db, approval_id, approve=True, by=lena)
        for _ in range(messages.PARK_AFTER):  # its update fails until it is parked
            deliver(db, flaky)
            clock.advance(messages.MOST_SECONDS)
        assert messages.tally(db, flaky.name).parked == 1
        flaky.down = False
        with db.write() as cur:  # the approved call ran: its message must say so, parked or not
            assert approvals.finish(db, cur, approval_id, ApprovalStatus.EXECUTED, now_us=now_us())
        assert deliver(db, flaky) == 1 and flaky.calls[-1] == ("update", "executed", {"n": 1})
        assert messages.tally(db, flaky.name).parked == 0
    finally:
        db.close()
