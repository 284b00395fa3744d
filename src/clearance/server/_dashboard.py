"""The dashboard: the built single-page app at `/`, its hashed assets at `/assets/`.

The app is built from `dashboard/` by `npm run build` (the Makefile's `dashboard` target) into
`_static/`, which the wheel includes. Every dashboard response carries a strict
Content-Security-Policy: scripts, styles and connections from this origin only, no inline code,
no framing. The one exception is a per-response nonce for style elements, which the policy
editor (CodeMirror) inserts; the page finds it in `<meta name="csp-nonce">`.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "_static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self';"
    " connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class _Assets(StaticFiles):
    """Hashed file names: cached for a year; with the dashboard's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install(app: FastAPI, static: Path = STATIC) -> None:
    """Serve the dashboard at `/`, or say how to build it when it is missing."""
    index = static / "index.html"
    template = index.read_text(encoding="utf-8") if index.is_file() else None  # read once, at startup
    if (static / "assets").is_dir():
        app.mount("/assets", _Assets(directory=static / "assets"), name="assets")

    @app.get("/", include_in_schema=False, response_model=None)
    async def dashboard() -> Response:
        if template is None:
            return PlainTextResponse(
                "The dashboard is not built: run `make dashboard` (npm) in the source checkout.",
                status_code=503,
                headers=HEADERS,
            )
        nonce = secrets.token_urlsafe(18)
        page = template.replace("<head>", f'<head>\n    <meta name="csp-nonce" content="{nonce}" />', 1)
        csp = CSP.replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")
        return HTMLResponse(page, headers={**HEADERS, "Content-Security-Policy": csp, "Cache-Control": "no-store"})
