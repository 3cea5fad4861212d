"""JWThenticator's REST API, kept byte for byte in shape (``docs/migrate-from-jwthenticator.md``).

Its client parses these bodies strictly, so they never gain fields: extras go in headers
(``Cache-Control: no-store``). Status codes match it: 400 for bad JSON, a missing or an
unknown field; 401 ``{}`` for a bad key or refresh token. Where JWThenticator crashed
(500) Keyturn answers 401, and where it answered 401 for an outage Keyturn answers 503 +
``Retry-After`` (its client throws credentials away on a 401).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyturn.errors import KeyturnError, MalformedSecretError, RequestRejectedError
from keyturn.schemas import (
    AuthenticateRequest,
    KeyRequest,
    RefreshRequest,
    RegisterKeyRequest,
)
from keyturn.server.errors import NO_STORE, ErrorStyle, legacy_error, renders
from keyturn.server.gateway.answers import LEGACY_JWKS
from keyturn.server.gateway.endpoints import (
    JwksEndpoint,
    LegacyTokenEndpoint,
    ValidateBodyEndpoint,
    ValidateRequestEndpoint,
)
from keyturn.server.requests import (
    key_bucket,
    keyturn_state,
    read_json,
    read_model,
    request_id,
)
from keyturn.server.state import KeyturnState

__all__ = [
    "admin_routes",
    "answer_authenticate",
    "answer_refresh",
    "legacy_error",
    "public_routes",
]

Handler = Callable[[Request], Awaitable[Response]]


def _ok(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


async def answer_authenticate(
    state: KeyturnState, body: AuthenticateRequest, *, address: str, request_id: str | None
) -> Response:
    """The answer to a well-formed ``POST /authenticate``, errors rendered as `legacy_error`.

    The answer of `LegacyTokenEndpoint` for ``POST /authenticate``.
    """
    key = body.key.get_secret_value()
    try:
        await state.check_rate(address, key_bucket=key_bucket(key))
        pair = await state.service.authenticate(
            key, identifier=body.identifier, rotating=False, request_id=request_id
        )
    except KeyturnError as exc:
        return legacy_error(exc)
    return _ok({"jwt": pair.access.token, "refresh_token": pair.refresh_token})


async def answer_refresh(
    state: KeyturnState, body: RefreshRequest, *, address: str, request_id: str | None
) -> Response:
    """The answer to a well-formed ``POST /refresh``, errors rendered as `legacy_error`.

    The answer of `LegacyTokenEndpoint` for ``POST /refresh``.
    """
    try:
        await state.check_rate(address, key_bucket=None)
        pair = await state.service.refresh(
            body.refresh_token.get_secret_value(),
            identifier=body.identifier,
            request_id=request_id,
        )
    except KeyturnError as exc:
        return legacy_error(exc)
    return _ok({"jwt": pair.access.token})


async def health(request: Request) -> Response:
    """``GET /`` and ``GET /health`` -> ``{"result": true}``."""
    return JSONResponse({"result": True})


@renders(ErrorStyle.LEGACY)
async def register_key(request: Request) -> Response:
    """``POST /register_key {key, identifier}`` -> 201 ``{"result": true}`` (admin)."""
    body = read_model(RegisterKeyRequest, await read_json(request))
    try:
        await keyturn_state(request).service.register_key(
            body.key.get_secret_value(),
            body.identifier,
            actor="admin:legacy",
            request_id=request_id(request),
        )
    except MalformedSecretError as exc:
        # A key that can never be registered (empty, too long, kt_ prefix) is a bad
        # request, not a bad credential: 400 with the field's message, as for the schema.
        raise RequestRejectedError(exc.message, fields={"key": [exc.message]}) from exc
    return JSONResponse({"result": True}, status_code=201)


@renders(ErrorStyle.LEGACY)
async def is_key_registered(request: Request) -> Response:
    """``POST /is_key_registered {key}`` -> ``{"result": bool}`` (admin)."""
    body = read_model(KeyRequest, await read_json(request))
    registered = await keyturn_state(request).service.is_key_registered(body.key.get_secret_value())
    return JSONResponse({"result": registered})


def public_routes(prefix: str) -> list[Route]:
    """The public JWThenticator routes (raw-ASGI endpoints: `keyturn.server.gateway`)."""
    authenticate = LegacyTokenEndpoint(AuthenticateRequest, answer_authenticate, legacy_error)
    refresh = LegacyTokenEndpoint(RefreshRequest, answer_refresh, legacy_error)
    return [
        Route(f"{prefix}/authenticate", authenticate, methods=["POST"]),
        Route(f"{prefix}/refresh", refresh, methods=["POST"]),
        Route(f"{prefix}/validate", ValidateBodyEndpoint(legacy_error), methods=["POST"]),
        Route(f"{prefix}/validate_request", ValidateRequestEndpoint(), methods=["GET"]),
    ]


def general_routes(prefix: str) -> list[Route]:
    """Routes JWThenticator served whatever was disabled."""
    return [
        Route(f"{prefix}/", health, methods=["GET"]),
        Route(f"{prefix}/health", health, methods=["GET"]),
        Route(f"{prefix}/jwks", JwksEndpoint(LEGACY_JWKS), methods=["GET"]),
    ]


def admin_routes(prefix: str) -> list[Route]:
    """JWThenticator's internal routes (admin listener, or public in one-port mode)."""
    return [
        Route(f"{prefix}/register_key", register_key, methods=["POST"]),
        Route(f"{prefix}/is_key_registered", is_key_registered, methods=["POST"]),
    ]
