"""The OpenAPI schema says everything the API answers, errors included: schemathesis holds the
running server to it (tests/test_api_schema.py)."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "description": "The one error shape of the API (governance/api/errors.py, governance/errors.py).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "e.g. invalid, not_authenticated, permission_denied, "
                                                          "not_found, conflict, invalid_policy, unavailable"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True,
                           "description": "invalid input: what is wrong with each field"},
                "problems": {"type": "array", "items": {"type": "object"},
                             "description": "invalid_policy: the located problems of the policy text"},
            },
            "required": ["code", "message"],
        },
    },
    "required": ["error"],
}

# What any operation may answer besides its own responses.
ERRORS = {
    "400": "invalid input (the message and `fields` say what is wrong), or a NUL byte in the address. "
           "A request line over the web server's limit (gunicorn: 4094 bytes) is refused by the server "
           "itself, before Causeway, as a text/html page",
    "401": "no credentials, or a wrong or expired token (with `WWW-Authenticate: Token`)",
    "403": "your role in the project does not allow this",
    "404": "no such project or object among yours",
    "503": "the database is unavailable: retry after `Retry-After` seconds",
}
# ... and an operation that takes a body.
BODY_ERRORS = {
    "413": "the request body is over the upload limit",
    "415": "the body is not JSON",
}


def _closed(schema, schemas: dict, *, seen: set) -> None:
    """Request bodies and the objects nested in them take no field they do not name."""
    if isinstance(schema, list):
        for item in schema:
            _closed(item, schemas, seen=seen)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref", "")
    if ref and ref not in seen:
        seen.add(ref)
        component = schemas[ref.rsplit("/", 1)[1]]
        if component.get("type") == "object" and "properties" in component:
            component["additionalProperties"] = False
        _closed(component, schemas, seen=seen)
    for value in schema.values():
        if isinstance(value, (dict, list)):
            _closed(value, schemas, seen=seen)


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the error responses of every operation, in the error
    shape; request bodies take no field they do not name (governance.api.inputs.JsonBody)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["ApiError"] = ERROR_SCHEMA
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
    server_page = {"text/html": {"schema": {"type": "string"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            _closed(body, schemas, seen=set())
            errors = ERRORS | (BODY_ERRORS if method in ("post", "put", "patch") else {})
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                response = responses.setdefault(status, {"description": description})
                response.setdefault("content", dict(error_content))
                if status == "400":
                    response["content"].update(server_page)
    return result
