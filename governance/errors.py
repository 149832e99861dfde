"""Errors that happen outside the API's views: every answer under /api/ is the API's JSON
error shape, every other one a plain page; an unreachable database is 503, not 500.

Django calls these as handler400/403/404/500 (governance/urls.py) for whatever the views
did not answer themselves: unknown URLs, bodies over the upload limit, a crash, the
database gone. Errors inside the API's views go through governance/api/errors.py.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from django.template import loader

# What exporters and scripts are told to wait before they retry during an outage. The OpenTelemetry
# Python exporter waits exactly Retry-After between attempts, within its 10 s default timeout: 2 s
# lets it ride out an outage of about 8 s (5 s let it try twice and drop the batch after 5 s).
RETRY_AFTER_SECONDS = 2
TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found", 413: "Request too large",
          500: "Server error", 503: "Service unavailable"}


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def is_api(request) -> bool:
    return request.path.startswith("/api/")


def error_response(request, status: int, code: str, message: str) -> HttpResponse:
    if is_api(request):
        return JsonResponse(error_body(code, message), status=status)
    # Rendered without the request: no context processor, so no database query, runs in an outage.
    page = loader.render_to_string("error.html", {"status": status, "title": TITLES[status], "message": message})
    return HttpResponse(page, status=status)


def bad_request(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return error_response(request, 413, "request_too_large",
                              f"the request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
    message = str(exception) if isinstance(exception, BadRequest) else "the request could not be understood"
    return error_response(request, 400, "invalid", message)


def permission_denied(request, exception=None):
    return error_response(request, 403, "permission_denied", "you are not allowed to do this")


def page_not_found(request, exception=None):
    # Our own Http404s say what is missing; the resolver's carries the URL patterns tried: not shown.
    if type(exception) is Http404 and exception.args:
        message = str(exception)
    else:
        message = "there is no API endpoint at this path" if is_api(request) else "there is no page at this address"
    if not is_api(request):
        # The database answered the view that raised this, so the page can list the person's
        # projects: where they can go instead. Should it fail now, the plain page still answers.
        try:
            return HttpResponse(loader.render_to_string("404.html", {"message": message}, request), status=404)
        except DatabaseError:
            pass
    return error_response(request, 404, "not_found", message)


def server_error(request):
    # Django calls this inside its `except` block: the exception is the one being handled.
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = error_response(request, 503, "unavailable",
                                  f"the database is unavailable; retry in {RETRY_AFTER_SECONDS} seconds")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return error_response(request, 500, "server_error", "something went wrong on our side; it has been logged")


class RequestGuardMiddleware:
    """Refuses, as a 4xx in the shapes above, what no view should have to handle:

    - a NUL byte in the path or the query: PostgreSQL refuses text holding one, so any lookup
      by it (a trace id, a username) would fail as a 500;
    - under /api/, a body over DATA_UPLOAD_MAX_MEMORY_SIZE: DRF's JSON parser reads the raw
      stream and so skips Django's check; reading `request.body` here applies it (413).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            raise BadRequest("the address contains a NUL byte")
        if is_api(request):
            request.body  # noqa: B018 - raises RequestDataTooBig over the limit
        return self.get_response(request)
