"""Tables. Dialect-neutral types only; times are integer microseconds since the epoch (UTC).

Migrations in `migrations/` are the source of truth for the database; these models describe
the same tables for queries and are checked against the migrations by a test.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_ID = String(40)
_NAME = String(200)


class Base(DeclarativeBase):
    metadata = MetaData()


class EventRow(Base):
    """One record of the append-only, hash-chained audit log.

    The columns other than `seq`, `prev_hash` and `hash` are copies of fields of `body` kept
    for indexing; verification checks that they agree with it.
    """

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(_ID, unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    at_us: Mapped[int] = mapped_column(BigInteger)
    agent: Mapped[str] = mapped_column(_NAME)
    environment: Mapped[str] = mapped_column(String(40))
    session: Mapped[str | None] = mapped_column(_NAME)
    tool: Mapped[str | None] = mapped_column(_NAME)
    call_id: Mapped[str | None] = mapped_column(_ID)
    decision: Mapped[str | None] = mapped_column(String(40))
    cost_nusd: Mapped[int | None] = mapped_column(BigInteger)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        # Every fact query, activation lookup and usage summary filters on kind first.
        Index("ix_events_kind_agent_tool_at", "kind", "agent", "tool", "at_us"),
        Index("ix_events_session_kind", "session", "kind"),
        Index("ix_events_call_id", "call_id"),
    )


class ApprovalRow(Base):
    """A call waiting for (or past) a human decision. Mutable; every change is also an event."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    call_id: Mapped[str] = mapped_column(_ID, unique=True)
    status: Mapped[str] = mapped_column(String(20))
    tool: Mapped[str] = mapped_column(_NAME)
    agent: Mapped[str] = mapped_column(_NAME)
    environment: Mapped[str] = mapped_column(String(40))
    session: Mapped[str | None] = mapped_column(_NAME)
    args_json: Mapped[str] = mapped_column(Text)
    args_hash: Mapped[str] = mapped_column(String(64))
    shown_args_json: Mapped[str] = mapped_column(Text)
    rule_ids: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    policy_revision: Mapped[str] = mapped_column(String(40))
    approvers: Mapped[str] = mapped_column(Text)
    on_timeout: Mapped[str] = mapped_column(String(20))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger)
    decided_by: Mapped[str | None] = mapped_column(_NAME)
    decided_at_us: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    waiter: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (Index("ix_approvals_status_expires", "status", "expires_at_us"),)


class PolicyRevisionRow(Base):
    """An immutable policy revision, as written."""

    __tablename__ = "policy_revisions"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(_NAME)
    parent: Mapped[str | None] = mapped_column(_ID)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
