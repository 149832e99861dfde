"""Structured logs: with LOG_FORMAT=json every record is one JSON object on one line, carrying the
id of the request or task it was written in, so one request's or task's lines can be found together.

The ids live in context variables: the middleware sets the request's (X-Request-ID when the caller
sent a sane one, else a new one, and echoes it in the answer), governance/task_base.py the task's.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
task_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("task_id", default="")

# An incoming id is copied into every log line: keep it short and plain, or make a new one.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ContextIds(logging.Filter):
    """Puts request_id and task_id on every record (empty outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.task_id = task_id_var.get()
        return True


def json_formatter():
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(task_id)s %(process)d",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


def logging_config(*, log_format: str, level: str) -> dict:
    formatter = {"()": "governance.logs.json_formatter"} if log_format == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context_ids": {"()": "governance.logs.ContextIds"}},
        "formatters": {"main": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["context_ids"]}},
        "root": {"handlers": ["console"], "level": level},
    }


class RequestIdMiddleware:
    """Every request gets an id: the caller's X-Request-ID (a load balancer's) when it is sane, else a new one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        # Left set until the request is finished (request_id_clear): Django logs a 4xx or 5xx after every
        # middleware has returned, and that line must carry the id too.
        request_id_var.set(request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def request_id_clear(**kwargs) -> None:
    """request_finished: lines the thread writes between requests carry no request's id."""
    request_id_var.set("")
