"""The one list envelope of the API: every list answers {"count", "next", "previous", "results"}."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_LIMIT = 500
# Offsets go to the database as a 64-bit integer.
MAX_OFFSET = 2**63 - 1


class ApiPagination(LimitOffsetPagination):
    """?limit= from 1 to MAX_LIMIT (default 50) and ?offset= from 0; any other value is a 400
    naming the parameter, not silently replaced as DRF does."""

    default_limit = 50
    max_limit = MAX_LIMIT

    def get_limit(self, request) -> int:
        return _whole_number(request, self.limit_query_param, 1, MAX_LIMIT, self.default_limit)

    def get_offset(self, request) -> int:
        return _whole_number(request, self.offset_query_param, 0, MAX_OFFSET, 0)

    def get_schema_operation_parameters(self, view):
        return [
            {"name": self.limit_query_param, "required": False, "in": "query",
             "description": f"how many results, at most {MAX_LIMIT} (default {self.default_limit})",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": self.default_limit}},
            {"name": self.offset_query_param, "required": False, "in": "query",
             "description": "how many results to skip",
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
        ]


def _whole_number(request, name: str, low: int, high: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValidationError({name: f"must be a whole number from {low} to {high}"})
    return value
