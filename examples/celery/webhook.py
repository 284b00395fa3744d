"""Receives Clearance's signed decisions and enqueues the resume: `uvicorn webhook:app`."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tasks import resume_refund

import clearance

app = FastAPI()


@app.post("/webhook")
async def decided(request: Request) -> JSONResponse:
    """Verify the decision, then hand it to a worker: the web request does not run the tool."""
    try:
        event = clearance.verify_webhook(
            await request.body(), dict(request.headers), os.environ["CLEARANCE_WEBHOOK_SECRET"]
        )
    except clearance.WebhookError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    approval = event["approval"]
    resume_refund.delay(approval["id"], str(approval["args"].get("order_id")))
    return JSONResponse({"queued": approval["id"]})
