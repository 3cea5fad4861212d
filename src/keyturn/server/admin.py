"""The admin API (admin listener only): keys, users, signing keys and the audit trail.

Errors are RFC 9457 problem documents. Secrets appear once, in the response that
creates them, and never in a listing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyturn.core.assertions import load_client_public_key
from keyturn.core.records import (
    ClientPublicKeyRecord,
    SigningKeyState,
)
from keyturn.core.signing import VerificationKey
from keyturn.errors import InvalidRequestError, SigningKeyError
from keyturn.schemas import (
    AuditEventOut,
    AuditPage,
    CreatedKeyOut,
    CreateKeyRequest,
    CreateUserRequest,
    DisableUserRequest,
    JWKSetIn,
    KeyOut,
    KeyPageOut,
    PublicKeyOut,
    PublicKeysOut,
    RevokeKeyRequest,
    RotateKeyRequest,
    SetPasswordRequest,
    SigningKeyOut,
    UserOut,
    UserPageOut,
)
from keyturn.server.errors import NO_STORE, ErrorStyle, renders
from keyturn.server.requests import (
    NO_NUL,
    keyturn_state,
    read_json,
    read_model,
    read_optional_json,
    refuse_nul,
    request_id,
)

__all__ = ["routes"]

Handler = Callable[[Request], Awaitable[Response]]
ACTOR = "admin"


def _problems(handler: Handler) -> Handler:
    """Refuse U+0000 in the path and query; render errors as problem documents."""

    @renders(ErrorStyle.PROBLEM)
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        query = [text for pair in request.query_params.multi_items() for text in pair]
        if any("\x00" in str(text) for text in (*request.path_params.values(), *query)):
            raise InvalidRequestError(NO_NUL)
        return await handler(request)

    return endpoint


def _json(
    model: KeyOut
    | CreatedKeyOut
    | KeyPageOut
    | AuditPage
    | UserOut
    | UserPageOut
    | PublicKeysOut
    | list[SigningKeyOut],
    status: int = 200,
) -> JSONResponse:
    if isinstance(model, list):
        content = [item.model_dump(mode="json") for item in model]
        return JSONResponse({"signing_keys": content}, status_code=status)
    body: dict[str, Any] = model.model_dump(mode="json")
    if isinstance(model, CreatedKeyOut) and model.public_keys is None:
        del body["public_keys"]  # a key with a secret: the body it always had
    return JSONResponse(body, status_code=status, headers=NO_STORE)


def _int_query(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise InvalidRequestError(f"{name} must be a non-negative integer")
    return int(raw)


def _bool_query(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise InvalidRequestError(f"{name} must be true or false")
    return raw == "true"


def public_key_out(record: ClientPublicKeyRecord) -> PublicKeyOut:
    """The admin view of a client's public key."""
    return PublicKeyOut(
        kid=record.kid, alg=record.alg, jwk=dict(record.jwk), created_at=record.created_at
    )


def _public_keys(jwks: JWKSetIn | None) -> list[VerificationKey]:
    """The public keys of a JWK Set in a request; 400 for a private or unsupported key."""
    if jwks is None:
        return []
    try:
        return [load_client_public_key(jwk) for jwk in jwks.keys]
    except SigningKeyError as exc:
        raise InvalidRequestError(f"jwks: {exc.message}") from exc


@_problems
async def create_key(request: Request) -> Response:
    """``POST /v1/admin/keys`` (with ``jwks``: a ``private_key_jwt`` client, no secret)."""
    body = read_model(CreateKeyRequest, refuse_nul(await read_json(request)))
    public_keys = _public_keys(body.jwks)
    service = keyturn_state(request).service
    created = await service.create_key(
        identifier=body.identifier,
        name=body.name,
        roles=body.roles,
        scopes=body.scopes,
        extra_claims=body.extra_claims,
        metadata=body.metadata,
        expires_at=body.expires_at,
        public_keys=public_keys,
        dpop_required=body.dpop_required,
        actor=ACTOR,
        request_id=request_id(request),
    )
    stored = await service.list_public_keys(created.record.id) if public_keys else None
    out = CreatedKeyOut(
        key=created.secret,
        record=KeyOut.of(created.record),
        public_keys=None if stored is None else [public_key_out(k) for k in stored],
    )
    return _json(out, 201)


@_problems
async def list_public_keys(request: Request) -> Response:
    """``GET /v1/admin/keys/{key_id}/public-keys``."""
    stored = await keyturn_state(request).service.list_public_keys(request.path_params["key_id"])
    return _json(PublicKeysOut(keys=[public_key_out(k) for k in stored]))


@_problems
async def add_public_keys(request: Request) -> Response:
    """``POST /v1/admin/keys/{key_id}/public-keys`` with a JWK Set: add keys (rotation)."""
    body = read_model(JWKSetIn, await read_json(request))
    stored = await keyturn_state(request).service.add_public_keys(
        request.path_params["key_id"],
        _public_keys(body),
        actor=ACTOR,
        request_id=request_id(request),
    )
    return _json(PublicKeysOut(keys=[public_key_out(k) for k in stored]))


@_problems
async def remove_public_key(request: Request) -> Response:
    """``DELETE /v1/admin/keys/{key_id}/public-keys/{kid}``."""
    await keyturn_state(request).service.remove_public_key(
        request.path_params["key_id"],
        request.path_params["kid"],
        actor=ACTOR,
        request_id=request_id(request),
    )
    return Response(status_code=204, headers=NO_STORE)


@_problems
async def list_keys(request: Request) -> Response:
    """``GET /v1/admin/keys?limit=&after=&identifier=&include_revoked=``."""
    limit = _int_query(request, "limit", 50)
    assert limit is not None  # noqa: S101 -- has a default
    page = await keyturn_state(request).service.list_keys(
        limit=limit,
        after=request.query_params.get("after"),
        identifier=request.query_params.get("identifier"),
        include_revoked=_bool_query(request, "include_revoked", True),
    )
    return _json(KeyPageOut(keys=[KeyOut.of(k) for k in page.keys], next_after=page.next_after))


@_problems
async def get_key(request: Request) -> Response:
    """``GET /v1/admin/keys/{key_id}``."""
    record = await keyturn_state(request).service.get_key(request.path_params["key_id"])
    return _json(KeyOut.of(record))


@_problems
async def revoke_key(request: Request) -> Response:
    """``POST /v1/admin/keys/{key_id}/revoke``: its refresh and access tokens die too."""
    body = read_model(RevokeKeyRequest, refuse_nul(await read_optional_json(request)))
    record = await keyturn_state(request).service.revoke_key(
        request.path_params["key_id"],
        reason=body.reason,
        actor=ACTOR,
        request_id=request_id(request),
    )
    return _json(KeyOut.of(record))


@_problems
async def rotate_key(request: Request) -> Response:
    """``POST /v1/admin/keys/{key_id}/rotate``: a new secret, shown once."""
    body = read_model(RotateKeyRequest, refuse_nul(await read_optional_json(request)))
    grace = None if body.grace_seconds is None else timedelta(seconds=body.grace_seconds)
    created = await keyturn_state(request).service.rotate_key(
        request.path_params["key_id"],
        grace=grace,
        actor=ACTOR,
        request_id=request_id(request),
    )
    return _json(CreatedKeyOut(key=created.secret, record=KeyOut.of(created.record)))


@_problems
async def create_user(request: Request) -> Response:
    """``POST /v1/admin/users``."""
    body = read_model(CreateUserRequest, refuse_nul(await read_json(request)))
    record = await keyturn_state(request).service.create_user(
        body.email,
        body.password.get_secret_value(),
        roles=body.roles,
        scopes=body.scopes,
        actor=ACTOR,
        request_id=request_id(request),
    )
    return _json(UserOut.of(record), 201)


@_problems
async def list_users(request: Request) -> Response:
    """``GET /v1/admin/users?limit=&after=&include_disabled=``."""
    limit = _int_query(request, "limit", 50)
    assert limit is not None  # noqa: S101 -- has a default
    page = await keyturn_state(request).service.list_users(
        limit=limit,
        after=request.query_params.get("after"),
        include_disabled=_bool_query(request, "include_disabled", True),
    )
    return _json(UserPageOut(users=[UserOut.of(u) for u in page.users], next_after=page.next_after))


@_problems
async def get_user(request: Request) -> Response:
    """``GET /v1/admin/users/{user_id}``."""
    record = await keyturn_state(request).service.get_user(request.path_params["user_id"])
    return _json(UserOut.of(record))


@_problems
async def disable_user(request: Request) -> Response:
    """``POST /v1/admin/users/{user_id}/disable``: no more logins; their tokens die."""
    body = read_model(DisableUserRequest, refuse_nul(await read_optional_json(request)))
    record = await keyturn_state(request).service.disable_user(
        request.path_params["user_id"],
        reason=body.reason,
        actor=ACTOR,
        request_id=request_id(request),
    )
    return _json(UserOut.of(record))


@_problems
async def enable_user(request: Request) -> Response:
    """``POST /v1/admin/users/{user_id}/enable``."""
    record = await keyturn_state(request).service.enable_user(
        request.path_params["user_id"], actor=ACTOR, request_id=request_id(request)
    )
    return _json(UserOut.of(record))


@_problems
async def set_user_password(request: Request) -> Response:
    """``POST /v1/admin/users/{user_id}/password``: the user's refresh tokens are revoked."""
    body = read_model(SetPasswordRequest, refuse_nul(await read_json(request)))
    record = await keyturn_state(request).service.set_user_password(
        request.path_params["user_id"],
        body.password.get_secret_value(),
        actor=ACTOR,
        request_id=request_id(request),
    )
    return _json(UserOut.of(record))


@_problems
async def list_signing_keys(request: Request) -> Response:
    """``GET /v1/admin/signing-keys``."""
    records = await keyturn_state(request).service.list_signing_keys()
    return _json(
        [
            SigningKeyOut(
                kid=r.kid,
                alg=r.alg,
                state=SigningKeyState(r.state).value,
                created_at=r.created_at,
                activated_at=r.activated_at,
                retired_at=r.retired_at,
                publish_until=r.publish_until,
            )
            for r in records
        ]
    )


@_problems
async def rotate_signing_key(request: Request) -> Response:
    """``POST /v1/admin/signing-keys/rotate[?immediately=true]``."""
    immediately = _bool_query(request, "immediately", False)
    kid = await keyturn_state(request).service.rotate_signing_key(
        immediately=immediately, actor=ACTOR, request_id=request_id(request)
    )
    return JSONResponse({"kid": kid, "activated": immediately}, status_code=201)


@_problems
async def audit(request: Request) -> Response:
    """``GET /v1/admin/audit?limit=&before=&action=&target_id=``."""
    limit = _int_query(request, "limit", 100)
    assert limit is not None  # noqa: S101 -- has a default
    if not 1 <= limit <= 1000:
        raise InvalidRequestError("limit must be between 1 and 1000")
    rows = await keyturn_state(request).service.audit_events(
        limit=limit,
        before=_int_query(request, "before", None),
        action=request.query_params.get("action"),
        target_id=request.query_params.get("target_id"),
    )
    events = [
        AuditEventOut(
            id=row.id,
            at=row.event.at,
            action=row.event.action,
            outcome=row.event.outcome,
            actor=row.event.actor,
            target_type=row.event.target_type,
            target_id=row.event.target_id,
            request_id=row.event.request_id,
            detail=dict(row.event.detail),
        )
        for row in rows
    ]
    next_before = rows[-1].id if len(rows) == limit else None
    return _json(AuditPage(events=events, next_before=next_before))


def routes(prefix: str) -> list[Route]:
    """The admin API routes."""
    base = f"{prefix}/v1/admin"
    return [
        Route(f"{base}/keys", create_key, methods=["POST"]),
        Route(f"{base}/keys", list_keys, methods=["GET"]),
        Route(f"{base}/keys/{{key_id}}", get_key, methods=["GET"]),
        Route(f"{base}/keys/{{key_id}}/revoke", revoke_key, methods=["POST"]),
        Route(f"{base}/keys/{{key_id}}/rotate", rotate_key, methods=["POST"]),
        Route(f"{base}/keys/{{key_id}}/public-keys", list_public_keys, methods=["GET"]),
        Route(f"{base}/keys/{{key_id}}/public-keys", add_public_keys, methods=["POST"]),
        Route(f"{base}/keys/{{key_id}}/public-keys/{{kid}}", remove_public_key, methods=["DELETE"]),
        Route(f"{base}/users", create_user, methods=["POST"]),
        Route(f"{base}/users", list_users, methods=["GET"]),
        Route(f"{base}/users/{{user_id}}", get_user, methods=["GET"]),
        Route(f"{base}/users/{{user_id}}/disable", disable_user, methods=["POST"]),
        Route(f"{base}/users/{{user_id}}/enable", enable_user, methods=["POST"]),
        Route(f"{base}/users/{{user_id}}/password", set_user_password, methods=["POST"]),
        Route(f"{base}/signing-keys", list_signing_keys, methods=["GET"]),
        Route(f"{base}/signing-keys/rotate", rotate_signing_key, methods=["POST"]),
        Route(f"{base}/audit", audit, methods=["GET"]),
    ]
