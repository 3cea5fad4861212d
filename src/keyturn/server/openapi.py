"""The OpenAPI 3.1 document, generated from the pydantic models and the routes served.

Each operation lists every status it can answer with, so schema-driven fuzzers
(schemathesis) can check status codes and bodies against it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Route

from keyturn.__about__ import __version__
from keyturn.config import Settings
from keyturn.server import models

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
    security: tuple[str, ...] = ()


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
_BEARER_401 = {
    "description": "Missing, malformed, expired, forged or revoked token "
    "(RFC 6750; see WWW-Authenticate)"
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
        "400": _body(_OAUTH_ERROR, _JSON, "RFC 6749 §5.2 error"),
        "401": _body(
            _OAUTH_ERROR,
            _JSON,
            "invalid_client (WWW-Authenticate: Basic): the client's credentials failed, or a "
            "refresh token issued to an API key came without that key's authentication",
        ),
        "413": _PROBLEMS["413"],
        "415": _PROBLEMS["415"],
        "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
        "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable (Retry-After)"),
    }


# RFC 7523 §2.2: private_key_jwt client authentication, instead of a client_secret.
_ASSERTION_FIELDS: Final = {
    "client_assertion_type": {
        "type": "string",
        "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
    },
    "client_assertion": {
        "type": "string",
        "description": "A JWT signed by one of the key's public keys (private_key_jwt)",
    },
}
_TOKEN_FORM = {
    "type": "object",
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials", "refresh_token"]},
        "client_secret": {"type": "string", "description": "The API key (or use HTTP Basic)"},
        "client_id": {"type": "string", "description": "The key's id (optional)"},
        **_ASSERTION_FIELDS,
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
    },
    "required": ["grant_type"],
}
_TOKEN_ONLY = {
    "type": "object",
    "properties": {"token": {"type": "string"}, "token_type_hint": {"type": "string"}},
    "required": ["token"],
}
_REVOKE_FORM = {
    "type": "object",
    "properties": {
        "token": {"type": "string"},
        "token_type_hint": {"type": "string"},
        "client_secret": {"type": "string", "description": "The API key (or use HTTP Basic)"},
        "client_id": {"type": "string", "description": "The key's id (optional)"},
        **_ASSERTION_FIELDS,
    },
    "required": ["token"],
}
_LOGIN_FIELDS: dict[str, Any] = {
    "email": {"type": "string"},
    "password": {"type": "string", "format": "password"},
}
_LOGIN_FORM = {"type": "object", "properties": _LOGIN_FIELDS, "required": ["email", "password"]}
_LOGIN_V1_FORM = {
    "type": "object",
    "properties": {**_LOGIN_FIELDS, "scope": {"type": "string"}},
    "required": ["email", "password"],
}
_LOGOUT_FORM = {
    "type": "object",
    "properties": {"refresh_token": {"type": "string"}},
    "required": ["refresh_token"],
}
_USER_ID = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SCOPE_QUERY = {
    "name": "scope",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "Space-separated required scopes",
}
_KEY_ID = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str = "") -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
    }
    if description:
        parameter["description"] = description
    return parameter


OPERATIONS: dict[tuple[str, str], _Op] = {
    ("post", "/authenticate"): _Op(
        "Trade an API key for a JWT and refresh token (JWThenticator)",
        "legacy",
        models.AuthenticateRequest,
        responses={
            "200": _body(_ref(models.LegacyTokenResponse)),
            **_legacy_errors("400", "401", "413", "415", "429", "503"),
        },
    ),
    ("post", "/refresh"): _Op(
        "A new JWT for a legacy refresh token (JWThenticator)",
        "legacy",
        models.RefreshRequest,
        responses={
            "200": _body(_ref(models.LegacyTokenResponse)),
            **_legacy_errors("400", "401", "413", "415", "429", "503"),
        },
    ),
    ("post", "/validate"): _Op(
        "Check a JWT (JWThenticator)",
        "legacy",
        models.ValidateRequest,
        responses={
            "200": _body(_ref(models.BoolResponse)),
            **_legacy_errors("400", "401", "413", "415"),
        },
    ),
    ("get", "/validate_request"): _Op(
        "Check the bearer token, for nginx auth_request (JWThenticator)",
        "legacy",
        responses={"200": _body(_EMPTY_OBJECT), "401": _BEARER_401},
        security=("bearer",),
    ),
    ("get", "/"): _Op(
        "Health (JWThenticator)", "legacy", responses={"200": _body(_ref(models.BoolResponse))}
    ),
    ("get", "/health"): _Op(
        "Health (JWThenticator)", "legacy", responses={"200": _body(_ref(models.BoolResponse))}
    ),
    ("get", "/jwks"): _Op(
        "Public signing keys (JWThenticator path)",
        "legacy",
        responses={"200": _body(_ref(models.JWKSOut))},
    ),
    ("post", "/register_key"): _Op(
        "Register a caller-chosen key (JWThenticator internal API)",
        "legacy-admin",
        models.RegisterKeyRequest,
        responses={
            "201": _body(_ref(models.BoolResponse)),
            **_legacy_errors("400", "409", "413", "415", "503"),
        },
    ),
    ("post", "/is_key_registered"): _Op(
        "Is this key registered? (JWThenticator internal API)",
        "legacy-admin",
        models.KeyRequest,
        responses={
            "200": _body(_ref(models.BoolResponse)),
            **_legacy_errors("400", "413", "415", "503"),
        },
    ),
    ("post", "/v1/token"): _Op(
        "OAuth 2.0 token endpoint: client_credentials and refresh_token",
        "v1",
        _TOKEN_FORM,
        (_FORM, _JSON),
        responses={"200": _body(_ref(models.TokenResponse)), **_oauth_errors()},
        security=("basic",),
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
            "401": _body(
                _OAUTH_ERROR,
                _JSON,
                "invalid_client (WWW-Authenticate: Basic): the client's credentials failed",
            ),
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
            "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
            "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable"),
        },
    ),
    ("post", "/v1/introspect"): _Op(
        "Token introspection (RFC 7662); needs the admin credential",
        "v1",
        _TOKEN_ONLY,
        (_FORM, _JSON),
        responses={
            "200": _body(_ref(models.IntrospectionOut)),
            "401": _body(_OAUTH_ERROR, _JSON, "Admin credential required"),
            "400": _PROBLEMS["400"],
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
        },
        security=("bearer",),
    ),
    ("get", "/v1/validate"): _Op(
        "Validate the bearer token for a gateway; identity in X-Keyturn-* headers",
        "v1",
        responses={
            "200": _NO_BODY,
            "401": _BEARER_401,
            "403": {"description": "insufficient_scope (RFC 6750)"},
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
            "400": _body(_PROBLEM_SCHEMA, _PROBLEM, "Wrong credentials, or a bad request"),
            **_problems("413", "415", "429", "503"),
        },
    ),
    ("post", "/v1/login"): _Op(
        "Log in with email and password; access and rotating refresh token (RFC 6749 §5.1)",
        "login",
        _LOGIN_V1_FORM,
        (_FORM, _JSON),
        responses={
            "200": _body(_ref(models.TokenResponse)),
            "400": _body(_OAUTH_ERROR, _JSON, "invalid_grant (wrong credentials) or other"),
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
            "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
            "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable (Retry-After)"),
        },
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
    ),
    ("get", "/.well-known/jwks.json"): _Op(
        "Public signing keys (JWK Set)",
        "v1",
        responses={"200": _body(_ref(models.JWKSOut), "application/jwk-set+json")},
    ),
    ("get", "/.well-known/oauth-authorization-server"): _Op(
        "Authorization server metadata (RFC 8414)",
        "v1",
        responses={"200": _body({"type": "object"})},
    ),
    ("get", "/healthz"): _Op("Alive", "health", responses={"200": _body({"type": "object"})}),
    ("get", "/readyz"): _Op(
        "Ready: the database answers",
        "health",
        responses={"200": _body({"type": "object"}), "503": _PROBLEMS["503"]},
    ),
    ("get", "/metrics"): _Op(
        "Prometheus metrics (text exposition format; docs/operations.md)",
        "admin",
        responses={
            "200": _body({"type": "string"}, "text/plain"),
            **_problems("401"),
        },
    ),
    ("post", "/v1/admin/keys"): _Op(
        "Create an API key (the secret is returned once)",
        "admin",
        models.CreateKeyRequest,
        responses={
            "201": _body(_ref(models.CreatedKeyOut)),
            **_problems("400", "401", "413", "415", "503"),
        },
    ),
    ("get", "/v1/admin/keys"): _Op(
        "List API keys (keyset pagination)",
        "admin",
        responses={
            "200": _body(_ref(models.KeyPageOut)),
            **_problems("400", "401", "503"),
        },
        params=tuple(_query(n) for n in ("limit", "after", "identifier", "include_revoked")),
    ),
    ("get", "/v1/admin/keys/{key_id}"): _Op(
        "Show an API key",
        "admin",
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.KeyOut)),
            **_problems("401", "404", "503"),
        },
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
    ),
    ("post", "/v1/admin/keys/{key_id}/rotate"): _Op(
        "Give an API key a new secret",
        "admin",
        models.RotateKeyRequest,
        params=(_KEY_ID,),
        responses={
            "200": _body(_ref(models.CreatedKeyOut)),
            **_problems("400", "401", "404", "413", "415", "503"),
        },
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
            **_problems("400", "401", "409", "413", "415", "503"),
        },
    ),
    ("get", "/v1/admin/users"): _Op(
        "List users (keyset pagination)",
        "admin",
        responses={
            "200": _body(_ref(models.UserPageOut)),
            **_problems("400", "401", "503"),
        },
        params=tuple(_query(n) for n in ("limit", "after", "include_disabled")),
    ),
    ("get", "/v1/admin/users/{user_id}"): _Op(
        "Show a user",
        "admin",
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            **_problems("401", "404", "503"),
        },
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
    ),
    ("post", "/v1/admin/users/{user_id}/enable"): _Op(
        "Enable a disabled user",
        "admin",
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            **_problems("401", "404", "503"),
        },
    ),
    ("post", "/v1/admin/users/{user_id}/password"): _Op(
        "Set a user's password (their refresh tokens are revoked)",
        "admin",
        models.SetPasswordRequest,
        params=(_USER_ID,),
        responses={
            "200": _body(_ref(models.UserOut)),
            **_problems("400", "401", "404", "413", "415", "503"),
        },
    ),
    ("get", "/v1/admin/signing-keys"): _Op(
        "List signing keys",
        "admin",
        responses={"200": _body({"type": "object"}), **_problems("401", "503")},
    ),
    ("post", "/v1/admin/signing-keys/rotate"): _Op(
        "Start a signing-key rotation",
        "admin",
        responses={"201": _body({"type": "object"}), **_problems("401", "503")},
        params=(_query("immediately", "true: activate now instead of after the publish delay"),),
    ),
    ("get", "/v1/admin/audit"): _Op(
        "Read audit events, newest first",
        "admin",
        responses={
            "200": _body(_ref(models.AuditPage)),
            **_problems("400", "401", "503"),
        },
        params=tuple(_query(n) for n in ("limit", "before", "action", "target_id")),
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


def openapi_document(app: Starlette, *, title: str, settings: Settings) -> dict[str, Any]:
    """Describe every route ``app`` serves (OpenAPI 3.1)."""
    prefix = settings.url_prefix
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
            paths.setdefault(route.path, {})[method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": "Keyturn turns API keys into short-lived, signed JWTs.",
        },
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "user: key id (or empty), password: the API key",
                },
            },
        },
    }


def _operation(op: _Op) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": op.responses}
    if op.request is not None:
        schema = _ref(op.request) if isinstance(op.request, type) else op.request
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": schema} for media in op.request_types},
        }
    if op.params:
        operation["parameters"] = list(op.params)
    if op.security:
        operation["security"] = [{name: []} for name in op.security]
    return operation


def docs_page(document: dict[str, Any]) -> str:
    """A small self-contained HTML page listing the operations (no external assets)."""
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            statuses = ", ".join(op["responses"])
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(statuses)}</td></tr>"
            )
    title = html.escape(document["info"]["title"])
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2rem}}"
        "td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"</head><body><h1>{title}</h1><p>Machine-readable: <a href='openapi.json'>"
        "openapi.json</a> (OpenAPI 3.1).</p><table><tr><th>Method</th><th>Path</th>"
        f"<th>What it does</th><th>Statuses</th></tr>{''.join(rows)}</table></body></html>"
    )
