"""What `POST /v1/check` answers: the decision policy made, recorded before it is sent."""

from __future__ import annotations

from pydantic import Field

from ..policy import Effect
from ._base import Sent


class CheckResponse(Sent):
    """What policy decided; the decision is recorded before this is sent."""

    decision: Effect
    reason: str
    rule_ids: list[str]
    errors: list[str]
    policy_revision: str
    call_id: str
    session_id: str
    approval_id: str | None = None
    expires_at_us: int | None = None
    grant_id: str | None = Field(
        default=None, description="The live grant that let the call through instead of an approval"
    )
    budget: str | None = Field(
        default=None, description="`session` or `agent` when an exhausted budget asks for approval"
    )
    asked_in: str | None = Field(
        default=None,
        description="A call asked about again (its framework's call id): the span it was first asked in (traceparent)",
    )
