"""People logging in with an email and a password (public listener).

* ``POST /login`` -- the aiohttp + PyJWT tutorial's route: form or JSON ``email`` and
  ``password`` in, ``{"token": "<jwt>"}`` out. A failure is a 400 problem document that
  also carries the tutorial's ``{"message": "Wrong credentials"}``.
* ``POST /v1/login`` -- the same credentials, answered like the RFC 6749 token endpoint:
  an access token and a rotating refresh token (refresh it at ``/v1/token``).
* ``POST /v1/logout`` -- revokes the session's refresh-token family; 200 whatever the
  token was (RFC 7009 §2.2).

Every attempt is charged to the login throttle before any password is hashed (429 +
``Retry-After``). Unknown emails, wrong passwords and disabled users get one response.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyturn.errors import InvalidRequestError
from keyturn.server.dpop import token_proof, with_dpop_nonce
from keyturn.server.errors import NO_STORE, WRONG_CREDENTIALS, ErrorStyle, renders
from keyturn.server.requests import keyturn_state, read_form_or_json, request_id
from keyturn.server.routes.oauth import requested_scopes, token_response
from keyturn.server.state import client_address

__all__ = ["LOGIN_PATH", "WRONG_CREDENTIALS", "public_routes"]

#: ``/v1/login``'s path under the prefix (a DPoP proof's ``htu``).
LOGIN_PATH: Final = "/v1/login"


def _credentials(params: dict[str, str]) -> tuple[str, str]:
    email, password = params.get("email"), params.get("password")
    if not email or not password:
        raise InvalidRequestError("email and password are required")
    return email, password


@renders(ErrorStyle.LOGIN)
async def login(request: Request) -> Response:
    """``POST /login``: ``{"token": "<access token>"}``, no refresh token."""
    state = keyturn_state(request)
    email, password = _credentials(await read_form_or_json(request))
    await state.check_login_rate(client_address(request.scope), email)
    pair = await state.service.login(email, password, refresh=False, request_id=request_id(request))
    return JSONResponse({"token": pair.access.token}, headers=NO_STORE)


@with_dpop_nonce
@renders(ErrorStyle.OAUTH)
async def login_v1(request: Request) -> Response:
    """``POST /v1/login``: the RFC 6749 §5.1 token response with a rotating refresh token.

    With a DPoP proof (RFC 9449 §5) the access token and the refresh-token family are
    bound to the proof's key.
    """
    state = keyturn_state(request)
    params = await read_form_or_json(request)
    email, password = _credentials(params)
    scopes = requested_scopes(params)
    await state.check_login_rate(client_address(request.scope), email)
    proof = await token_proof(state, request.scope, LOGIN_PATH)
    pair = await state.service.login(
        email,
        password,
        scopes=scopes,
        request_id=request_id(request),
        dpop_jkt=None if proof is None else proof.jkt,
    )
    return token_response(pair)


@renders(ErrorStyle.OAUTH)
async def logout(request: Request) -> Response:
    """``POST /v1/logout``: revoke the refresh token's family; 200 whether or not it was known."""
    state = keyturn_state(request)
    params = await read_form_or_json(request)
    refresh_token = params.get("refresh_token")
    if not refresh_token:
        raise InvalidRequestError("refresh_token is required")
    await state.check_rate(client_address(request.scope), key_bucket=None)
    await state.service.logout(refresh_token, request_id=request_id(request))
    return Response(status_code=200, headers=NO_STORE)


def public_routes(prefix: str) -> list[Route]:
    """The login routes of the public listener."""
    return [
        Route(f"{prefix}/login", login, methods=["POST"]),
        Route(f"{prefix}{LOGIN_PATH}", login_v1, methods=["POST"]),
        Route(f"{prefix}/v1/logout", logout, methods=["POST"]),
    ]
