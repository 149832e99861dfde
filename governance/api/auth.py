"""API tokens: django-rest-knox keeps only a SHA-512 digest of each token (the token is
shown once, when it is made), looks tokens up by their first characters and compares
digests in constant time. See governance.services.api_token_create."""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

# Tokens are "cwt_" and 64 hex digits (older ones, carried over from plain-text storage,
# 40 hex digits). Anything else is refused before knox decodes it as UTF-8 and looks it up:
# other bytes, or a NUL the database cannot compare, would otherwise fail as a 500.
TOKEN_SHAPE = re.compile(rb"[0-9A-Za-z_]{1,128}")


class ApiTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <token>`; without credentials the API answers 401 with
    `WWW-Authenticate: Token` (DRF takes the header from the first authentication class)."""

    def authenticate_credentials(self, token: bytes):
        if not TOKEN_SHAPE.fullmatch(token):
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the token."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")
