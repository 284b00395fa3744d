"""The wire schema: the types the API sends and its clients (remote governor, dashboard) read.

Defined once here; the routes answer with these models, the remote client validates answers
with them, and the dashboard's TypeScript types are generated from the OpenAPI document they
produce (`dashboard/src/api.gen.ts`).
"""

from __future__ import annotations

from ._approvals import ApprovalOut, AttemptOut, DeliveryOut, VoteOut
from ._check import CheckResponse
from ._statuses import DECISIONS, ApprovalMode, ApprovalStatus, DeliveryStatus, OnTimeout

__all__ = [
    "DECISIONS",
    "ApprovalMode",
    "ApprovalOut",
    "ApprovalStatus",
    "AttemptOut",
    "CheckResponse",
    "DeliveryOut",
    "DeliveryStatus",
    "OnTimeout",
    "VoteOut",
]
