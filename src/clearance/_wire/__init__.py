"""The wire schema: the types the API sends and its clients (remote governor, dashboard) read.

Defined once here; the routes answer with these models, the remote client validates answers
with them, and the dashboard's TypeScript types are generated from the OpenAPI document they
produce (`dashboard/src/api.gen.ts`).
"""

from __future__ import annotations

from ..policy._model import OnTimeout
from ._approvals import ApprovalFields, ApprovalOut, AttemptOut, DeliveryOut, VoteOut
from ._base import SENT, Sent
from ._check import CheckResponse
from ._events import AuditEvent
from ._grants import ConstraintIn, ExtendIn, GrantIn, GrantLimitsOut, GrantOut, GrantStatus
from ._statuses import DECISIONS, ApprovalMode, ApprovalStatus, DeliveryStatus

__all__ = [
    "DECISIONS",
    "SENT",
    "ApprovalFields",
    "ApprovalMode",
    "ApprovalOut",
    "ApprovalStatus",
    "AttemptOut",
    "AuditEvent",
    "CheckResponse",
    "ConstraintIn",
    "DeliveryOut",
    "DeliveryStatus",
    "ExtendIn",
    "GrantIn",
    "GrantLimitsOut",
    "GrantOut",
    "GrantStatus",
    "OnTimeout",
    "Sent",
    "VoteOut",
]
