"""What the demo's agents do: conversations of model turns and the tool calls they choose.

The same script seeds the history (a named person answers each approval at once) and drives
the live agents (which wait for a real person in the dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    """How a person answers an approval while the history is seeded."""

    by: str
    approve: bool
    note: str | None = None
    edit: dict[str, Any] | None = None
    grant: dict[str, Any] | None = None  # also let similar calls through (GrantRequest's fields)


@dataclass(frozen=True)
class Turn:
    """One model turn and the tool call it chose."""

    model: str
    tokens: tuple[int, int, int]  # input (with cached), cached input, output
    latency_ms: float
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    answer: Answer | None = None


def _t(tool: str, answer: Answer | None = None, *, model: str = "gpt-4o-mini", n: int = 1, **args: Any) -> Turn:
    return Turn(model, (14_000 + 3_500 * n, 8_192 if n > 1 else 0, 420 + 150 * n), 900 + 350 * n, tool, args, answer)


DANA = "dana"  # a support lead
GRANT = {"scope": "session", "duration": "1h", "max_total": {"amount": 500}}
SAM = "sam"  # finance

SUPPORT = [
    [
        _t("issue_refund", order_id="A-1001", amount=45.0, reason="damaged in transit"),
        _t("send_email", n=2, to="Dana Reyes <dana.reyes@customers.acme.com>", subject="Your refund", body="$45 back"),
    ],
    [
        _t("issue_refund", Answer(DANA, True), order_id="A-1007", amount=320.0, reason="never delivered"),
        _t("send_email", n=2, to="lee@customers.acme.com", subject="Refund approved", body="$320 is on its way"),
    ],
    [
        _t(
            "issue_refund",
            Answer(DANA, False, "Already refunded last week (A-0988)"),
            order_id="A-1012",
            amount=640.0,
            reason="customer asked twice",
        ),
        _t("send_email", n=2, to="helper@gmail.com", subject="fwd: thread", body="customer thread, for follow-up"),
    ],
    [
        _t(
            "issue_refund",
            Answer(DANA, True, "Half: the jacket was worn", {"amount": 450.0}),
            model="claude-sonnet-4-5",
            order_id="A-1019",
            amount=900.0,
            reason="returned, used",
            card_last4="4242",
        ),
    ],
    [
        # A lead approves a refund and grants the session refunds up to $500 for 1 h: the next
        # two pass without waiting, recorded with the grant; the third would pass the $500.
        _t(
            "issue_refund",
            Answer(DANA, True, "Storm damage: go ahead with this customer's orders", grant=GRANT),
            order_id="A-1030",
            amount=260.0,
            reason="storm damage",
        ),
        _t("issue_refund", n=2, order_id="A-1031", amount=240.0, reason="storm damage"),
        _t("issue_refund", n=3, order_id="A-1032", amount=210.0, reason="storm damage"),
        _t("issue_refund", Answer(DANA, True), n=4, order_id="A-1033", amount=320.0, reason="storm damage"),
    ],
    [
        _t("db.drop_table", table="customers_old"),
        _t("issue_refund", n=2, order_id="A-1023", amount=60.0, reason="late delivery"),
    ],
]

BILLING = [
    [
        _t("issue_credit", model="gpt-4.1", account="ACME-204", amount=40.0),
        _t("issue_credit", Answer(SAM, True), model="gpt-4.1", n=2, account="ACME-311", amount=150.0),
    ],
    [
        _t("issue_credit", Answer(SAM, False, "Needs a signed contract amendment"), account="ACME-118", amount=500.0),
        _t("db.delete_rows", n=2, table="invoices", where="status = 'void'"),
    ],
]

OUTREACH = [
    [
        _t("send_email", model="acme-llm-large", to="prospect@gmail.com", subject="Hello", body="Meet Acme"),
        _t("send_email", model="acme-llm-large", n=2, to="sales@acme.com", subject="Lead", body="gmail prospect"),
    ],
    [
        _t("send_email", model="gpt-4o-mini", to="events@acme.com", subject="Webinar list", body="14 signups"),
    ],
]

AGENTS = {"support-bot": SUPPORT, "billing-bot": BILLING, "outreach-bot": OUTREACH}
