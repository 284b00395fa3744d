"""One JSON error shape for the whole API, with stable machine codes.

```json
{"error": {"code": "invalid_parameter", "message": "…", "details": [{"location": "body.scopes", "message": "…"}]}}
```
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import GrantNotFound, GrantRejected, StoreError

log = logging.getLogger("clearance.server")

# HTTP status -> stable code. Codes are part of the API: add, never rename.
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "resource_not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


INT64_MAX = 2**63 - 1  # what SQLite and PostgreSQL BIGINT hold; larger numbers are invalid input


class APIError(Exception):
    """An error the API returns in its error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers
        super().__init__(message)


def error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The error shape for a status."""
    return {
        "error": {
            "code": CODES.get(status, "bad_request" if status < 500 else "internal_error"),
            "message": message,
            "details": details or [],
        }
    }


def _response(
    status: int, message: str, details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, details), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Route every error through the one shape."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return _response(exc.status, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return _response(422, "the request is not valid", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, RecursionError):  # FastAPI could not parse a body that deep
            why = "the JSON body is nested too deeply to read; arguments nest at most 64 levels"
            return _response(422, why, [{"location": "body", "message": why}])
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(GrantRejected)
    async def grant_refused(_: Request, exc: GrantRejected) -> JSONResponse:
        return _response(422, str(exc), [{"location": "body.grant", "message": p} for p in exc.problems])

    @app.exception_handler(GrantNotFound)
    async def no_grant(_: Request, exc: GrantNotFound) -> JSONResponse:
        return _response(404, str(exc))

    @app.exception_handler(StoreError)
    async def store_down(_: Request, exc: StoreError) -> JSONResponse:
        log.warning("store unavailable: %s", exc)
        return _response(503, "the store is unavailable; try again", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _response(500, "internal error")
