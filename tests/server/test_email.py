"""E-mail, against a real SMTP server (aiosmtpd in a subprocess) that keeps what it receives."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from clearance import _decisions
from clearance._clock import ManualClock
from clearance._store import Approval, Database
from clearance._store import _approvals as approvals
from clearance._store import _channels as messages
from clearance._store import _keys as keys
from clearance._store import _users as users
from clearance._store._channels import Message
from clearance.server import ServerSettings, create_app
from clearance.server.channels import Delivery, deliver
from clearance.server.channels.email import Email

from .._wait import until
from .conftest import Server, _free_port
from .test_slack import POLICY

PUBLIC = "https://clearance.example.com"
SINK = Path(__file__).with_name("smtp_sink.py")


class Sink:
    """The SMTP server's process, which a test can start late or stop, and the mails it kept."""

    def __init__(self, where: Path, *faults: str) -> None:
        self.port, self.where, self.faults = _free_port(), where, faults
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [sys.executable, str(SINK), str(self.port), str(self.where), *self.faults]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def mails(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.where.glob("*.json"))]

    def wait_for(self, count: int, timeout: float = 15) -> list[tuple[dict[str, Any], EmailMessage]]:
        until(lambda: len(self.mails()) >= count, f"{count} mails", timeout)
        return [(m, _parsed(m["data"])) for m in self.mails()]


def _parsed(data: str) -> EmailMessage:
    found = message_from_bytes(data.encode("utf-8", "surrogateescape"), policy=policy.default)
    assert isinstance(found, EmailMessage)
    return found


def people(db_url: str) -> None:
    """The people of these tests, and who of them has an address."""
    db = Database(db_url)
    for name, roles, address in (
        ("lena", ["approver", "support-lead"], "lena@example.com"),
        ("pia", ["approver"], "pia@example.com"),  # not a lead: not mailed
        ("omar", ["approver", "support-lead"], None),  # a lead without an address
        ("dora", ["approver", "support-lead"], "dora@example.com"),  # a lead, disabled below
        ("fay", ["approver", "finance"], "fay@example.com"),  # decides what is escalated to finance
    ):
        users.create(db, name, "correct horse battery", roles, by="t")
        if address:
            users.update(db, name, identities={"email": address}, by="t")
    users.update(db, "dora", disabled=True, by="t")
    db.close()


@contextlib.contextmanager
def serving(
    tmp_path: Path, db_url: str, *faults: str, policy: str = POLICY, new: bool = True
) -> Iterator[dict[str, Any]]:
    """A server on `db_url` mailing through a real SMTP server (with `faults`, see smtp_sink.py).

    `new`: the store is new, and the people are added to it.
    """
    sink = Sink(tmp_path / "mails", *faults)
    if new:
        people(db_url)
    db = Database(db_url)
    ids = {
        scope: keys.create(db, name=scope, scopes=[scope], agent=agent, environment="test", created_by="t")[1]
        for scope, agent in (("admin", None), ("agent", "refunds"))
    }
    db.close()
    settings = ServerSettings(
        database_url=db_url,
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        smtp_from="Clearance <approvals@clearance.example.com>",
        smtp_starttls=False,
        smtp_timeout=5,
        public_url=PUBLIC + "/",
    )
    s = {"sink": sink, "db": db_url, "keys": ids, "settings": settings}
    sink.start()
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            admin = {"X-API-Key": ids["admin"]}
            rev = client.post("/v1/policies", headers=admin, json={"text": policy}).json()["id"]
            client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
            yield {**s, "client": client}
    finally:
        sink.stop()


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with serving(tmp_path, str(tmp_path / "mail.db")) as s:
        yield s


def pending(s: dict[str, Any], **args: Any) -> str:
    r = s["client"].post(
        "/v1/check",
        headers={"X-API-Key": s["keys"]["agent"]},
        json={"tool": "issue_refund", "args": {"order_id": "A-1", "amount": 850, **args}, "session_id": "ses-1"},
    )
    return str(r.json()["approval_id"])


def email_state(s: dict[str, Any]) -> dict[str, Any]:
    admin = {"X-API-Key": s["keys"]["admin"]}
    [found] = [
        c for c in s["client"].get("/v1/admin/integrations", headers=admin).json()["channels"] if c["name"] == "email"
    ]
    return dict(found)


def drawn(s: dict[str, Any], approval_id: str, state: str) -> Callable[[], bool]:
    def check() -> bool:
        db = Database(s["db"])
        try:
            found = messages.message(db, approval_id, "email")
        finally:
            db.close()
        return found is not None and found.shown == state

    return check


def test_a_pending_approval_is_mailed_once_to_the_people_who_may_decide_it(mail: dict[str, Any]) -> None:
    approval_id = pending(mail)
    [(envelope, message)] = mail["sink"].wait_for(1)
    assert envelope["to"] == ["lena@example.com"]  # a lead with an address, enabled
    assert envelope["from"] == "approvals@clearance.example.com"
    assert (
        message["To"] == "lena@example.com" and message["Subject"] == f"Approval needed: issue_refund ({approval_id})"
    )
    assert message["Auto-Submitted"] == "auto-generated" and message["Message-ID"].endswith("@clearance.example.com>")
    body = message.get_content()
    for expected in (
        "Tool: issue_refund",
        "Agent: refunds (test)",
        "Reason: Refunds over $200 need a support lead",
        "Expires: ",
        "Who may decide: role:support-lead",
        "  amount: 850",
        f"{PUBLIC}/#/approvals/{approval_id}",
    ):
        assert expected in body
    assert re.findall(r"https?://\S+", body) == [f"{PUBLIC}/#/approvals/{approval_id}"]  # the one link
    until(drawn(mail, approval_id, "pending"))
    db = Database(mail["db"])
    try:  # another pass, here or on a replica, sends nothing
        assert deliver(db, mail["client"].app.state.channels["email"]) == 0
    finally:
        db.close()
    assert len(mail["sink"].mails()) == 1
    state = email_state(mail)
    assert state["configured"] is True and (state["messages"], state["sent"], state["failures"]) == (1, 1, 0)
    assert state["settings"]["host"] == "127.0.0.1" and state["settings"]["password_set"] is False


def test_hostile_arguments_cannot_add_headers_or_lines(mail: dict[str, Any]) -> None:
    injected = "A-1\r\nBcc: evil@evil.example\r\n\r\nApprove here: https://evil.example/ok"
    approval_id = pending(mail, order_id=injected, file_name="refund\u202etxt.exe")
    [(envelope, message)] = mail["sink"].wait_for(1)
    assert envelope["to"] == ["lena@example.com"] and message["Bcc"] is None
    assert sorted(message.keys()) == sorted(
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "Auto-Submitted",
            "Content-Type",
            "Content-Transfer-Encoding",
            "MIME-Version",
        ]
    )
    body = message.get_content()
    [line] = [x for x in body.splitlines() if x.startswith("  order_id:")]
    crlf = "⟨U+000D CR⟩⟨U+000A LF⟩"
    assert line == f"  order_id: A-1{crlf}Bcc: evil@evil.example{crlf}{crlf}Approve here: https://evil.example/ok"
    assert not any(x.startswith(("Bcc", "Approve here")) for x in body.splitlines())  # no line of its own
    assert "  file_name: refund⟨U+202E RLO⟩txt.exe" in body and "\u202e" not in body
    assert "⚠ Look closely: " in body and "/file_name (U+202E RLO)" in body
    assert approval_id in message["Subject"]
    admin = {"X-API-Key": mail["keys"]["admin"]}
    for bad in ("lena@example.com\r\nBcc: evil@evil.example", "Lena <lena@example.com>", "lena@exa mple.com", "a@b"):
        r = mail["client"].patch("/v1/users/pia", headers=admin, json={"identities": {"email": bad}})
        assert r.status_code == 422 and "is not an e-mail address" in r.json()["error"]["message"]
    r = mail["client"].patch("/v1/users/pia", headers=admin, json={"identities": {"pager": "123"}})
    assert r.status_code == 422 and "no approval channel is called 'pager'" in r.json()["error"]["message"]


def test_identities_are_set_shown_and_unique(mail: dict[str, Any]) -> None:
    client, admin = mail["client"], {"X-API-Key": mail["keys"]["admin"]}
    r = client.patch(
        "/v1/users/pia", headers=admin, json={"identities": {"email": "Pia@Example.COM", "slack": "U0PIA"}}
    )
    assert r.status_code == 200 and r.json()["identities"] == {"email": "Pia@example.com", "slack": "U0PIA"}
    assert r.json()["slack_user_id"] == "U0PIA"  # as older clients read it
    taken = client.patch("/v1/users/omar", headers=admin, json={"identities": {"email": "lena@example.com"}})
    assert taken.status_code == 422 and "already lena" in taken.json()["error"]["message"]
    cleared = client.patch("/v1/users/pia", headers=admin, json={"slack_user_id": None, "identities": {"email": None}})
    assert cleared.json()["identities"] == {} and cleared.json()["slack_user_id"] is None


def test_a_mail_server_that_is_down_is_retried_and_mails_once(mail: dict[str, Any]) -> None:
    mail["sink"].stop()
    approval_id = pending(mail)
    until(lambda: email_state(mail)["failures"] >= 1)
    state = email_state(mail)
    assert state["messages"] == 0 and "ConnectionRefusedError" in state["last_error"]
    mail["sink"].start()
    [(envelope, message)] = mail["sink"].wait_for(1, timeout=40)  # backoff with full jitter
    assert envelope["to"] == ["lena@example.com"] and approval_id in message["Subject"]
    until(drawn(mail, approval_id, "pending"))
    assert len(mail["sink"].mails()) == 1 and email_state(mail)["messages"] == 1


@pytest.mark.parametrize("approve", [True, False])
def test_a_decision_made_elsewhere_is_followed_up_in_the_same_thread(mail: dict[str, Any], approve: bool) -> None:
    approval_id = pending(mail)
    [(_, first)] = mail["sink"].wait_for(1)
    until(drawn(mail, approval_id, "pending"))
    db = Database(mail["db"])
    _decisions.decide(
        db, approval_id, approve=approve, by=_decisions.Decider("cli-user", trusted=True), note="ok\nBcc: x"
    )
    db.close()
    _, (envelope, follow_up) = mail["sink"].wait_for(2)
    assert envelope["to"] == ["lena@example.com"]
    assert follow_up["In-Reply-To"] == first["Message-ID"] == follow_up["References"]
    word = "Approved" if approve else "Denied"
    assert follow_up["Subject"] == f"{word} by cli-user: issue_refund ({approval_id})"
    body = follow_up.get_content()
    assert body.splitlines()[0].startswith(f"{word.lower()} by cli-user at ") and "ok⟨U+000A LF⟩Bcc: x" in body
    until(drawn(mail, approval_id, "approved" if approve else "denied"))
    if approve:  # the call runs: a change the mail does not show, so nothing more is sent
        db = Database(mail["db"])
        with db.write() as cur:
            approvals.finish(db, cur, approval_id, "executed", now_us=1, result_json="1")
        db.close()
        until(drawn(mail, approval_id, "approved"))
    assert len(mail["sink"].mails()) == 2


def test_the_link_decides_nothing_without_signing_in(mail: dict[str, Any]) -> None:
    approval_id = pending(mail)
    [(_, message)] = mail["sink"].wait_for(1)
    [link] = re.findall(r"https?://\S+", message.get_content())
    client = mail["client"]
    path, fragment = link.removeprefix(PUBLIC).split("#", 1)
    assert fragment == f"/approvals/{approval_id}"  # the fragment never reaches the server
    page = client.get(path or "/")  # what a mail scanner following the link gets: the sign-in page's app
    assert page.status_code == 200 and approval_id not in page.text
    assert client.get(f"/v1/approvals/{approval_id}").status_code == 401
    assert client.post(f"/v1/approvals/{approval_id}/approve", json={}).status_code == 401
    db = Database(mail["db"])
    assert approvals.get(db, approval_id).status == "pending"
    db.close()


def test_an_admin_test_mail_goes_to_the_sender(mail: dict[str, Any]) -> None:
    admin = {"X-API-Key": mail["keys"]["admin"]}
    sent = mail["client"].post("/v1/admin/channels/email/test", headers=admin).json()
    assert sent["ok"] is True and sent["detail"].startswith("mailed to approvals@clearance.example.com")
    [(envelope, message)] = mail["sink"].wait_for(1)
    assert envelope["to"] == ["approvals@clearance.example.com"] and message["Subject"] == "Clearance test message"
    mail["sink"].stop()
    down = mail["client"].post("/v1/admin/channels/email/test", headers=admin).json()
    assert down["ok"] is False and down["detail"].startswith("ConnectionRefusedError")


def test_the_password_is_never_sent_in_clear_text_unless_allowed(tmp_path: Path) -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    listening.setblocking(False)
    plain = ServerSettings(
        database_url=str(tmp_path / "plain.db"),
        smtp_host="127.0.0.1",
        smtp_port=listening.getsockname()[1],
        smtp_from="approvals@clearance.example.com",
        smtp_username="relay",
        smtp_password="hunter2",
        smtp_starttls=False,
        smtp_timeout=0.3,
        public_url=PUBLIC,
    )
    try:
        with pytest.raises(ValueError, match="clear text"):  # a configuration error at start
            create_app(plain)
        assert "clear text" in str(Email.describe(plain)["problem"])
        channel = Email(host="127.0.0.1", port=plain.smtp_port, sender="a@clearance.example.com", public_url=PUBLIC)
        channel.username, channel.password, channel.starttls = "relay", "hunter2", False
        db = Database(plain.database_url)
        admin = {
            "X-API-Key": keys.create(db, name="a", scopes=["admin"], agent=None, environment="t", created_by="t")[1]
        }
        db.close()
        with TestClient(create_app(plain.model_copy(update={"smtp_host": None}), channels=[channel])) as client:
            tested = client.post("/v1/admin/channels/email/test", headers=admin).json()
        assert tested["ok"] is False and "clear text" in tested["detail"]
        with pytest.raises(BlockingIOError):
            listening.accept()  # refused before connecting
        allowed = plain.model_copy(update={"smtp_allow_plain_auth": True})
        assert Email.describe(allowed)["problem"] is None
        opted_in = Email.from_settings(allowed)
        assert opted_in is not None
        with pytest.raises(OSError):  # it connects (and times out: this server never greets)
            opted_in.test("t")
        listening.accept()[0].close()
    finally:
        listening.close()


def test_a_mail_server_that_never_answers_times_out_and_is_counted(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never greets
    db_path = str(tmp_path / "silent.db")
    db = Database(db_path)
    users.create(db, "lena", "correct horse battery", ["approver", "support-lead"], by="t")
    users.update(db, "lena", identities={"email": "lena@example.com"}, by="t")
    channel = Email(
        host="127.0.0.1",
        port=silent.getsockname()[1],
        sender="a@clearance.example.com",
        public_url=PUBLIC,
        timeout=0.3,
        starttls=False,
    )
    from clearance._guard._record import record_call
    from clearance.policy import parse_policy

    call = record_call(
        db, parse_policy(POLICY), agent="a", environment="test", tool="issue_refund", args={"amount": 900}, session="s"
    )
    assert call.approval_id is not None
    assert deliver(db, channel) == 0  # counted on its message, which waits for its backoff
    tally = messages.tally(db, "email")
    assert tally.failures == 1 and tally.messages == 0 and "timed out" in (tally.last_error or "")
    db.close()
    silent.close()


def test_email_addresses_are_checked() -> None:
    assert Email.identity("Lena.K+ops@Example.COM") == "Lena.K+ops@example.com"
    for bad in (
        "",
        "lena",
        "@example.com",
        "lena@",
        "lena@example",
        "a\r\n@example.com",
        "lena@example.com\n",
        "x" * 65 + "@example.com",
        '"a b"@example.com',
    ):
        with pytest.raises(ValueError, match="not an e-mail address"):
            Email.identity(bad)
    with pytest.raises(ValueError):
        ServerSettings(smtp_from="a@b.example\r\nBcc: evil@evil.example")


# -- follow-ups on the server's own moves, replicas, and mail sent twice --------------------------

TIMED = POLICY.replace("timeout: 30m", "timeout: 10m")
ESCALATING = TIMED.replace(
    "[role:support-lead]}",
    "[role:support-lead], on_timeout: escalate, escalate_to: [role:finance], escalation_timeout: 10m}",
)
assert TIMED != POLICY and ESCALATING != TIMED
DOMAIN = "@clearance.example.com>"


def _move(clock: ManualClock, seconds: float) -> None:
    """Move the clock once the server's sweeper sleeps on it (so the move wakes it)."""
    clock.wait_parked("approval sweep")
    clock.advance(seconds)


def test_an_expiry_is_followed_up_in_the_same_thread(clock: ManualClock, tmp_path: Path, any_store: str) -> None:
    with serving(tmp_path, any_store, policy=TIMED) as s:
        approval_id = pending(s)
        [(_, first)] = s["sink"].wait_for(1)
        assert first["Message-ID"] == f"<approval.{approval_id}{DOMAIN}"  # the same on every attempt and replica
        until(drawn(s, approval_id, "pending"))
        _move(clock, 601)  # nobody decides: the server's sweeper expires it
        _, (envelope, follow_up) = s["sink"].wait_for(2)
        assert envelope["to"] == ["lena@example.com"]
        assert follow_up["Subject"] == f"Expired: issue_refund ({approval_id})"
        assert follow_up["In-Reply-To"] == first["Message-ID"] == follow_up["References"]
        assert follow_up["Message-ID"] == f"<expired.{approval_id}{DOMAIN}"
        assert follow_up.get_content().startswith("expired by system at ")
        until(drawn(s, approval_id, "expired"))
        assert len(s["sink"].mails()) == 2


def test_an_escalation_mails_the_new_approvers_and_its_expiry_tells_everyone(
    clock: ManualClock, tmp_path: Path, any_store: str
) -> None:
    with serving(tmp_path, any_store, policy=ESCALATING) as s:
        approval_id = pending(s)
        [(_, first)] = s["sink"].wait_for(1)
        until(drawn(s, approval_id, "pending"))
        _move(clock, 601)  # the leads did not decide in time: finance may now
        _, (envelope, escalated) = s["sink"].wait_for(2)
        assert envelope["to"] == ["fay@example.com"]  # only the new approvers: the leads have their mail
        assert escalated["Subject"] == f"Escalated: Approval needed: issue_refund ({approval_id})"
        assert escalated["In-Reply-To"] == first["Message-ID"]
        assert escalated["Message-ID"] == f"<escalated.{approval_id}{DOMAIN}"
        body = escalated.get_content()
        assert "Who may decide: role:finance" in body and f"{PUBLIC}/#/approvals/{approval_id}" in body
        until(drawn(s, approval_id, "escalated"))
        _move(clock, 601)  # nor did finance: it expires
        *_, (envelope, expired) = s["sink"].wait_for(3)
        assert envelope["to"] == ["lena@example.com", "fay@example.com"]  # everyone mailed hears the end
        assert expired["Subject"] == f"Expired: issue_refund ({approval_id})"
        assert expired["In-Reply-To"] == first["Message-ID"]
        until(drawn(s, approval_id, "expired"))
        assert len(s["sink"].mails()) == 3


def test_a_replica_that_died_announcing_leaves_it_to_another_once_its_claim_lapses(
    clock: ManualClock, tmp_path: Path, any_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = socket.socket()  # the first replica's mail server: accepts, never greets
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    silent.settimeout(30)
    for name, value in {
        "CLEARANCE_SMTP_HOST": "127.0.0.1",
        "CLEARANCE_SMTP_PORT": str(silent.getsockname()[1]),
        "CLEARANCE_SMTP_FROM": "approvals@clearance.example.com",
        "CLEARANCE_SMTP_STARTTLS": "false",
        "CLEARANCE_SMTP_TIMEOUT": "60",
        "CLEARANCE_PUBLIC_URL": PUBLIC,
    }.items():
        monkeypatch.setenv(name, value)
    people(any_store)
    dying = Server(any_store, _free_port(), tmp_path / "dying.log")
    dying.start()
    try:
        dying.publish(POLICY)
        r = httpx.post(
            f"{dying.base}/v1/check",
            headers={"X-API-Key": dying.agent},
            json={"tool": "issue_refund", "args": {"amount": 850}},
        )
        approval_id = r.json()["approval_id"]
        connection, _ = silent.accept()  # it claimed the announcement, and is sending it
        dying.kill()  # and dies before it could
        connection.close()
    finally:
        silent.close()
        dying.stop()
    db = Database(any_store)
    try:
        with db.read() as cur:
            cur.execute(
                db.sql("SELECT claimed_at_us FROM channel_messages WHERE approval_id = :id"), {"id": approval_id}
            )
            [(claimed_at_us,)] = cur.fetchall()
    finally:
        db.close()
    lapse = (claimed_at_us + Email.claim_seconds * 1_000_000) / 1e6
    clock.set(lapse - 1)
    with serving(tmp_path, any_store, new=False) as s:  # another replica, with a mail server that works
        clock.wait_parked("email delivery")  # it looked, and left the claimed announcement alone
        assert s["sink"].mails() == []
        clock.advance(2)  # the dead replica's claim lapses
        [(envelope, message)] = s["sink"].wait_for(1)
        assert envelope["to"] == ["lena@example.com"] and message["Message-ID"] == f"<approval.{approval_id}{DOMAIN}"
        until(drawn(s, approval_id, "pending"))
        clock.advance(Email.claim_seconds + 1)  # its own claim is long done with: nothing more is sent
        clock.wait_parked("email delivery")
        assert len(s["sink"].mails()) == 1
        assert (email_state(s)["messages"], email_state(s)["sent"]) == (1, 1)


def test_a_mail_whose_acceptance_was_lost_is_sent_again_as_the_same_mail(tmp_path: Path) -> None:
    with serving(tmp_path, str(tmp_path / "mail.db"), "--drop", "1") as s:  # kept the first, then hung up
        approval_id = pending(s)
        [(envelope, lost), (again, message)] = s["sink"].wait_for(2)
        until(drawn(s, approval_id, "pending"))
        undated = [{**e, "data": re.sub(r"Date: [^\r\n]*\r\n", "", e["data"])} for e in (envelope, again)]
        assert undated[0] == undated[1]  # sent twice (at least once; a second or more apart), the same mail
        assert lost["Message-ID"] == message["Message-ID"] == f"<approval.{approval_id}{DOMAIN}"
        state = email_state(s)
        assert (state["messages"], state["sent"], state["failures"]) == (1, 1, 1)
        assert "SMTPServerDisconnected" in state["last_error"]
        assert len(s["sink"].mails()) == 2


def test_a_mail_accepted_is_sent_once_though_the_goodbye_fails(tmp_path: Path) -> None:
    with serving(tmp_path, str(tmp_path / "mail.db"), "--quit-reply", "421 4.3.0 shutting down") as s:
        approval_id = pending(s)
        s["sink"].wait_for(1)
        until(drawn(s, approval_id, "pending"))
        state = email_state(s)
        assert (state["messages"], state["sent"], state["failures"]) == (1, 1, 0)
        assert len(s["sink"].mails()) == 1


class Held(Email):
    """E-mail that waits, inside `update`, until the test lets it go."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.entered, self.go = threading.Event(), threading.Event()

    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        self.entered.set()
        assert self.go.wait(10)
        return super().update(a, message, to)


def test_replicas_send_each_follow_up_once(tmp_path: Path, any_store: str) -> None:
    from clearance._guard._record import record_call
    from clearance.policy import parse_policy

    sink = Sink(tmp_path / "mails")
    sink.start()
    people(any_store)
    one, two = Database(any_store), Database(any_store)
    options: dict[str, Any] = {"host": "127.0.0.1", "port": sink.port, "sender": "a@clearance.example.com"}
    options |= {"public_url": PUBLIC, "starttls": False, "timeout": 5}
    held, other = Held(**options), Email(**options)
    first = threading.Thread(target=deliver, args=(one, held))
    try:
        call = record_call(
            one,
            parse_policy(POLICY),
            agent="a",
            environment="t",
            tool="issue_refund",
            args={"amount": 900},
            session="s",
        )
        assert call.approval_id is not None and deliver(one, other) == 1
        sink.wait_for(1)
        _decisions.decide(one, call.approval_id, approve=False, by=_decisions.Decider("cli-user", trusted=True))
        first.start()  # this replica claims the follow-up, and is held while sending it
        assert held.entered.wait(10)
        assert deliver(two, other) == 0  # the other sees it out of date too, but does not send it
        held.go.set()
        first.join(10)
        assert messages.message(two, call.approval_id, "email").shown == "denied"  # type: ignore[union-attr]
        [_, (_, follow_up)] = sink.wait_for(2)
        assert follow_up["Subject"].startswith("Denied by cli-user") and len(sink.mails()) == 2
    finally:
        held.go.set()
        if first.is_alive():
            first.join(10)
        one.close()
        two.close()
        sink.stop()
