"""One error shape for the whole API: {"error": {"code", "message", "fields"?}}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from governance.errors import error_body
from governance.services import PermissionDenied


def _message(detail) -> str:
    if isinstance(detail, list):
        return "; ".join(_message(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_message(v)}" for k, v in detail.items())
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc))
    elif isinstance(exc, ValueError):
        exc = exceptions.ValidationError({"detail": str(exc)})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, (Http404, exceptions.NotFound)):
        code = "not_found"
    elif isinstance(exc, (DjangoPermissionDenied, exceptions.PermissionDenied)):
        code = "permission_denied"
    body = {"code": code, "message": _message(response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data)}
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        body["fields"] = exc.detail
        body["message"] = _message(exc.detail)
    response.data = {"error": body}
    return response


def error_response(message: str, http_status=status.HTTP_400_BAD_REQUEST, code="invalid") -> Response:
    return Response(error_body(code, message), status=http_status)


class ErrorDetailOutput(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorOutput(serializers.Serializer):
    """The one error shape, for responses an operation documents itself (409, ...)."""

    error = ErrorDetailOutput()
