"""Receiving Clearance webhooks in Django (a one-file project: `python django_app.py runserver`)."""

from __future__ import annotations

import sys

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        SECRET_KEY="only-for-the-example",  # noqa: S106
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    )

import django  # noqa: E402

django.setup()

import refund_tools  # noqa: E402, F401  (guards the tools the webhooks finish)
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

import clearance  # noqa: E402


@csrf_exempt  # the signature, not a browser cookie, authenticates this request
@require_POST
def clearance_webhook(request: HttpRequest) -> JsonResponse:
    """Finish the call a signed Clearance webhook announces; 400 for anything else."""
    try:
        outcome = clearance.handle_webhook(request.body, dict(request.headers))
    except clearance.WebhookError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"outcome": outcome.outcome})


urlpatterns = [path("clearance/webhook", clearance_webhook)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
