"""The OpenAPI 3.1 document, generated from the pydantic models and the routes served.

Each operation lists every status it can answer with, the credential it needs and a
request and a response example, so schema-driven fuzzers (schemathesis) can check the
server against it and a person can call a route without reading the code. The prose
reference is ``docs/api.md``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import urlencode

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Route

from keyturn import schemas as models
from keyturn.__about__ import __version__
from keyturn.config import Settings
from keyturn.server.v1 import IDENTITY_HEADERS

__all__ = ["docs_page", "openapi_document"]

_REF = "#/components/schemas/{model}"
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class _Op:
    summary: str
    tag: str
    request: type[BaseModel] | dict[str, Any] | None = None
    request_types: tuple[str, ...] = (_JSON,)
    responses: dict[str, Any] = field(default_factory=dict)
    params: tuple[dict[str, Any], ...] = ()
    #: Security requirements, any one of which is enough; ``""`` is "no credential".
    security: tuple[str, ...] = ()
    #: False where an empty body means "all defaults".
    body_required: bool = True
    #: A request body and a success-response body to show (OpenAPI ``example``).
    example: dict[str, Any] | None = None
    answer: Any = None


def _body(schema: Any, media: str = _JSON, description: str = "") -> dict[str, Any]:
    return {"description": description or "OK", "content": {media: {"schema": schema}}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


_EMPTY_OBJECT = {"type": "object", "maxProperties": 0}
_FIELD_ERRORS = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_PROBLEM_SCHEMA = {"$ref": _REF.format(model="Problem")}
_OAUTH_ERROR = {"$ref": _REF.format(model="OAuthError")}
_NO_BODY = {"description": "No body"}
_CHALLENGE = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "The challenge"}}
_BEARER_401 = {
    "description": "Missing, malformed, expired, forged or revoked token "
    "(RFC 6750; see WWW-Authenticate)",
    "headers": _CHALLENGE,
}
_PROBLEMS = {
    code: _body(_PROBLEM_SCHEMA, _PROBLEM, text)
    for code, text in {
        "400": "Invalid request",
        "401": "Admin credential required",
        "404": "Not found",
        "409": "Conflict",
        "413": "Body too large",
        "415": "Unsupported media type",
        "429": "Rate limited (Retry-After)",
        "503": "Storage unavailable (Retry-After)",
    }.items()
}


def _problems(*codes: str) -> dict[str, Any]:
    """The problem+json responses for ``codes``."""
    return {code: _PROBLEMS[code] for code in codes}


def _legacy_errors(*codes: str) -> dict[str, Any]:
    table = {
        "400": _body({"anyOf": [_FIELD_ERRORS, _EMPTY_OBJECT]}, _JSON, "Bad JSON or fields"),
        "401": _body(_EMPTY_OBJECT, _JSON, "Unknown, expired or revoked credential"),
        "409": _body(_ref(models.BoolResponse), _JSON, "Registered to another identifier"),
        "413": _PROBLEMS["413"],
        "415": _PROBLEMS["415"],
        "429": _body(_EMPTY_OBJECT, _JSON, "Rate limited (Retry-After)"),
        "503": _body(_EMPTY_OBJECT, _JSON, "Storage unavailable (Retry-After)"),
    }
    return {code: table[code] for code in codes}


def _oauth_errors() -> dict[str, Any]:
    return {
        "400": _body(
            _OAUTH_ERROR,
            _JSON,
            "RFC 6749 §5.2 error: invalid_grant (an unknown, expired, revoked or reused "
            "refresh token, or one of another client), invalid_scope, invalid_request "
            "(a missing refresh_token, HTTP Basic and client_secret both sent), "
            "unsupported_grant_type",
        ),
        "401": {
            **_body(
                _OAUTH_ERROR,
                _JSON,
                "invalid_client: no client authentication, or an unknown, wrong, revoked or "
                "expired API key, or a client_id that does not name the key "
                "(WWW-Authenticate: Basic when HTTP Basic was used)",
            ),
            "headers": _CHALLENGE,
        },
        "413": _PROBLEMS["413"],
        "415": _PROBLEMS["415"],
        "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
        "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable (Retry-After)"),
    }


_TEXT = {"type": "string", "minLength": 1}
#: RFC 6749 §3.3: space-separated tokens of printable ASCII but '"' and '\\'.
_SCOPE = {"type": "string", "pattern": "^[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]*$"}

# RFC 7523 §2.2: private_key_jwt client authentication, instead of a client_secret.
_ASSERTION_FIELDS: Final = {
    "client_assertion_type": {
        "type": "string",
        "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
    },
    "client_assertion": {
        **_TEXT,
        "description": "A JWT signed by one of the key's public keys (private_key_jwt)",
    },
}


def _params(required: tuple[str, ...], **fields: Any) -> dict[str, Any]:
    """An RFC 6749 parameter set: form-encoded or a flat JSON object of strings.

    Parameters the server does not know are ignored (RFC 6749 §3.1), so any other
    string member is allowed; an empty required parameter counts as missing.
    """
    return {
        "type": "object",
        "properties": fields,
        "required": list(required),
        "additionalProperties": {"type": "string"},
    }


_TOKEN_FORM = _params(
    ("grant_type",),
    grant_type={"type": "string", "enum": ["client_credentials", "refresh_token"]},
    client_id={"type": "string", "description": "The key id (optional with client_secret)"},
    client_secret={**_TEXT, "description": "The API key (or send it with HTTP Basic)"},
    refresh_token={**_TEXT, "description": "Required with grant_type=refresh_token"},
    scope={**_SCOPE, "description": "Space-separated scopes, a subset of the key's"},
    identifier={"type": "string", "description": "Must match the key's identifier, if sent"},
    **_ASSERTION_FIELDS,
) | {
    "if": {"properties": {"grant_type": {"const": "refresh_token"}}},
    "then": {"required": ["refresh_token"]},
}
_TOKEN_ONLY = _params(
    ("token",),
    token=_TEXT,
    token_type_hint={"type": "string", "description": "access_token or refresh_token"},
)
_REVOKE_FORM = _params(
    ("token",),
    token=_TEXT,
    token_type_hint={"type": "string", "description": "access_token or refresh_token"},
    client_id={"type": "string", "description": "The key id (optional with client_secret)"},
    client_secret={**_TEXT, "description": "The API key (or send it with HTTP Basic)"},
    **_ASSERTION_FIELDS,
)
_LOGIN_FIELDS: dict[str, Any] = {
    "email": _TEXT,
    "password": {**_TEXT, "format": "password"},
}
_LOGIN_FORM = _params(("email", "password"), **_LOGIN_FIELDS)
_LOGIN_V1_FORM = _params(("email", "password"), **_LOGIN_FIELDS, scope=_SCOPE)
_LOGOUT_FORM = _params(("refresh_token",), refresh_token=_TEXT)
_USER_ID = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SCOPE_QUERY = {
    "name": "scope",
    "in": "query",
    "required": False,
    "schema": _SCOPE,
    "description": "Space-separated scopes the token must carry (else 403)",
}
_KEY_ID = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}


def _query(
    name: str, description: str = "", schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema or {"type": "string"},
    }
    if description:
        parameter["description"] = description
    return parameter


def _flag(name: str, description: str) -> dict[str, Any]:
    return _query(name, description, {"type": "boolean"})


def _limit(default: int) -> dict[str, Any]:
    return _query("limit", f"Page size (default {default})", {**_LIMIT, "default": default})


#: Example values, consistent across the examples.
_KEY_ID_EX = "Xq3Vb9kLmP2rT5wZ"
_API_KEY_EX = f"kt_{_KEY_ID_EX}_7hQe2RkVn8sXyJ4aLc0Pw9GtMbZ3uFdKiHo6Ev1YsNq5"
_JWT_EX = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6IjIwMjYtMDMtMDEiLCJ0eXAiOiJKV1QifQ"
    ".eyJzdWIiOiJrZXk6WHEzVmI5a0xtUDJyVDV3WiIsInNjb3BlIjoicmVhZCJ9.c2lnbmF0dXJl"
)
_REFRESH_EX = "ktr_Rf8Lq2Wv6Zt1Yp4Ks9Hd3Nx7Bm5Cj0Ga"
_IDENTIFIER_EX = "7d3c9b1e-5f0a-4c61-9a4e-2b8f6a0d1c55"
_USER_ID_EX = "Ua7Kp2Qx9Lm4Rt6W"
_AT_EX = "2026-03-01T12:00:00Z"
_TOKEN_ANSWER = {
    "access_token": _JWT_EX,
    "token_type": "Bearer",
    "expires_in": 900,
    "scope": "read",
}
_KEY_EX: dict[str, Any] = {
    "id": _KEY_ID_EX,
    "name": "billing-service",
    "identifier": None,
    "roles": [],
    "scopes": ["read"],
    "extra_claims": {},
    "metadata": {"team": "billing"},
    "legacy": False,
    "created_at": _AT_EX,
    "expires_at": None,
    "last_used_at": None,
    "revoked_at": None,
    "revoked_reason": None,
    "rotation_grace_until": None,
}
_USER_EX: dict[str, Any] = {
    "id": _USER_ID_EX,
    "email": "ada@example.com",
    "roles": [],
    "scopes": None,
    "created_at": _AT_EX,
    "disabled_at": None,
    "disabled_reason": None,
    "password_changed_at": _AT_EX,
    "last_login_at": None,
    "failed_logins": 0,
    "last_failed_login_at": None,
}
_JWKS_EX = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "kid": "2026-03-01",
            "use": "sig",
            "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    ]
}
_HEALTH_EX = {"result": True}
#: The admin listener's guard (AdminGuard): refused before the route runs.
_ADMIN_401 = _body(
    _PROBLEM_SCHEMA,
    _PROBLEM,
    "The caller is not on loopback and KEYTURN_ADMIN_TOKEN is unset, or the admin "
    "bearer token is missing or wrong (it is demanded from every caller, loopback too, "
    "whenever KEYTURN_ADMIN_TOKEN is set)",
)

OPERATIONS: dict[tuple[str, str], _Op] = {
    ("post", "/authenticate"): _Op(
        "Trade an API key for a JWT and refresh token (JWThenticator)",
        "legacy",
        models.AuthenticateRequest,
        responses={
            "200": _body(_ref(models.LegacyTokenResponse)),
            **_legacy_errors("400", "401", "413", "415", "429", "503"),
        },
        example={"key": "my-caller-chosen-key", "identifier": _IDENTIFIER_EX},
        answer={"jwt": _JWT_EX, "refresh_token": _REFRESH_EX},
    ),
    ("post", "/refresh"): _Op(
        "A new JWT for a legacy refresh token (JWThenticator)",
        "legacy",
        models.RefreshRequest,
        responses={
            "200": _body(_ref(models.LegacyTokenResponse)),
            **_legacy_errors("400", "401", "413", "415", "429", "503"),
        },
        example={"refresh_token": _REFRESH_EX, "identifier": _IDENTIFIER_EX},
        answer={"jwt": _JWT_EX},
    ),
    ("post", "/validate"): _Op(
        "Check a JWT (JWThenticator)",
        "legacy",
        models.ValidateRequest,
        responses={
            "200": _body(_ref(models.BoolResponse)),
            **_legacy_errors("400", "401", "413", "415"),
        },
        example={"jwt": _JWT_EX},
        answer={"result": True},
    ),
    ("get", "/validate_request"): _Op(
        "Check the bearer token, for nginx auth_request (JWThenticator)",
        "legacy",
        responses={"200": _body(_EMPTY_OBJECT), "401": _BEARER_401},
        security=("bearer",),
        answer={},
    ),
    ("get", "/"): _Op(
        "Health (JWThenticator)",
        "legacy",
        responses={"200": _body(_ref(models.BoolResponse))},
        answer=_HEALTH_EX,
    ),
    ("get", "/health"): _Op(
        "Health (JWThenticator)",
        "legacy",
        responses={"200": _body(_ref(models.BoolResponse))},
        answer=_HEALTH_EX,
    ),
    ("get", "/jwks"): _Op(
        "Public signing keys (JWThenticator path)",
        "legacy",
        responses={"200": _body(_ref(models.JWKSOut))},
        answer=_JWKS_EX,
    ),
    ("post", "/register_key"): _Op(
        "Register a caller-chosen key (JWThenticator internal API)",
        "legacy-admin",
        models.RegisterKeyRequest,
        responses={
            "201": _body(_ref(models.BoolResponse)),
            "400": _body(
                {"anyOf": [_FIELD_ERRORS, _EMPTY_OBJECT]},
                _JSON,
                "Bad JSON or fields, or a key that can never be registered (empty, not "
                "printable, or starting with kt_ or ktr_)",
            ),
            **_legacy_errors("409", "413", "415", "503"),
        },
        example={"key": "my-caller-chosen-key", "identifier": _IDENTIFIER_EX},
        answer={"result": True},
    ),
    ("post", "/is_key_registered"): _Op(
        "Is this key registered? (JWThenticator internal API)",
        "legacy-admin",
        models.KeyRequest,
        responses={
            "200": _body(_ref(models.BoolResponse)),
            **_legacy_errors("400", "413", "415", "503"),
        },
        example={"key": "my-caller-chosen-key"},
        answer={"result": True},
    ),
    ("post", "/v1/token"): _Op(
        "OAuth 2.0 token endpoint: client_credentials and refresh_token",
        "v1",
        _TOKEN_FORM,
        (_FORM, _JSON),
        responses={"200": _body(_ref(models.TokenResponse)), **_oauth_errors()},
        security=("basic", ""),
        example={"grant_type": "client_credentials", "scope": "read"},
        answer=_TOKEN_ANSWER,
    ),
    ("post", "/v1/revoke"): _Op(
        "Revoke a refresh or access token (RFC 7009)",
        "v1",
        _REVOKE_FORM,
        (_FORM, _JSON),
        responses={
            "200": _NO_BODY,
            "400": _body(
                _OAUTH_ERROR,
                _JSON,
                "invalid_request (missing token); unauthorized_client (the token was issued "
                "to another client than the authenticated one; it stays valid)",
            ),
            "401": {
                **_body(
                    _OAUTH_ERROR,
                    _JSON,
                    "invalid_client: the client credentials sent are wrong (the token stays valid)",
                ),
                "headers": _CHALLENGE,
            },
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
            "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
            "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable"),
        },
        security=("basic", ""),
        example={"token": _REFRESH_EX, "token_type_hint": "refresh_token"},
    ),
    ("post", "/v1/introspect"): _Op(
        "Token introspection (RFC 7662); needs the admin credential",
        "v1",
        _TOKEN_ONLY,
        (_FORM, _JSON),
        responses={
            "200": _body(_ref(models.IntrospectionOut)),
            "401": {
                **_body(_OAUTH_ERROR, _JSON, "invalid_client: the admin credential is missing"),
                "headers": _CHALLENGE,
            },
            "400": _body(_PROBLEM_SCHEMA, _PROBLEM, "A missing token, or a malformed body"),
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
        },
        security=("adminToken",),
        example={"token": _JWT_EX},
        answer={
            "active": True,
            "scope": "read",
            "client_id": _KEY_ID_EX,
            "token_type": "Bearer",
            "exp": 1772367300,
            "iat": 1772366400,
            "sub": f"key:{_KEY_ID_EX}",
            "aud": "api",
            "iss": "https://auth.example.com",
            "jti": "b1f0c2d4e6a8",
        },
    ),
    ("get", "/v1/validate"): _Op(
        "Validate the bearer token for a gateway; identity in X-Keyturn-* headers",
        "v1",
        responses={
            "200": {
                "description": "Valid: the identity is in the X-Keyturn-* headers, no body",
                "headers": {
                    name: {"schema": {"type": "string"}} for name in IDENTITY_HEADERS.values()
                },
            },
            "401": _BEARER_401,
            "403": {"description": "insufficient_scope (RFC 6750)", "headers": _CHALLENGE},
        },
        params=(_SCOPE_QUERY,),
        security=("bearer",),
    ),
    ("post", "/login"): _Op(
        "Log in with email and password; {token} (the aiohttp + PyJWT tutorial's route)",
        "login",
        _LOGIN_FORM,
        (_FORM, _JSON),
        responses={
            "200": _body(_ref(models.LoginResponse)),
            "400": _body(
                _PROBLEM_SCHEMA,
                _PROBLEM,
                "Wrong credentials (an unknown email, a wrong password, a disabled user; "
                'also {"message": "Wrong credentials"}), or a bad request',
            ),
            **_problems("413", "415", "429", "503"),
        },
        example={"email": "ada@example.com", "password": "correct horse battery staple"},
        answer={"token": _JWT_EX},
    ),
    ("post", "/v1/login"): _Op(
        "Log in with email and password; access and rotating refresh token (RFC 6749 §5.1)",
        "login",
        _LOGIN_V1_FORM,
        (_FORM, _JSON),
        responses={
            "200": _body(_ref(models.TokenResponse)),
            "400": _body(
                _OAUTH_ERROR,
                _JSON,
                "invalid_grant (an unknown email, a wrong password, a disabled user), "
                "invalid_scope, or invalid_request",
            ),
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
            "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
            "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable (Retry-After)"),
        },
        example={"email": "ada@example.com", "password": "correct horse battery staple"},
        answer={**_TOKEN_ANSWER, "refresh_token": _REFRESH_EX},
    ),
    ("post", "/v1/logout"): _Op(
        "Log out: revoke the refresh token's family (200 for unknown tokens too)",
        "login",
        _LOGOUT_FORM,
        (_FORM, _JSON),
        responses={
            "200": _NO_BODY,
            "400": _body(_OAUTH_ERROR, _JSON, "Missing refresh_token"),
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
            "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
            "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable (Retry-After)"),
        },
        example={"refresh_token": _REFRESH_EX},
    ),
    ("get", "/.well-known/jwks.json"): _Op(
        "Public signing keys (JWK Set)",
        "v1",
        responses={"200": _body(_ref(models.JWKSOut), "application/jwk-set+json")},
        answer=_JWKS_EX,
    ),
    ("get", "/.well-known/oauth-authorization-server"): _Op(
        "Authorization server metadata (RFC 8414)",
        "v1",
        responses={"200": _body({"type": "object"})},
        answer={
            "issuer": "https://auth.example.com",
            "token_endpoint": "https://auth.example.com/v1/token",
            "jwks_uri": "https://auth.example.com/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials", "refresh_token"],
        },
    ),
    ("get", "/healthz"): _Op(
        "Alive",
        "health",
        responses={"200": _body({"type": "object"})},
        answer={"status": "ok"},
    ),
    ("get", "/readyz"): _Op(
        "Ready: the database answers",
        "health",
        responses={"200": _body({"type": "object"}), "503": _PROBLEMS["503"]},
        answer={"status": "ready"},
    ),
    ("get", "/metrics"): _Op(
        "Prometheus metrics (text exposition format; docs/operations.md)",
        "admin",
        responses={
            "200": _body({"type": "string"}, "text/plain"),
            **_problems("401"),
        },
        answer='keyturn_tokens_issued_total{grant="client_credentials"} 42.0\n',
    ),
    ("post", "/v1/admin/keys"): _Op(
        "Create an API key (the secret is returned once)",
        "admin",
        models.CreateKeyRequest,
        responses={
            "201": _body(_ref(models.CreatedKeyOut)),
            "400": _body(
                _PROBLEM_SCHEMA,
                _PROBLEM,
                "Invalid fields, or refused by the policy: a role it does not define, "
                "scopes beyond it, an expires_at in the past",
            ),
            **_problems("401", "413", "415", "503"),
        },
        example={"name": "billing-service", "scopes": ["read"], "metadata": {"team": "billing"}},
        answer={"key": _API_KEY_EX, "record": _KEY_EX},
    ),
    ("get", "/v1/admin/keys"): _Op(
        "List API keys (keyset pagination)",
        "admin",
        responses={
            "200": _body(_ref(models.KeyPageOut)),
            **_problems("400", "401", "503"),
        },
        params=(
            _limit(50),
            _query("after", "The next_after of the previous page"),
            _query("identifier", "Only keys with this identifier"),
            _flag("include_revoked", "false: leave revoked keys out (default true)"),
        ),
        answer={"keys": [_KEY_EX], "next_after": None},
    ),
    ("get", "/v1/admin/keys/{key_id}"): _Op(
        "Show an API key",
        "admin",
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.KeyOut)),
            **_problems("401", "404", "503"),
        },
        answer=_KEY_EX,
    ),
    ("post", "/v1/admin/keys/{key_id}/revoke"): _Op(
        "Revoke an API key and its tokens",
        "admin",
        models.RevokeKeyRequest,
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.KeyOut)),
            **_problems("400", "401", "404", "413", "415", "503"),
        },
        body_required=False,
        example={"reason": "leaked in a build log"},
        answer={**_KEY_EX, "revoked_at": _AT_EX, "revoked_reason": "leaked in a build log"},
    ),
    ("post", "/v1/admin/keys/{key_id}/rotate"): _Op(
        "Give an API key a new secret",
        "admin",
        models.RotateKeyRequest,
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.CreatedKeyOut)),
            **_problems("400", "401", "404", "409", "413", "415", "503"),
        },
        body_required=False,
        example={"grace_seconds": 3600},
        answer={"key": _API_KEY_EX, "record": {**_KEY_EX, "rotation_grace_until": _AT_EX}},
    ),
    ("get", "/v1/admin/keys/{key_id}/public-keys"): _Op(
        "List the public keys a key authenticates with (private_key_jwt)",
        "admin",
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.PublicKeysOut)),
            **_problems("401", "404", "503"),
        },
    ),
    ("post", "/v1/admin/keys/{key_id}/public-keys"): _Op(
        "Add public keys to a key (a JWK Set; never a private key)",
        "admin",
        models.JWKSetIn,
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.PublicKeysOut)),
            **_problems("400", "401", "404", "409", "413", "415", "503"),
        },
    ),
    ("delete", "/v1/admin/keys/{key_id}/public-keys/{kid}"): _Op(
        "Remove a public key from a key",
        "admin",
        params=(
            _KEY_ID,
            {"name": "kid", "in": "path", "required": True, "schema": {"type": "string"}},
        ),
        responses={"204": {"description": "Removed"}, **_problems("401", "404", "503")},
    ),
    ("post", "/v1/admin/users"): _Op(
        "Create a user who logs in with email and password",
        "admin",
        models.CreateUserRequest,
        responses={
            "201": _body(_ref(models.UserOut)),
            "400": _body(
                _PROBLEM_SCHEMA,
                _PROBLEM,
                "Invalid fields, or refused by the password rules or the policy: a password "
                "too short, too long or too common, a role the policy does not define",
            ),
            **_problems("401", "409", "413", "415", "503"),
        },
        example={"email": "ada@example.com", "password": "correct horse battery staple"},
        answer=_USER_EX,
    ),
    ("get", "/v1/admin/users"): _Op(
        "List users (keyset pagination)",
        "admin",
        responses={
            "200": _body(_ref(models.UserPageOut)),
            **_problems("400", "401", "503"),
        },
        params=(
            _limit(50),
            _query("after", "The next_after of the previous page"),
            _flag("include_disabled", "false: leave disabled users out (default true)"),
        ),
        answer={"users": [_USER_EX], "next_after": None},
    ),
    ("get", "/v1/admin/users/{user_id}"): _Op(
        "Show a user",
        "admin",
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            **_problems("401", "404", "503"),
        },
        answer=_USER_EX,
    ),
    ("post", "/v1/admin/users/{user_id}/disable"): _Op(
        "Disable a user: no logins or refreshes; their tokens are revoked",
        "admin",
        models.DisableUserRequest,
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            **_problems("400", "401", "404", "413", "415", "503"),
        },
        body_required=False,
        example={"reason": "left the company"},
        answer={**_USER_EX, "disabled_at": _AT_EX, "disabled_reason": "left the company"},
    ),
    ("post", "/v1/admin/users/{user_id}/enable"): _Op(
        "Enable a disabled user",
        "admin",
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            **_problems("401", "404", "503"),
        },
        answer=_USER_EX,
    ),
    ("post", "/v1/admin/users/{user_id}/password"): _Op(
        "Set a user's password (their refresh tokens are revoked)",
        "admin",
        models.SetPasswordRequest,
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            "400": _body(
                _PROBLEM_SCHEMA,
                _PROBLEM,
                "Invalid fields, or a password the password rules refuse (too short, too "
                "long, too common)",
            ),
            **_problems("401", "404", "413", "415", "503"),
        },
        example={"password": "a new correct horse battery staple"},
        answer=_USER_EX,
    ),
    ("get", "/v1/admin/signing-keys"): _Op(
        "List signing keys",
        "admin",
        responses={"200": _body({"type": "object"}), **_problems("401", "503")},
        answer={
            "signing_keys": [
                {
                    "kid": "2026-03-01",
                    "alg": "ES256",
                    "state": "active",
                    "created_at": _AT_EX,
                    "activated_at": _AT_EX,
                    "retired_at": None,
                    "publish_until": None,
                }
            ]
        },
    ),
    ("post", "/v1/admin/signing-keys/rotate"): _Op(
        "Start a signing-key rotation",
        "admin",
        responses={"201": _body({"type": "object"}), **_problems("400", "401", "503")},
        params=(_flag("immediately", "true: activate now instead of after the publish delay"),),
        answer={"kid": "2026-06-01", "activated": False},
    ),
    ("get", "/v1/admin/audit"): _Op(
        "Read audit events, newest first",
        "admin",
        responses={
            "200": _body(_ref(models.AuditPage)),
            **_problems("400", "401", "503"),
        },
        params=(
            _limit(100),
            _query(
                "before",
                "The next_before of the previous page",
                {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
            ),
            _query("action", "Only events of this action (e.g. key.create)"),
            _query("target_id", "Only events about this key or user id"),
        ),
        answer={
            "events": [
                {
                    "id": 7,
                    "at": _AT_EX,
                    "action": "key.create",
                    "outcome": "success",
                    "actor": "admin",
                    "target_type": "api_key",
                    "target_id": _KEY_ID_EX,
                    "request_id": "9f2c1a7e5b3d4c6f8a0b1c2d3e4f5a6b",
                    "detail": {},
                }
            ],
            "next_before": None,
        },
    ),
}

_COMPONENT_MODELS: tuple[type[BaseModel], ...] = (
    models.AuthenticateRequest,
    models.RefreshRequest,
    models.ValidateRequest,
    models.RegisterKeyRequest,
    models.KeyRequest,
    models.LegacyTokenResponse,
    models.BoolResponse,
    models.TokenResponse,
    models.IntrospectionOut,
    models.JWKSOut,
    models.LoginResponse,
    models.CreateKeyRequest,
    models.RevokeKeyRequest,
    models.RotateKeyRequest,
    models.KeyOut,
    models.PublicKeyOut,
    models.PublicKeysOut,
    models.CreatedKeyOut,
    models.KeyPageOut,
    models.SigningKeyOut,
    models.AuditEventOut,
    models.AuditPage,
    models.CreateUserRequest,
    models.SetPasswordRequest,
    models.DisableUserRequest,
    models.UserOut,
    models.UserPageOut,
)


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "error": {"type": "string"},
            },
            "required": ["type", "title", "status"],
        },
        "OAuthError": {
            "type": "object",
            "description": "RFC 6749 §5.2 error",
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
            "required": ["error"],
        },
    }
    for model in _COMPONENT_MODELS:
        schema = model.model_json_schema(ref_template=_REF, mode="validation")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema
    return schemas


_METADATA: Final = "/.well-known/oauth-authorization-server"
#: Where the prose reference lives (linked from the document and the /docs page).
API_REFERENCE = "https://github.com/keyturn/keyturn/blob/main/docs/api.md"
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token Keyturn issued (POST /v1/token, /authenticate, /v1/login)",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "Client authentication (RFC 6749 §2.3.1): user name the key id (or "
        "empty), password the API key; or send client_secret in the body instead",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin credential, KEYTURN_ADMIN_TOKEN",
    },
}
_OPEN_ON_ADMIN = frozenset({"/healthz", "/readyz"})


def openapi_document(app: Starlette, *, title: str, settings: Settings) -> dict[str, Any]:
    """Describe every route ``app`` serves (OpenAPI 3.1).

    On the admin listener (``app.state.trusted_admin``) every route but the health checks
    sits behind `AdminGuard`: its 401 is documented on each, and the admin token is
    declared as each one's security when ``KEYTURN_ADMIN_TOKEN`` is set (then it is
    demanded from every caller, loopback too); unset, loopback callers need nothing.
    """
    prefix = settings.url_prefix
    admin = bool(getattr(app.state, "trusted_admin", False))
    guarded = settings.admin_token is not None
    paths: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        if not isinstance(route, Route):
            continue
        path = route.path.removeprefix(prefix) or "/"
        if prefix and path == f"{_METADATA}{prefix}":  # RFC 8414 §3.1's place for it
            path = _METADATA
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op = OPERATIONS.get((method.lower(), path))
            if op is None:
                continue
            if admin and path not in _OPEN_ON_ADMIN:
                op = replace(
                    op,
                    responses={**op.responses, "401": _ADMIN_401},
                    security=("adminToken",) if guarded else (),
                )
            paths.setdefault(route.path, {})[method.lower()] = _operation(op)
    used = {
        name
        for item in paths.values()
        for operation in item.values()
        for requirement in operation.get("security", ())
        for name in requirement
    }
    access = (
        "Every route but /healthz and /readyz needs the admin bearer token "
        "(KEYTURN_ADMIN_TOKEN), from loopback callers too."
        if guarded
        else "KEYTURN_ADMIN_TOKEN is unset: only loopback callers are admitted, with no "
        "credential; others get 401."
    )
    description = "Keyturn turns API keys into short-lived, signed JWTs. " + (
        access if admin else ""
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": f"{description.strip()} Text may not contain U+0000: in an "
            "OAuth-style parameter, an admin body, query or path it is a 400. The reference, "
            f"with curl examples: [docs/api.md]({API_REFERENCE}).",
        },
        "externalDocs": {"description": "API reference (docs/api.md)", "url": API_REFERENCE},
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                name: scheme for name, scheme in _SECURITY_SCHEMES.items() if name in used
            },
        },
    }


def _operation(op: _Op) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": op.responses}
    if op.request is not None:
        schema = _ref(op.request) if isinstance(op.request, type) else op.request
        content: dict[str, Any] = {}
        for media in op.request_types:
            content[media] = {"schema": schema}
            if op.example is not None:
                content[media]["example"] = op.example
        operation["requestBody"] = {"required": op.body_required, "content": content}
    if op.params:
        operation["parameters"] = list(op.params)
    if op.security:
        operation["security"] = [{name: []} if name else {} for name in op.security]
    if op.answer is not None:
        status = next(code for code in op.responses if code.startswith("2"))
        answer = dict(op.responses[status])
        answer["content"] = {
            media: {**entry, "example": op.answer} for media, entry in answer["content"].items()
        }
        operation["responses"] = {**op.responses, status: answer}
    return operation


def _example_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False)


def _examples(op: dict[str, Any]) -> tuple[str, str]:
    """The request (parameters and body) and the success response an operation shows."""
    asked = [f"{parameter['in']} {parameter['name']}" for parameter in op.get("parameters", ())]
    for media, entry in op.get("requestBody", {}).get("content", {}).items():
        if "example" in entry:
            example = entry["example"]
            text = urlencode(example) if media == _FORM else _example_text(example)
            asked.append(f"{media}\n{text}")
            break
    answered = ""
    for code, response in op["responses"].items():
        if code.startswith("2"):
            for media, entry in response.get("content", {}).items():
                if "example" in entry:
                    answered = f"{code} {media}\n{_example_text(entry['example'])}"
            answered = answered or f"{code} {response['description']}"
            break
    return "\n".join(asked), answered


def docs_page(document: dict[str, Any]) -> str:
    """A small self-contained HTML page listing the operations (no external assets)."""
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            statuses = ", ".join(op["responses"])
            asked, answered = _examples(op)
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(statuses)}</td><td><pre>{html.escape(asked)}</pre></td>"
                f"<td><pre>{html.escape(answered)}</pre></td></tr>"
            )
    title = html.escape(document["info"]["title"])
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2rem}}"
        "td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left;"
        "vertical-align:top}pre{margin:0;max-width:28rem;white-space:pre-wrap;"
        "word-break:break-all;font-size:.8rem}</style>"
        f"</head><body><h1>{title}</h1><p>Machine-readable: <a href='openapi.json'>"
        "openapi.json</a> (OpenAPI 3.1, with a request and a response example per route). "
        f"The reference, with curl examples: <a href='{API_REFERENCE}'>docs/api.md</a>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What it does</th><th>Statuses</th>"
        "<th>Request</th><th>Response</th></tr>"
        f"{''.join(rows)}</table></body></html>"
    )
