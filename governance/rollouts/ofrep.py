"""OFREP, the OpenFeature Remote Evaluation Protocol: how agents learn which version to run.

    POST /ofrep/v1/evaluate/flags/{key}   one flag for {"context": {"targetingKey": ...}}
    POST /ofrep/v1/evaluate/flags         every flag of the project, with an ETag; If-None-Match -> 304

Authenticated by the project's ingest key, as a Bearer token (or X-API-Key, the protocol's other
scheme). Every agent asks on start and often after, so this is a hot path: governance/wsgi.py hands
/ofrep/ straight to `ofrep_wsgi`, past Django's middleware (no session, CSRF or messages work), and
the ingest key and the flag's rollout are cached in the process for OFREP_CACHE_SECONDS (1 s), so
a rollback reaches every agent at its first evaluation after that. `ofrep_view` serves the same
answers through Django's URLs for the development server and the test client.

Answers follow the protocol (service/openapi.yaml of open-feature/protocol): 200 with key, reason
(SPLIT or STATIC), variant and value; 400 {key, errorCode: PARSE_ERROR | TARGETING_KEY_MISSING |
INVALID_CONTEXT, errorDetails}; 404 FLAG_NOT_FOUND; 401/403 for a missing, unknown or revoked
key; 429 with Retry-After (seconds) over OFREP_RATE_LIMIT_PER_SECOND; 503 when the database is
unreachable. Other failures answer {"errorDetails": ...}, the protocol's general error shape.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from governance.rollouts.core.flag import FlagRollout, flag_evaluate

PREFIX = "/ofrep/v1/evaluate/flags"
JSON_TYPE = "application/json"
ROLLOUT_COLUMNS = ("id", "flag_key", "state", "weight", "baseline_version", "canary_version", "known_good_version")


@dataclass
class Answer:
    status: int
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else orjson.dumps(self.body)


class Refusal(Exception):
    def __init__(self, answer: Answer):
        super().__init__(answer.status)
        self.answer = answer


def _refuse(status: int, details: str, **extra) -> Refusal:
    return Refusal(Answer(status, {**extra, "errorDetails": details}))


class TtlCache:
    """A small in-process map whose entries live `seconds`; bounded, so junk keys cannot grow it."""

    def __init__(self, max_entries: int = 10_000):
        self.entries: dict = {}
        self.max_entries = max_entries

    def get(self, key, seconds: float):
        entry = self.entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < seconds:
            return entry[1]
        return _MISSING

    def put(self, key, value) -> None:
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self.entries.clear()


_MISSING = object()
_keys = TtlCache()  # sha256 of the raw key -> project id, or the refusal for it
_flags = TtlCache()  # (project id, flag key) -> FlagRollout or None
_project_flags = TtlCache()  # project id -> [FlagRollout], for bulk evaluation


def caches_clear() -> None:
    """Forget every cached key and rollout (tests; a process that must see a change at once)."""
    for cache in (_keys, _flags, _project_flags):
        cache.clear()
    _limiter.windows.clear()


class RateLimiter:
    """Evaluations per key per second, counted in fixed one-second windows in this process."""

    def __init__(self):
        self.windows: dict[str, list] = {}
        self.lock = threading.Lock()

    def retry_after(self, key_id: str, limit: int) -> int | None:
        """None when the evaluation may go ahead, else the seconds until the next window."""
        if limit <= 0:
            return None
        now = time.monotonic()
        window = math.floor(now)
        with self.lock:
            current = self.windows.get(key_id)
            if current is None or current[0] != window:
                self.windows[key_id] = [window, 1]
                return None
            current[1] += 1
            if current[1] <= limit:
                return None
        return max(1, math.ceil(window + 1 - now))


_limiter = RateLimiter()


def _cache_seconds() -> float:
    return settings.OFREP_CACHE_SECONDS


def _raw_key(authorization: str, api_key: str) -> str:
    value = (authorization or "").strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value or (api_key or "").strip()


def _project_of_key(raw: str) -> tuple[int, str]:
    """(project id, digest) of an ingest key; 401 missing or unknown, 403 revoked."""
    if not raw:
        raise _refuse(401, "missing ingest key: send 'Authorization: Bearer <key>'")
    digest = hashlib.sha256(raw.encode()).hexdigest()
    known = _keys.get(digest, _cache_seconds())
    if known is _MISSING:
        from governance.services import IngestKeyRevoked, IngestKeyUnknown, ingest_key_authenticate

        _database_ready()
        try:
            known = ingest_key_authenticate(raw).project_id
        except IngestKeyUnknown:
            known = Answer(401, {"errorDetails": "unknown ingest key"})
        except IngestKeyRevoked:
            known = Answer(403, {"errorDetails": "this ingest key was revoked"})
        _keys.put(digest, known)
    if isinstance(known, Answer):
        raise Refusal(known)
    return known, digest


_request = threading.local()  # .connections_unchecked: set by ofrep_wsgi for each request


def _database_ready() -> None:
    # What Django does at the start of each request (ofrep_wsgi bypasses it), here only when the
    # cache misses: drop a connection past its age or broken, so a database restart costs one
    # evaluation at most. Django's own requests (ofrep_view) have had this done already.
    if getattr(_request, "connections_unchecked", False):
        _request.connections_unchecked = False
        close_old_connections()


def _flag_rollout(project_id: int, flag_key: str) -> FlagRollout | None:
    cached = _flags.get((project_id, flag_key), _cache_seconds())
    if cached is _MISSING:
        from governance.rollouts.models import Rollout

        _database_ready()
        row = (Rollout.objects.filter(project_id=project_id, flag_key=flag_key).order_by("-id")
               .values_list(*ROLLOUT_COLUMNS).first())
        cached = FlagRollout(*row) if row else None
        _flags.put((project_id, flag_key), cached)
    return cached


def _project_rollouts(project_id: int) -> list[FlagRollout]:
    cached = _project_flags.get(project_id, _cache_seconds())
    if cached is _MISSING:
        from django.db.models import Max

        from governance.rollouts.models import Rollout

        _database_ready()
        latest = (Rollout.objects.filter(project_id=project_id).values("flag_key")
                  .annotate(latest=Max("id")).values("latest"))
        rows = Rollout.objects.filter(id__in=latest).order_by("flag_key").values_list(*ROLLOUT_COLUMNS)
        cached = [FlagRollout(*row) for row in rows]
        _project_flags.put(project_id, cached)
    return cached


def _targeting_key(body: bytes, flag_key: str | None) -> str:
    """The context's targetingKey, or the protocol's 400 for what is wrong with the body."""
    extra = {} if flag_key is None else {"key": flag_key}

    def refuse(code: str, details: str) -> Refusal:
        return _refuse(400, details, errorCode=code, **extra)

    if len(body) > settings.OFREP_MAX_BODY_BYTES:
        raise refuse("PARSE_ERROR", f"the body is over the limit of {settings.OFREP_MAX_BODY_BYTES} bytes")
    try:
        request = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise refuse("PARSE_ERROR", f"the body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise refuse("PARSE_ERROR", "the body must be a JSON object: {\"context\": {\"targetingKey\": ...}}")
    context = request.get("context")
    if context is None:
        raise refuse("TARGETING_KEY_MISSING", "the request has no context: send {\"context\": {\"targetingKey\": ...}}")
    if not isinstance(context, dict):
        raise refuse("INVALID_CONTEXT", "context must be a JSON object")
    targeting_key = context.get("targetingKey")
    if targeting_key is None or targeting_key == "":
        raise refuse("TARGETING_KEY_MISSING", "context.targetingKey is missing: send the agent instance's id")
    if not isinstance(targeting_key, str):
        raise refuse("INVALID_CONTEXT", "context.targetingKey must be a string")
    return targeting_key


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def ofrep_answer(*, method: str, path: str, body: bytes, authorization: str = "", api_key: str = "",
                 if_none_match: str = "") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one OFREP request, whichever server carried it."""
    try:
        answer = _answer(method, path, body, authorization, api_key)
    except Refusal as refusal:
        answer = refusal.answer
    except DatabaseError:
        answer = Answer(503, {"errorDetails": "the database is unavailable; try again shortly"}, {"Retry-After": "1"})
    encoded = answer.encoded()
    headers = dict(answer.headers)
    if answer.body is not None:
        headers["Content-Type"] = JSON_TYPE
    if answer.status == 200 and "ETag" in headers and if_none_match and _matches(if_none_match, headers["ETag"]):
        return 304, {"ETag": headers["ETag"]}, b""
    return answer.status, headers, encoded


def _answer(method: str, path: str, body: bytes, authorization: str, api_key: str) -> Answer:
    rest = path.removeprefix(PREFIX) if path.startswith(PREFIX) else None
    if rest is None or (rest and not rest.startswith("/")):
        raise _refuse(404, f"no OFREP endpoint at {path[:200]}: POST {PREFIX}/{{key}} or {PREFIX}")
    flag_key = rest[1:] or None
    if method != "POST":
        raise Refusal(Answer(405, {"errorDetails": f"{method} is not allowed: POST an evaluation request"},
                             {"Allow": "POST"}))
    # The limit is per ingest key, not per project: two teams' keys on one project do not starve each other.
    project_id, key_digest = _project_of_key(_raw_key(authorization, api_key))
    wait = _limiter.retry_after(key_digest, settings.OFREP_RATE_LIMIT_PER_SECOND)
    if wait is not None:
        raise Refusal(Answer(429, {"errorDetails": f"over {settings.OFREP_RATE_LIMIT_PER_SECOND} evaluations "
                                                   "a second for this key"}, {"Retry-After": str(wait)}))
    targeting_key = _targeting_key(body, flag_key)
    if flag_key is not None:
        rollout = None if "\x00" in flag_key else _flag_rollout(project_id, flag_key)  # text in SQL holds no NUL
        if rollout is None:
            raise _refuse(404, f"no rollout in this project has the flag {flag_key!r}",
                          key=flag_key, errorCode="FLAG_NOT_FOUND")
        return Answer(200, flag_evaluate(rollout, targeting_key))
    flags = {"flags": [flag_evaluate(rollout, targeting_key) for rollout in _project_rollouts(project_id)]}
    return Answer(200, flags, {"ETag": _etag(orjson.dumps(flags))})


def _read_wsgi_body(environ) -> bytes:
    limit = settings.OFREP_MAX_BODY_BYTES
    declared = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if declared.isdigit():
        return stream.read(min(int(declared), limit + 1))
    if environ.get("wsgi.input_terminated"):  # gunicorn has decoded a chunked body
        return stream.read(limit + 1)
    return b""


def ofrep_wsgi(environ, start_response):
    """The WSGI application for /ofrep/ (governance/wsgi.py routes to it before Django)."""
    _request.connections_unchecked = True
    status, headers, body = ofrep_answer(
        method=environ.get("REQUEST_METHOD", "GET"), path=environ.get("PATH_INFO", ""),
        body=_read_wsgi_body(environ), authorization=environ.get("HTTP_AUTHORIZATION", ""),
        api_key=environ.get("HTTP_X_API_KEY", ""), if_none_match=environ.get("HTTP_IF_NONE_MATCH", ""))
    headers["Content-Length"] = str(len(body))
    start_response(f"{status} {_REASONS.get(status, 'Unknown')}", list(headers.items()))
    return [body]


_REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests", 503: "Service Unavailable"}


@csrf_exempt
def ofrep_view(request):
    status, headers, body = ofrep_answer(
        method=request.method, path=request.path_info, body=request.body,
        authorization=request.META.get("HTTP_AUTHORIZATION", ""), api_key=request.META.get("HTTP_X_API_KEY", ""),
        if_none_match=request.META.get("HTTP_IF_NONE_MATCH", ""))
    response = HttpResponse(body, status=status, content_type=headers.pop("Content-Type", None))
    for name, value in headers.items():
        response[name] = value
    return response
