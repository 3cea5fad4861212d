"""The OpenAPI operations of the /v1 token, login and validation routes, metadata and health."""

from __future__ import annotations

from typing import Any

from keyturn import schemas as models
from keyturn.server.gateway.endpoints import EXT_AUTHZ_METHODS, EXT_AUTHZ_PATH
from keyturn.server.openapi._parts import (
    _BEARER_401,
    _CHALLENGE,
    _DPOP_PROOF,
    _DPOP_VALIDATE,
    _FORM,
    _JSON,
    _JWKS_EX,
    _JWT_EX,
    _KEY_ID_EX,
    _LOGIN_FORM,
    _LOGIN_V1_FORM,
    _LOGOUT_FORM,
    _NO_BODY,
    _OAUTH_ERROR,
    _PROBLEM,
    _PROBLEM_SCHEMA,
    _PROBLEMS,
    _REFRESH_EX,
    _REVOKE_FORM,
    _SCOPE,
    _SCOPE_QUERY,
    _TOKEN_ANSWER,
    _TOKEN_FORM,
    _TOKEN_ONLY,
    _body,
    _oauth_errors,
    _Op,
    _problems,
    _ref,
)
from keyturn.server.v1 import IDENTITY_HEADERS

__all__ = ["OPERATIONS"]

_VALIDATE_ANSWERS: dict[str, Any] = {
    "200": {
        "description": "Valid: the identity is in the X-Keyturn-* headers, no body",
        "headers": {name: {"schema": {"type": "string"}} for name in IDENTITY_HEADERS.values()},
    },
    "401": _BEARER_401,
    "403": {"description": "insufficient_scope (RFC 6750)", "headers": _CHALLENGE},
    "503": {"description": "Storage unavailable (Retry-After)"},
}
_EXT_AUTHZ_PARAMS: tuple[dict[str, Any], ...] = (
    {
        "name": "path",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The client's path (Envoy's path_prefix is /v1/ext_authz); the query "
        "string is the client's too",
    },
    {
        "name": "X-Keyturn-Scope",
        "in": "header",
        "required": False,
        "schema": _SCOPE,
        "description": "Space-separated scopes the token must carry, else 403 (Envoy's "
        "headers_to_add)",
    },
    {
        **_DPOP_PROOF,
        "description": "The client's DPoP proof, with 'Authorization: DPoP <token>' (RFC "
        "9449 §7): checked against this request's method and "
        "{X-Forwarded-Proto or http}://{Host}/{path}",
    },
    {
        "name": "X-Forwarded-Proto",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The client's scheme (default http)",
    },
)

OPERATIONS: dict[tuple[str, str], _Op] = {
    ("post", "/v1/token"): _Op(
        "OAuth 2.0 token endpoint: client_credentials and refresh_token",
        "v1",
        _TOKEN_FORM,
        (_FORM, _JSON),
        responses={"200": _body(_ref(models.TokenResponse)), **_oauth_errors()},
        params=(_DPOP_PROOF,),
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
        responses=_VALIDATE_ANSWERS,
        params=(_SCOPE_QUERY, *_DPOP_VALIDATE),
        security=("bearer",),
    ),
    **{
        (method.lower(), f"{EXT_AUTHZ_PATH}/{{path}}"): _Op(
            "Envoy ext_authz: check the client's request (its method, path and query), "
            "as /v1/validate does",
            "v1",
            responses=_VALIDATE_ANSWERS,
            params=_EXT_AUTHZ_PARAMS,
            security=("bearer",),
        )
        for method in EXT_AUTHZ_METHODS
    },
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
                "invalid_scope, invalid_request, invalid_dpop_proof or use_dpop_nonce",
            ),
            "413": _PROBLEMS["413"],
            "415": _PROBLEMS["415"],
            "429": _body(_OAUTH_ERROR, _JSON, "Rate limited (Retry-After)"),
            "503": _body(_OAUTH_ERROR, _JSON, "Storage unavailable (Retry-After)"),
        },
        params=(_DPOP_PROOF,),
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
}
