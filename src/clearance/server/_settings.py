"""Settings of the server. Precedence: command-line option > `CLEARANCE_*` environment > default."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .._settings import DEFAULT_DATABASE


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
    """

    model_config = SettingsConfigDict(env_prefix="CLEARANCE_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"
    port: int = Field(default=8321, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    busy_timeout: float = Field(default=30.0, gt=0)
    webhook_secret: SecretStr | None = None
    webhook_allowed: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("webhook_allowed", mode="before")
    @classmethod
    def _prefixes(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, tuple | list):
            for prefix in value:
                if not isinstance(prefix, str) or not prefix.startswith(("http://", "https://")):
                    raise ValueError(f"{prefix!r} is not an http(s) URL prefix")
        return value
