"""What the guard needs from a governor, embedded (`Governor`) or remote (`RemoteGovernor`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .._settings import Settings
from ..policy import Policy
from ._governor import Approved, Ticket, UsageRecord


class Backend(Protocol):
    """Decides, records, waits for approvals, records usage."""

    settings: Settings
    default_session: str

    @property
    def policy(self) -> Policy:
        """The policy calls are decided from now."""
        ...

    def begin(
        self,
        tool: str,
        args: dict[str, Any],
        session: str | None,
        mode: str = "wait",
        webhook_url: str | None = None,
        call_key: str | None = None,
    ) -> Ticket: ...

    def finish(self, ticket: Ticket, *, error: BaseException | None, duration_s: float, result: Any = None) -> None: ...

    def wait(self, ticket: Ticket) -> Approved: ...

    def approved_call(self, approval_id: str) -> tuple[Ticket, Approved, dict[str, Any]]: ...

    def claim(self, ticket: Ticket) -> None: ...

    def claim_denial(self, approval_id: str) -> bool: ...

    def due(self, tools: Sequence[str]) -> list[tuple[str, str]]: ...

    async def wait_async(self, ticket: Ticket) -> Approved: ...

    def record_usage(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        reasoning_tokens: int,
        *,
        provider: str | None,
        session: str | None,
        latency_ms: float | None,
    ) -> UsageRecord: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
