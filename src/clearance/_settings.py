"""Settings of the SDK. Precedence: `configure()` argument > `CLEARANCE_*` environment > default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._names import checked_name
from ._pricing import ModelPrice
from ._sinks._spec import exporter_specs

# Agent, environment and user names are recorded on every event: the boundary's rules for names.
AgentName = Annotated[str, AfterValidator(lambda v: checked_name(v, "the agent name"))]
EnvironmentName = Annotated[str, AfterValidator(lambda v: checked_name(v, "the environment"))]

DEFAULT_DATABASE = ".clearance/clearance.db"


class Settings(BaseSettings):
    """How the guard decides and where it records. Every field reads `CLEARANCE_<NAME>`.

    Attributes:
        policy: Path of the policy file (YAML or JSON). `CLEARANCE_POLICY`.
        shadow_policy: Path of a policy decided beside `policy` on every call, in shadow: what
            it decided is recorded with the call and never enforced (`clearance policy
            shadow-report` compares them). Embedded store only. `CLEARANCE_SHADOW_POLICY`.
        database_url: The audit store: a SQLite file path or a SQLAlchemy URL.
            `CLEARANCE_DATABASE_URL`; default `.clearance/clearance.db` in the working directory.
        agent: This agent's name, recorded on every event. `CLEARANCE_AGENT`.
        environment: The environment, e.g. `test` or `live`. `CLEARANCE_ENVIRONMENT`.
        busy_timeout: Seconds to wait for another process's write lock on the store before
            failing the call (closed). `CLEARANCE_BUSY_TIMEOUT`.
        price_overrides: Prices per model name, in USD per million tokens, used before
            genai-prices; JSON in `CLEARANCE_PRICE_OVERRIDES`.
        outcome_delay: Seconds a call's outcome record may wait to share the next commit
            (its decision is always committed before the tool runs); 0 commits it before the
            call returns. `CLEARANCE_OUTCOME_DELAY`.
        server_url: A Clearance server: remote mode (policy from the server, records shipped to
            it). `CLEARANCE_SERVER_URL`.
        api_key: The agent key for the server. `CLEARANCE_API_KEY`.
        evaluation: `local` (decide in-process from the synced policy) or `server` (every call
            decided by `POST /v1/check`). `CLEARANCE_EVALUATION`.
        spool_path: Remote mode's durable local queue of records not yet shipped, and its last
            good policy snapshot (`<spool_path>.snapshot.json`). `CLEARANCE_SPOOL_PATH`.
        user: Who decides approvals from this machine's CLI (default: the OS user).
            `CLEARANCE_USER`.
        webhook_url: Where webhook-mode approvals are announced (a tool's own `webhook_url`
            wins). `CLEARANCE_WEBHOOK_URL`.
        webhook_secret: The shared secret webhooks are signed with (HMAC-SHA256): to deliver
            them from this process (`clearance worker`, the CLI) and to verify them in your
            app. `CLEARANCE_WEBHOOK_SECRET`.
        exporters: Event sinks every committed record passes, comma-separated:
            `jsonl:<path>`, `jsonl:-` (standard output), `jsonl+fsync:<path>`.
            `CLEARANCE_EXPORTERS`.
        otel: Trace governed calls with OpenTelemetry (the `otel` extra): each call's record
            keeps the span current when it was made, and an `execute_tool` span is emitted
            for it under that span, through the global tracer provider (your exporter). In
            remote mode the server emits them (`CLEARANCE_OTEL` there); the agent sends its
            trace context with each request. `CLEARANCE_OTEL`.
        otel_args: Also put the call's arguments on its span, as recorded (redacted values
            stay redacted). `CLEARANCE_OTEL_ARGS`.
        otel_usage: LLM usage spans (`chat <model>` with `gen_ai.usage.*`): `auto` emits one
            only where no framework instrumentation traced that model call, `always`, or
            `never`. `CLEARANCE_OTEL_USAGE`.
        capture_usage: Record the usage of every model request the `openai` and `anthropic`
            clients make, with no call to `record` (see docs/usage-capture.md); `false` if the
            application records that usage itself. `CLEARANCE_CAPTURE_USAGE`.
    """

    model_config = SettingsConfigDict(env_prefix="CLEARANCE_", extra="forbid", frozen=True)

    policy: Path | None = None
    shadow_policy: Path | None = None
    database_url: str = DEFAULT_DATABASE
    agent: AgentName = Field(default="default", min_length=1, max_length=200)
    environment: EnvironmentName = Field(default="test", min_length=1, max_length=40)
    busy_timeout: float = Field(default=30.0, gt=0)
    price_overrides: dict[str, ModelPrice] = Field(default_factory=dict)
    outcome_delay: float = Field(default=0.05, ge=0, le=60)
    server_url: str | None = Field(default=None, pattern=r"^https?://")
    api_key: SecretStr | None = None
    evaluation: Literal["local", "server"] = "local"
    spool_path: Path = Path(".clearance/spool.db")
    user: str | None = None
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_secret: SecretStr | None = None
    exporters: Annotated[tuple[str, ...], NoDecode] = ()
    otel: bool = False
    otel_args: bool = False
    otel_usage: Literal["auto", "always", "never"] = "auto"
    capture_usage: bool = True

    @field_validator("exporters", mode="before")
    @classmethod
    def _exporters(cls, value: object) -> object:
        return exporter_specs(value)
