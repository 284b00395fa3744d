"""Tables. Dialect-neutral types only; times are integer microseconds since the epoch (UTC).

Migrations in `migrations/` are the source of truth for the database; these models describe
the same tables for queries and are checked against the migrations by a test.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_ID = String(40)
_CALLS = text("kind = 'tool_call.decided'")
_LLM = text("kind = 'llm.call'")
_ACTIVATIONS = text("kind = 'policy.activated'")
_KEYS = text("kind = 'checkpoint.key_introduced'")
_NAME = String(200)
USAGE_INDEX = (
    "at_us",
    "agent",
    "model",
    "cost_nusd",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
)

SESSION_INDEX = ("session", "seq", "agent", "at_us", "kind", "decision", "environment", "cost_nusd", "tokens")


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
    # An LLM call's model and token counts, for usage and spend summaries (0019)
    model: Mapped[str | None] = mapped_column(_NAME)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        # Partial indexes for the kinds that facts look up: an outcome record touches none of
        # them, so a commit writes fewer pages (the hot path's largest cost).
        Index("ix_events_calls", "agent", "tool", "at_us", sqlite_where=_CALLS, postgresql_where=_CALLS),
        Index("ix_events_llm", "agent", "at_us", sqlite_where=_LLM, postgresql_where=_LLM),
        # Usage and spend read LLM calls from this index alone, by time (0019)
        Index("ix_events_usage", *USAGE_INDEX, sqlite_where=_LLM, postgresql_where=_LLM),
        Index("ix_events_activations", "agent", "seq", sqlite_where=_ACTIVATIONS, postgresql_where=_ACTIVATIONS),
        # A session's records by their order, with every column the sessions list sums: the
        # list reads the index alone, not a heap page per record of each session (0020)
        Index("ix_events_session", *SESSION_INDEX),
        Index("ix_events_call_id", "call_id"),
        Index("ix_events_keys", "seq", sqlite_where=_KEYS, postgresql_where=_KEYS),  # (0021)
    )


class UsageHourRow(Base):
    """The LLM calls of one UTC hour, agent and model, summed (`_rollup`, 0020).

    `unnamed` 1: calls that name no model (`model` is then ''). Each sum is kept exact in two
    halves: `_hi` the sum of the values shifted right by 32 bits, `_lo` of their low 32 bits.
    """

    __tablename__ = "usage_hours"

    hour_us: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    agent: Mapped[str] = mapped_column(_NAME, primary_key=True)
    unnamed: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model: Mapped[str] = mapped_column(_NAME, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)
    unpriced: Mapped[int] = mapped_column(BigInteger)
    cost_nusd_hi: Mapped[int] = mapped_column(BigInteger)
    cost_nusd_lo: Mapped[int] = mapped_column(BigInteger)
    input_tokens_hi: Mapped[int] = mapped_column(BigInteger)
    input_tokens_lo: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens_hi: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens_lo: Mapped[int] = mapped_column(BigInteger)
    output_tokens_hi: Mapped[int] = mapped_column(BigInteger)
    output_tokens_lo: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens_hi: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens_lo: Mapped[int] = mapped_column(BigInteger)


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
    requested_by: Mapped[str | None] = mapped_column(_NAME)
    edited_args_json: Mapped[str | None] = mapped_column(Text)
    edited_args_hash: Mapped[str | None] = mapped_column(String(64))
    edited_shown_json: Mapped[str | None] = mapped_column(Text)
    votes_json: Mapped[str | None] = mapped_column(Text)
    escalate_to: Mapped[str | None] = mapped_column(Text)
    escalation_timeout_s: Mapped[int | None] = mapped_column(Integer)
    escalated_at_us: Mapped[int | None] = mapped_column(BigInteger)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(_NAME)
    claimed_at_us: Mapped[int | None] = mapped_column(BigInteger)
    result_json: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at_us: Mapped[int | None] = mapped_column(BigInteger)
    quorum: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    mode: Mapped[str] = mapped_column(String(20), server_default=text("'wait'"))
    call_key: Mapped[str | None] = mapped_column(String(200))
    trace_context: Mapped[str | None] = mapped_column(String(55))  # the span the call was asked in (0012)
    waiter_seen_at_us: Mapped[int | None] = mapped_column(BigInteger)  # the waiting process's heartbeat (0014)
    resumable: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # a worker can run it (0014)
    claim_seen_at_us: Mapped[int | None] = mapped_column(BigInteger)  # the running claimant's lease (0018)

    __table_args__ = (
        Index("ix_approvals_status_expires", "status", "expires_at_us"),
        Index("ix_approvals_decided", "decided_at_us", "id"),  # the decisions history, newest first (0015)
        UniqueConstraint("agent", "call_key", name="uq_approvals_agent_call_key"),
    )


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
    status: Mapped[str] = mapped_column(String(20), server_default="valid")
    problems: Mapped[str | None] = mapped_column(Text)


class PolicyAssignmentRow(Base):
    """Which revision is active for a scope: `default`, `environment:<name>` or `agent:<name>`."""

    __tablename__ = "policy_assignments"

    scope: Mapped[str] = mapped_column(String(260), primary_key=True)
    revision_id: Mapped[str] = mapped_column(_ID)
    activated_at_us: Mapped[int] = mapped_column(BigInteger)
    activated_by: Mapped[str | None] = mapped_column(_NAME)


class ApiKeyRow(Base):
    """An API key: only the hash of its secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(_NAME)
    scopes: Mapped[str] = mapped_column(String(100))
    agent: Mapped[str | None] = mapped_column(_NAME)
    environment: Mapped[str] = mapped_column(String(40))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str | None] = mapped_column(_NAME)
    revoked_at_us: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at_us: Mapped[int | None] = mapped_column(BigInteger)


class UserRow(Base):
    """A person who signs in to the dashboard; only an argon2 hash of the password is stored."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    username: Mapped[str] = mapped_column(_NAME, unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[str] = mapped_column(String(100))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    disabled_at_us: Mapped[int | None] = mapped_column(BigInteger)


class ChannelMessageRow(Base):
    """An approval channel's message of one approval (a Slack post, a mail thread).

    `ref` is the channel's own handle of it (JSON); `shown` the approval state it shows, emptied
    by every change of the approval (so it is redrawn); `drawn` the state last drawn, kept.
    """

    __tablename__ = "channel_messages"

    approval_id: Mapped[str] = mapped_column(_ID, primary_key=True)
    channel: Mapped[str] = mapped_column(String(40), primary_key=True)
    ref: Mapped[str | None] = mapped_column(Text)
    shown: Mapped[str | None] = mapped_column(String(40))
    drawn: Mapped[str | None] = mapped_column(String(40))
    claimed_at_us: Mapped[int | None] = mapped_column(BigInteger)
    sent: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    failed_at_us: Mapped[int | None] = mapped_column(BigInteger)
    failing: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    retry_at_us: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_channel_messages_stale", "channel", "shown"),)


class ChannelIdentityRow(Base):
    """Who a person is in an approval channel: a Slack user id, an e-mail address."""

    __tablename__ = "channel_identities"

    user_id: Mapped[str] = mapped_column(_ID, primary_key=True)
    channel: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(320))

    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_channel_identities_external"),)


class UserSessionRow(Base):
    """A signed-in session: the hash of its cookie token, and its CSRF token."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(_ID)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_user_sessions_user", "user_id"),)


class OutboxRow(Base):
    """A message to deliver (a signed webhook), retried with backoff until delivered or given up."""

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    approval_id: Mapped[str] = mapped_column(_ID)
    kind: Mapped[str] = mapped_column(String(20))
    event_type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at_us: Mapped[int] = mapped_column(BigInteger)
    lease_until_us: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status: Mapped[int | None] = mapped_column(Integer)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    delivered_at_us: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at_us"),
        Index("ix_outbox_approval", "approval_id"),
    )


class OutboxAttemptRow(Base):
    """One delivery attempt: when, the HTTP status or the error, how long it took."""

    __tablename__ = "outbox_attempts"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    outbox_id: Mapped[str] = mapped_column(_ID)
    at_us: Mapped[int] = mapped_column(BigInteger)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_outbox_attempts_outbox", "outbox_id"),)


class CheckpointRow(Base):
    """A signed checkpoint of the audit chain (`_seals`): the head it signs and the signature (0016)."""

    __tablename__ = "checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at_us: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(40))
    signature: Mapped[str] = mapped_column(String(100))
    record_seq: Mapped[int] = mapped_column(BigInteger)


class SinkPositionRow(Base):
    """How far an event sink has delivered: the `seq` of the last event it was given.

    On SQLite, also which process delivers it (`holder`) and until when its lease lasts
    unless renewed (PostgreSQL uses a session advisory lock instead and leaves them empty).
    """

    __tablename__ = "sink_positions"

    sink: Mapped[str] = mapped_column(_NAME, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str | None] = mapped_column(_NAME)
    lease_until_us: Mapped[int | None] = mapped_column(BigInteger)


class GrantRow(Base):
    """What an approver let through beyond one call: similar calls (`calls`) or more budget (`budget`).

    Mutable only in its counters and its end (`revoked_*`, `ended_at_us`); every change is also
    an event.
    """

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(20))
    agent: Mapped[str] = mapped_column(_NAME)
    environment: Mapped[str] = mapped_column(String(40))
    session: Mapped[str | None] = mapped_column(_NAME)
    requester: Mapped[str | None] = mapped_column(_NAME)
    tool: Mapped[str | None] = mapped_column(_NAME)
    rule_ids: Mapped[str] = mapped_column(Text)
    constraints_json: Mapped[str | None] = mapped_column(Text)
    max_calls: Mapped[int | None] = mapped_column(BigInteger)
    total_arg: Mapped[str | None] = mapped_column(String(128))
    max_total: Mapped[str | None] = mapped_column(Text)
    calls_used: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_used: Mapped[str] = mapped_column(Text, server_default=text("'0'"))
    extend_nusd: Mapped[int | None] = mapped_column(BigInteger)
    extend_tokens: Mapped[int | None] = mapped_column(BigInteger)
    approval_id: Mapped[str | None] = mapped_column(_ID)
    policy_revision: Mapped[str | None] = mapped_column(_ID)
    granted_by: Mapped[str] = mapped_column(_NAME)
    note: Mapped[str | None] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    expires_at_us: Mapped[int] = mapped_column(BigInteger)
    revoked_at_us: Mapped[int | None] = mapped_column(BigInteger)
    revoked_by: Mapped[str | None] = mapped_column(_NAME)
    revoke_reason: Mapped[str | None] = mapped_column(Text)
    ended_at_us: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_grants_live", "agent", "tool", "expires_at_us"),
        Index("ix_grants_session", "session"),
        Index("ix_grants_approval", "approval_id"),  # the grant given with an approval (0015)
    )


class ArchiveRow(Base):
    """A segment of the audit log moved to an archive file (`clearance audit archive`), one per file.

    Its records left the `events` table in the transaction that wrote this row: the row with the
    highest `last_seq` is where the chain in the database starts now (0017).
    """

    __tablename__ = "archives"

    segment: Mapped[str] = mapped_column(String(100), primary_key=True)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    first_at_us: Mapped[int] = mapped_column(BigInteger)
    last_at_us: Mapped[int] = mapped_column(BigInteger)
    archived_at_us: Mapped[int] = mapped_column(BigInteger)
    ids_listed: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # all in archived_ids (0022)


class ArchivedIdRow(Base):
    """The event id of a record that left `events` for an archive segment (0021).

    Written in the transaction that removes the record, so ingest counts a re-sent copy of it
    as a duplicate instead of appending it again.
    """

    __tablename__ = "archived_ids"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_archived_ids_seq", "seq"),)
