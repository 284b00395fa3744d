"""E-mail: each pending approval mailed once to the people who may decide it, and a follow-up.

The mail shows the tool, the arguments as text, the rule's reason and the expiry, and links to
the approval in the dashboard (`CLEARANCE_PUBLIC_URL`), where an approver decides after signing
in. A mail never decides anything itself: there is no approve link, because mail scanners follow
links. When the approval is decided anywhere (or expires, or is cancelled), a short follow-up goes
to the same people in the same thread (`In-Reply-To`); an escalation mails the new approvers.

Delivery is at least once: a mail the SMTP server accepted whose answer never arrived (the
connection dropped) counts as failed and is sent again. Each mail of an approval has one
Message-ID, the same on every attempt and every replica (`<expired.apr_…@domain>`), so a mail
sent twice is recognisably the same mail, and mail programs that drop duplicates show it once.

Everything an agent controls is shown one value to a line, with line breaks, hidden,
direction-changing and look-alike characters as named tokens (`⟨U+202E RLO⟩`), so an argument
cannot fake a line of the mail (a second link, say); headers are built by the standard library,
which refuses a line break in any of them, and addresses are checked when they are set.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote

from ..._clock import now_us
from ..._store import Approval
from ..._store._channels import Message
from ..._visible import hazards, visible, warning
from ..._wire import DECISIONS, ApprovalStatus
from ...policy._functions import EMAIL_LOCAL_PART
from .._settings import ServerSettings
from . import Channel, ChannelError, Delivery, log
from . import _render as render

_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_LINE = 2000  # characters of one shown line
_POLICY = policy.SMTP.clone(max_line_length=998)  # folded at 78, a subject would start with a space


def _line(text: str) -> str:
    """Text on one line: a line break or tab becomes a token, so it cannot start a line of its own."""
    return render.cut(visible(text).replace("\n", "⟨U+000A LF⟩").replace("\t", "⟨U+0009 TAB⟩"), _LINE)


class Email(Channel):
    """Mail through an SMTP server (`CLEARANCE_SMTP_*`), with links to the dashboard."""

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        public_url: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        tls: bool = False,
        timeout: float = 10.0,
        allow_plain_auth: bool = False,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sender = sender
        self.public_url = public_url.rstrip("/")
        self.username, self.password = username, password
        self.starttls, self.tls = starttls and not tls, tls
        self.allow_plain_auth = allow_plain_auth
        self.domain = _sender_address(sender).domain

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Email | None:
        """E-mail, when the SMTP host, the sender and the dashboard's public URL are set.

        Raises:
            ValueError: When the sender is not one address, or a login would send the password
                in clear text (see `plain_auth_problem`).
        """
        if settings.smtp_host is None or settings.smtp_from is None or settings.public_url is None:
            return None
        _sender_address(settings.smtp_from)
        if (problem := plain_auth_problem(settings)) is not None:
            raise ValueError(problem)
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            public_url=settings.public_url,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password is not None else None,
            starttls=settings.smtp_starttls,
            tls=settings.smtp_tls,
            timeout=settings.smtp_timeout,
            allow_plain_auth=settings.smtp_allow_plain_auth,
        )

    @classmethod
    def identity(cls, external_id: str) -> str:
        """An e-mail address (`lena@example.com`), its domain in lower case, its local part as given.

        Mail is sent to it as given; the store takes an address as one person's whatever its case
        (`Lena@example.com` is `lena@example.com`: `_channels.CASELESS`).

        Raises:
            ValueError: When it is not one plain address (no name, no comments, no line breaks).
        """
        local, at, domain = external_id.rpartition("@")
        if not at or len(external_id) > 254 or len(local) > 64 or not EMAIL_LOCAL_PART.fullmatch(local):
            raise ValueError(f"{ascii(external_id)} is not an e-mail address (like lena@example.com)")
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"{ascii(external_id)} is not an e-mail address (like lena@example.com)")
        return f"{local}@{domain.lower()}"

    @classmethod
    def describe(cls, settings: ServerSettings) -> dict[str, str | bool | None]:
        """The server, the sender, the dashboard's URL, how the connection is secured."""
        return {
            "host": settings.smtp_host,
            "port": str(settings.smtp_port),
            "from": settings.smtp_from,
            "public_url": settings.public_url,
            "security": "tls" if settings.smtp_tls else "starttls" if settings.smtp_starttls else "none",
            "username_set": settings.smtp_username is not None,
            "password_set": settings.smtp_password is not None,
            "allow_plain_auth": settings.smtp_allow_plain_auth,
            "problem": plain_auth_problem(settings),
        }

    def shows(self, a: Approval) -> str:
        """Pending, escalated, or how it was decided (a call that ran was approved)."""
        if a.status is ApprovalStatus.PENDING:
            return "escalated" if a.escalated_at_us is not None else ApprovalStatus.PENDING
        return ApprovalStatus.APPROVED if a.status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED) else a.status

    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        """Mail the approval to the people who may decide it (nothing when none has an address)."""
        if not to:
            log.warning("no approver of %s has an e-mail address; nothing mailed", a.id)
            return Delivery({"message_id": None, "to": []}, sent=False)
        message_id = self._message_id(a, "approval")
        self._send(self._mail(f"{render.head(a)} ({a.id})", self._body(a), to, message_id=message_id))
        return Delivery({"message_id": message_id, "to": list(to)})

    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        """An escalation is mailed to the new approvers; a decision is told, once, to those mailed."""
        ref = dict(message.ref or {})
        mailed: list[str] = list(ref.get("to") or [])
        state, thread = self.shows(a), ref.get("message_id")
        if state == "escalated":
            new = [x for x in to if x not in mailed]
            if not new:
                return Delivery(ref, sent=False)
            message_id = self._message_id(a, "escalated")
            self._send(
                self._mail(
                    f"Escalated: {render.head(a)} ({a.id})", self._body(a), new, message_id=message_id, thread=thread
                )
            )
            return Delivery({**ref, "message_id": thread or message_id, "to": mailed + new})
        if state not in DECISIONS or message.drawn not in (ApprovalStatus.PENDING, "escalated") or not mailed:
            return Delivery(ref, sent=False)  # told already, or nobody to tell
        by = (
            f" by {visible(a.decided_by)}"
            if a.decided_by and state in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED)
            else ""
        )
        subject = f"{state.capitalize()}{by}: {_line(a.tool)} ({a.id})"
        body = "\n".join(
            [
                f"{_line(render.outcome(a))}.",
                "",
                f"{_line(a.tool)} for {_line(a.agent)}: {_line(a.reason)}",
                "",
                self._link(a),
            ]
        )
        self._send(self._mail(subject, body, mailed, message_id=self._message_id(a, state), thread=thread))
        return Delivery(ref)

    def test(self, by: str) -> str:
        """Mail a short message to the sender's own address."""
        address = _sender_address(self.sender).addr_spec
        body = f"Clearance test message, sent by {_line(by)} from the dashboard."
        self._send(self._mail("Clearance test message", body, [address], message_id=make_msgid(domain=self.domain)))
        return f"mailed to {address} through {self.host}:{self.port}"

    def _message_id(self, a: Approval, part: str) -> str:
        """The Message-ID of one mail of `a` (`part`: approval, escalated, or how it ended).

        The same on every attempt and every replica, so a mail sent twice reads as one mail.
        """
        plain = len(a.id) <= 64 and EMAIL_LOCAL_PART.fullmatch(a.id)
        key = a.id if plain else hashlib.sha256(a.id.encode()).hexdigest()[:40]
        return f"<{part}.{key}@{self.domain}>"

    def _link(self, a: Approval) -> str:
        return f"{self.public_url}/#/approvals/{quote(a.id, safe='')}"

    def _body(self, a: Approval) -> str:
        args = render.arguments(a)
        lines = [f"{render.head(a)} ({a.id})", "", f"Tool: {_line(a.tool)}"]
        lines += [_line(fact) for fact in render.facts(a)]
        lines += ["", "Decide in the dashboard, after signing in:", self._link(a), ""]
        alert = warning(hazards(args))
        if alert:
            lines += [f"⚠ Look closely: {_line(alert)}.", ""]
        lines.append("Arguments" + (" (edited)" if a.edited_shown is not None else "") + ":")
        lines += [f"  {_line(name)}: {_line(render.value(value))}" for name, value in args.items()] or ["  (none)"]
        lines += ["", "This mail cannot approve or deny anything; only a signed-in approver can, in the dashboard."]
        return "\n".join(lines) + "\n"

    def _mail(
        self, subject: str, body: str, to: Sequence[str], *, message_id: str, thread: str | None = None
    ) -> EmailMessage:
        mail = EmailMessage(policy=_POLICY)
        mail["From"] = self.sender
        mail["To"] = ", ".join(to)
        mail["Subject"] = _line(subject)  # the library also refuses a line break in a header
        mail["Date"] = format_datetime(datetime.fromtimestamp(now_us() / 1e6, UTC))
        mail["Message-ID"] = message_id
        mail["Auto-Submitted"] = "auto-generated"
        if thread:
            mail["In-Reply-To"] = thread
            mail["References"] = thread
        mail.set_content(body)
        return mail

    def _send(self, mail: EmailMessage) -> None:
        """Hand the mail to the SMTP server (on a worker thread; an error is a failed attempt).

        Raises:
            ChannelError: When a login would send the password in clear text (never connects).
        """
        if self.username is not None and not (self.tls or self.starttls or self.allow_plain_auth):
            raise ChannelError(_PLAIN_AUTH)
        context = ssl.create_default_context()
        smtp = (
            smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            if self.tls
            else smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        )
        try:
            if self.starttls:
                smtp.starttls(context=context)
            if self.username is not None:
                smtp.login(self.username, self.password or "")
            refused = smtp.send_message(mail, from_addr=_sender_address(self.sender).addr_spec)
        except BaseException:
            smtp.close()
            raise
        try:  # accepted: a goodbye that fails is no failed send (it would send the mail again)
            smtp.quit()
        except (smtplib.SMTPException, OSError) as exc:
            log.info("the mail server accepted %s but not the goodbye: %s", mail["Message-ID"], exc)
        finally:
            smtp.close()
        if refused:
            log.warning("the mail server refused some recipients of %s: %s", mail["Subject"], sorted(refused))


_PLAIN_AUTH = (
    "CLEARANCE_SMTP_USERNAME is set but neither CLEARANCE_SMTP_STARTTLS nor CLEARANCE_SMTP_TLS is on:"
    " logging in would send the password in clear text (set CLEARANCE_SMTP_ALLOW_PLAIN_AUTH=true only"
    " for a relay on 127.0.0.1)"
)


def plain_auth_problem(settings: ServerSettings) -> str | None:
    """Why these settings would send the SMTP password unencrypted, or None when they would not."""
    if settings.smtp_username is None or settings.smtp_tls or settings.smtp_starttls:
        return None
    return None if settings.smtp_allow_plain_auth else _PLAIN_AUTH


def _sender_address(sender: str) -> Address:
    """The one address of `CLEARANCE_SMTP_FROM` (`Name <a@b>` or `a@b`).

    Raises:
        ValueError: When it is not one address.
    """
    mail = EmailMessage()
    try:
        mail["From"] = sender
        addresses = mail["From"].addresses
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"CLEARANCE_SMTP_FROM {ascii(sender)} is not an address: {exc}") from None
    if len(addresses) != 1 or not addresses[0].domain:
        raise ValueError(f"CLEARANCE_SMTP_FROM {ascii(sender)} is not one address")
    return Address(addresses[0].display_name, addresses[0].username, addresses[0].domain)
