"""Causeway's own health, for the machines that watch it: /metrics (Prometheus) and /healthz (load balancers)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from governance import metrics

BROKER_TIMEOUT_SECONDS = 3


def _bearer(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


@require_GET
def metrics_view(request):
    """The Prometheus text of every web and Celery process on this host, and the analysis lag."""
    token = _bearer(request)
    # Compared in constant time; with no METRICS_TOKEN configured nobody may read the metrics.
    if not settings.METRICS_TOKEN or not hmac.compare_digest(token.encode(), settings.METRICS_TOKEN.encode()):
        response = HttpResponse("send Authorization: Bearer <METRICS_TOKEN>\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


def _database_answers() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
        return f"{type(exc).__name__}"
    return ""


def _broker_answers() -> str:
    from governance.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS)
            conn.default_channel  # noqa: B018 - opens a channel: the broker really answers
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the answer
        return f"{type(exc).__name__}"
    return ""


@require_GET
def healthz(request):
    """200 when the database and the broker answer, else 503 naming which did not. No login: load balancers call it."""
    problems = {name: problem for name, problem in (("database", _database_answers()), ("broker", _broker_answers()))
                if problem}
    if problems:
        return JsonResponse({"status": "unavailable", "failed": sorted(problems), "errors": problems}, status=503)
    return JsonResponse({"status": "ok"})
