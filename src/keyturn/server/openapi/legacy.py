"""The OpenAPI operations of JWThenticator's routes (`keyturn.server.legacy`)."""

from __future__ import annotations

from keyturn import schemas as models
from keyturn.server.openapi._parts import (
    _BEARER_401,
    _EMPTY_OBJECT,
    _FIELD_ERRORS,
    _HEALTH_EX,
    _IDENTIFIER_EX,
    _JSON,
    _JWKS_EX,
    _JWT_EX,
    _REFRESH_EX,
    _body,
    _legacy_errors,
    _Op,
    _ref,
)

__all__ = ["OPERATIONS"]

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
}
