"""Receiving Clearance webhooks in Flask: `flask --app flask_app run`."""

from __future__ import annotations

from typing import Any

import refund_tools  # noqa: F401  (guards the tools the webhooks finish)
from flask import Flask, request

import clearance

app = Flask(__name__)


@app.post("/clearance/webhook")
def clearance_webhook() -> tuple[dict[str, Any], int]:
    """Finish the call a signed Clearance webhook announces; 400 for anything else."""
    try:
        outcome = clearance.handle_webhook(request.get_data(), dict(request.headers))
    except clearance.WebhookError as exc:
        return {"error": str(exc)}, 400
    return {"outcome": outcome.outcome}, 200
