"""Receiving Clearance webhooks in FastAPI: `uvicorn fastapi_app:app`."""

from __future__ import annotations

import refund_tools  # noqa: F401  (guards the tools the webhooks finish)
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

import clearance

app = FastAPI()


@app.post("/clearance/webhook")
async def clearance_webhook(request: Request) -> JSONResponse:
    """Finish the call a signed Clearance webhook announces; 400 for anything else."""
    body = await request.body()  # the raw bytes: the signature covers them exactly
    try:
        outcome = await run_in_threadpool(clearance.handle_webhook, body, dict(request.headers))
    except clearance.WebhookError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"outcome": outcome.outcome})
