"""The building blocks of the OpenAPI operations: bodies, errors, parameters, examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel

from keyturn import schemas as models

__all__ = [
    "_ADMIN_401",
    "_API_KEY_EX",
    "_ASSERTION_FIELDS",
    "_AT_EX",
    "_BEARER_401",
    "_CHALLENGE",
    "_EMPTY_OBJECT",
    "_FIELD_ERRORS",
    "_FORM",
    "_HEALTH_EX",
    "_IDENTIFIER_EX",
    "_JSON",
    "_JWKS_EX",
    "_JWT_EX",
    "_KEY_EX",
    "_KEY_ID",
    "_KEY_ID_EX",
    "_LIMIT",
    "_LOGIN_FIELDS",
    "_LOGIN_FORM",
    "_LOGIN_V1_FORM",
    "_LOGOUT_FORM",
    "_NO_BODY",
    "_OAUTH_ERROR",
    "_PROBLEM",
    "_PROBLEMS",
    "_PROBLEM_SCHEMA",
    "_REF",
    "_REFRESH_EX",
    "_REVOKE_FORM",
    "_SCOPE",
    "_SCOPE_QUERY",
    "_TEXT",
    "_TOKEN_ANSWER",
    "_TOKEN_FORM",
    "_TOKEN_ONLY",
    "_USER_EX",
    "_USER_ID",
    "_USER_ID_EX",
    "_Op",
    "_body",
    "_flag",
    "_legacy_errors",
    "_limit",
    "_oauth_errors",
    "_params",
    "_problems",
    "_query",
    "_ref",
]

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
            "unsupported_grant_type; RFC 9449 §5: invalid_dpop_proof (a DPoP proof failed "
            "a check, or DPoP is required), use_dpop_nonce (retry with the DPoP-Nonce header)",
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
_DPOP_PROOF = {
    "name": "DPoP",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "A DPoP proof (RFC 9449 §4): binds the tokens issued to its key "
    "(token_type DPoP); at most one",
}
_DPOP_VALIDATE = (
    {
        **_DPOP_PROOF,
        "description": "The original request's DPoP proof, with 'Authorization: DPoP <token>' "
        "(RFC 9449 §7)",
    },
    {
        "name": "X-Original-Method",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The original request's method (nginx); or X-Forwarded-Method",
    },
    {
        "name": "X-Original-URL",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The original request's URL (nginx); or X-Forwarded-Proto, "
        "X-Forwarded-Host and X-Forwarded-Uri (Traefik, Envoy)",
    },
)
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
#: A device's ES256 public key (RFC 7515 §A.3's) and its RFC 7638 thumbprint.
_DEVICE_JWK_EX = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
_PUBLIC_KEYS_EX = {
    "keys": [
        {
            "kid": "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U",
            "alg": "ES256",
            "jwk": _DEVICE_JWK_EX,
            "created_at": _AT_EX,
        }
    ]
}
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
