"""The OpenAPI operations of the admin API (`keyturn.server.admin`)."""

from __future__ import annotations

from keyturn import schemas as models
from keyturn.server.openapi._parts import (
    _API_KEY_EX,
    _AT_EX,
    _DEVICE_JWK_EX,
    _KEY_EX,
    _KEY_ID,
    _KEY_ID_EX,
    _PROBLEM,
    _PROBLEM_SCHEMA,
    _PUBLIC_KEYS_EX,
    _USER_EX,
    _USER_ID,
    _body,
    _flag,
    _limit,
    _Op,
    _problems,
    _query,
    _ref,
)

__all__ = ["OPERATIONS"]

OPERATIONS: dict[tuple[str, str], _Op] = {
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
        answer=_PUBLIC_KEYS_EX,
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
        example={"keys": [_DEVICE_JWK_EX]},
        answer=_PUBLIC_KEYS_EX,
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
