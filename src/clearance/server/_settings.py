"""Settings of the server. Precedence: command-line option > `CLEARANCE_*` environment > default."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .._arden_webhooks import targets as arden_targets
from .._settings import DEFAULT_DATABASE
from .._sinks._spec import exporter_specs


class ServerSettings(BaseSettings):
    """How `clearance serve` runs. Every field reads `CLEARANCE_<NAME>`.

    Attributes:
        database_url: The store: the same SQLite file the SDK uses by default, or a
            PostgreSQL URL (`postgresql+psycopg://…`). `CLEARANCE_DATABASE_URL`.
        host: Address to listen on. `CLEARANCE_HOST`.
        port: Port to listen on. `CLEARANCE_PORT`.
        max_body_bytes: Largest request body accepted; larger ones get 413.
            `CLEARANCE_MAX_BODY_BYTES`.
        busy_timeout: Seconds to wait for another process's lock on a SQLite store.
            `CLEARANCE_BUSY_TIMEOUT`.
        webhook_secret: The secret webhooks are signed with. `CLEARANCE_WEBHOOK_SECRET`.
        webhook_allowed: URL prefixes agents may ask webhooks to be sent to (comma-separated;
            none by default, so an agent key cannot make the server call arbitrary
            addresses). `CLEARANCE_WEBHOOK_ALLOWED`.
        arden_webhooks: Where ardenpy agents' approvals are announced, for ardenpy's webhook
            mode: comma-separated `agent=url` pairs (`*=url`: every other agent), each URL under
            an allowed prefix. An approval such an agent asks through `/policy/check` is a
            webhook-mode approval to its URL, signed the way `ardenpy.handle_webhook` verifies
            (see docs/guides/ardenpy.md). `CLEARANCE_ARDEN_WEBHOOKS`.
        slack_bot_token: The Slack app's bot token (`xoxb-…`); with the signing secret and
            the channel, approvals are posted to Slack. `CLEARANCE_SLACK_BOT_TOKEN`.
        slack_signing_secret: The Slack app's signing secret, which Slack's requests to
            `/v1/slack/interactions` are verified with. `CLEARANCE_SLACK_SIGNING_SECRET`.
        slack_channel: The channel id approvals are posted to. `CLEARANCE_SLACK_CHANNEL`.
        slack_api_url: The Slack Web API's base URL. `CLEARANCE_SLACK_API_URL`.
        public_url: Where people reach the dashboard (`https://clearance.example.com`); links in
            mails point there. `CLEARANCE_PUBLIC_URL`.
        smtp_host: The mail server; with `smtp_from` and `public_url`, each pending approval is
            mailed to its approvers. `CLEARANCE_SMTP_HOST`.
        smtp_port: Its port. `CLEARANCE_SMTP_PORT`.
        smtp_username: The user to log in as (none: no login). `CLEARANCE_SMTP_USERNAME`.
        smtp_password: Their password. `CLEARANCE_SMTP_PASSWORD`.
        smtp_from: The sender address (`Clearance <approvals@example.com>`). `CLEARANCE_SMTP_FROM`.
        smtp_starttls: Upgrade the connection with STARTTLS before anything is sent.
            `CLEARANCE_SMTP_STARTTLS`.
        smtp_tls: Connect with TLS from the start (port 465) instead. `CLEARANCE_SMTP_TLS`.
        smtp_allow_plain_auth: Log in (send the password) though neither STARTTLS nor TLS is on,
            for a relay on 127.0.0.1; otherwise a username without either is refused.
            `CLEARANCE_SMTP_ALLOW_PLAIN_AUTH`.
        smtp_timeout: Seconds a mail server may take to answer before the attempt fails (and is
            retried). `CLEARANCE_SMTP_TIMEOUT`.
        keep_alive_timeout: Seconds a connection may stay open with no request in progress
            (a new connection that sends nothing, or one between requests) before the server
            closes it. `CLEARANCE_KEEP_ALIVE_TIMEOUT`.
        header_timeout: Seconds a client has, from the first byte of a request, to send its
            request line and headers; a slower or unfinished one is closed (408 when nothing
            else is in flight). `CLEARANCE_HEADER_TIMEOUT`.
        body_timeout: Seconds a client has, from the end of its headers, to send the whole
            body; a slower or unfinished one is closed. `CLEARANCE_BODY_TIMEOUT`.
        forwarded_allow_ips: Addresses of reverse proxies whose `X-Forwarded-For` names the
            client (comma-separated; `*` trusts any). Unset: the address a connection comes from
            is the client's, which sign-in throttling counts by. `CLEARANCE_FORWARDED_ALLOW_IPS`.
        exporters: Event sinks every committed record passes, comma-separated: `jsonl:<path>`,
            `jsonl:-` (standard output), `jsonl+fsync:<path>`. `CLEARANCE_EXPORTERS`.
        otel: OpenTelemetry (the `otel` extra): trace the server's own requests and store
            queries (an incoming `traceparent` is continued), and emit an `execute_tool` span
            for every call in the audit log (remote agents' included) under the span the agent
            made it in, through the global tracer provider. `CLEARANCE_OTEL`.
        otel_args: Also put each call's arguments on its span, as recorded (redacted values
            stay redacted). `CLEARANCE_OTEL_ARGS`.
        otel_usage: LLM usage spans: `auto` (only where no framework instrumentation traced the
            model call), `always` or `never`. `CLEARANCE_OTEL_USAGE`.
        trace_url: Where the dashboard links a record's trace in your tracing UI, with
            `{trace_id}` (and optionally `{span_id}`) in it:
            `https://langfuse.example/trace/{trace_id}`. `CLEARANCE_TRACE_URL`.
        metrics_address: Serve `GET /metrics` also, with no key, on this separate `host:port`
            (e.g. `127.0.0.1:9464`, reachable only by the scraper); on the API's own port it
            takes a key with the `metrics` scope. `CLEARANCE_METRICS_ADDRESS`.
        signing_key: The Ed25519 private key (PEM file) that signs checkpoints of the audit
            chain and approval receipts; created with mode 0600 when absent. Default:
            `signing-key.pem` beside the SQLite store, or `.clearance/signing-key.pem` in the
            working directory for PostgreSQL (give replicas the same file; set an absolute
            path there). `<file>.last` beside it keeps the newest checkpoint the key signed.
            `CLEARANCE_SIGNING_KEY`.
        checkpoint_every: Sign a checkpoint once this many records were written since the last.
            `CLEARANCE_CHECKPOINT_EVERY`.
        checkpoint_interval: Sign a checkpoint when this many seconds have passed since the
            last and anything was recorded meanwhile (never when nothing was).
            `CLEARANCE_CHECKPOINT_INTERVAL`.
    """

    model_config = SettingsConfigDict(env_prefix="CLEARANCE_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = Field(default=8321, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    busy_timeout: float = Field(default=30.0, gt=0)
    webhook_secret: SecretStr | None = None
    webhook_allowed: Annotated[tuple[str, ...], NoDecode] = ()
    arden_webhooks: Annotated[tuple[tuple[str, str], ...], NoDecode] = ()
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_channel: str | None = Field(default=None, pattern=r"^[A-Z0-9]{2,40}$")
    slack_api_url: str = Field(default="https://slack.com/api/", pattern=r"^https?://")
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2000)
    smtp_host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:\[\]-]{1,255}$")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = Field(default=None, pattern=r"^[^\r\n]{1,320}$")
    smtp_password: SecretStr | None = None
    smtp_from: str | None = Field(default=None, pattern=r"^[^\r\n]{3,320}$")
    smtp_starttls: bool = True
    smtp_tls: bool = False
    smtp_allow_plain_auth: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0, le=300)
    keep_alive_timeout: float = Field(default=5.0, gt=0, le=3600)
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    forwarded_allow_ips: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f.:/*, ]+$")
    exporters: Annotated[tuple[str, ...], NoDecode] = ()
    otel: bool = False
    otel_args: bool = False
    otel_usage: Literal["auto", "always", "never"] = "auto"
    trace_url: str | None = Field(default=None, pattern=r"^https?://[^\s]*\{trace_id\}[^\s]*$", max_length=2000)
    metrics_address: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\[\]:-]{1,255}:[0-9]{1,5}$")
    signing_key: str | None = Field(default=None, min_length=1, max_length=4096)
    checkpoint_every: int = Field(default=1000, ge=1, le=1_000_000_000)
    checkpoint_interval: float = Field(default=60.0, gt=0, le=86_400 * 365)
    _exporters = field_validator("exporters", mode="before")(exporter_specs)
    _arden = field_validator("arden_webhooks", mode="before")(arden_targets)

    @model_validator(mode="after")
    def _arden_allowed(self) -> ServerSettings:
        for agent, url in self.arden_webhooks:
            if not any(url.startswith(prefix) for prefix in self.webhook_allowed):
                raise ValueError(
                    f"CLEARANCE_ARDEN_WEBHOOKS: {agent}'s URL is not under a CLEARANCE_WEBHOOK_ALLOWED prefix"
                )
        return self

    @field_validator("webhook_allowed", mode="before")
    @classmethod
    def _prefixes(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, tuple | list):
            for prefix in value:
                if not isinstance(prefix, str) or not prefix.startswith(("http://", "https://")):
                    raise ValueError(f"{prefix!r} is not an http(s) URL prefix")
                if "/" not in prefix.split("://", 1)[1]:
                    raise ValueError(
                        f"{prefix!r}: end the host with a path (https://hooks.example.com/), or it would also"
                        " allow https://hooks.example.com.evil.net"
                    )
        return value
