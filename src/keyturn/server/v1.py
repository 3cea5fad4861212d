"""Keyturn's own public API, following the RFCs.

* ``POST /v1/token`` -- RFC 6749 §4.4 ``client_credentials`` (the API key as the client
  secret: HTTP Basic with the key as password, or ``client_secret`` in the body; the
  ``client_id``, when sent, must be the key's id; or ``private_key_jwt``, RFC 7523 §2.2:
  an assertion signed by one of the key's registered public keys) and §6
  ``refresh_token`` with rotation (a key's refresh token needs that key's client
  authentication, a login's none); §5.1 responses and §5.2 errors.
* ``POST /v1/revoke`` -- RFC 7009 (200 for unknown tokens; with client authentication,
  only the client's own tokens).
* ``POST /v1/introspect`` -- RFC 7662, admin credential required.
* ``GET /v1/validate`` -- for gateways: 200 with identity headers, RFC 6750 errors.
* ``GET /.well-known/jwks.json`` and ``/.well-known/oauth-authorization-server`` (RFC 8414).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyturn.core.assertions import CLIENT_ASSERTION_TYPE, ClientAssertion, assertion_client_id
from keyturn.core.signing import SUPPORTED_ALGORITHMS
from keyturn.core.tokens import format_scope, parse_scope
from keyturn.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    KeyturnError,
)
from keyturn.server.errors import (
    NO_STORE,
    RequestRejectedError,
    oauth_error,
    problem_for,
)
from keyturn.server.gateway.answers import IDENTITY_HEADERS, V1_JWKS, identity_headers
from keyturn.server.gateway.endpoints import JwksEndpoint, V1ValidateEndpoint
from keyturn.server.requests import (
    bearer_token,
    key_bucket,
    keyturn_state,
    read_form_or_json,
    request_id,
)
from keyturn.server.state import client_address
from keyturn.service import KeyturnService, TokenPair

__all__ = ["IDENTITY_HEADERS", "identity_headers", "public_routes"]

Handler = Callable[[Request], Awaitable[Response]]

#: RFC 8414 §3: where the authorization server metadata lives.
METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
#: The client authentication methods ``/v1/token`` and ``/v1/revoke`` accept (RFC 8414 §2).
CLIENT_AUTH_METHODS: Final = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)


class _UnsupportedGrantError(KeyturnError):
    error_code = "unsupported_grant_type"
    status_code = 400


def _oauth(handler: Handler) -> Handler:
    """Render every error as an RFC 6749 §5.2 body."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestRejectedError as exc:
            if exc.status_code in (413, 415):
                return problem_for(exc)
            return oauth_error(exc)
        except KeyturnError as exc:
            return oauth_error(exc)

    return endpoint


def _token_response(pair: TokenPair) -> JSONResponse:
    body: dict[str, Any] = {
        "access_token": pair.access.token,
        "token_type": "Bearer",
        "expires_in": pair.access.expires_in,
        "scope": format_scope(pair.scopes),
    }
    if pair.refresh_token is not None:
        body["refresh_token"] = pair.refresh_token
    return JSONResponse(body, headers=NO_STORE)  # RFC 6749 §5.1


_NO_CREDENTIALS: Final = "send the API key as HTTP Basic password or client_secret"
#: A ``client_id`` no key has (key ids are never empty).
_NO_CLIENT: Final = ""


@dataclass(frozen=True, slots=True)
class _Client:
    """Client credentials as presented: the API key and the ``client_id``, if one was sent.

    For ``private_key_jwt`` the ``assertion`` instead of the key (``secret`` is empty).
    """

    secret: str = field(repr=False)
    client_id: str | None
    assertion: str | None = field(default=None, repr=False)

    @property
    def bucket(self) -> str:
        """The client's rate-limit bucket (a key's id, whichever way it authenticates)."""
        if self.assertion is None:
            return key_bucket(self.secret)
        return self.client_id or assertion_client_id(self.assertion)

    def credential(self, request: Request) -> str | ClientAssertion:
        """What `KeyturnService.authenticate_client` takes: the key, or the assertion."""
        if self.assertion is None:
            return self.secret
        settings = keyturn_state(request).settings
        token_endpoint = f"{settings.issuer.rstrip('/')}{settings.url_prefix}/v1/token"
        # RFC 7523 §3: the issuer identifier; also the token endpoint URL (OIDC Core §9).
        audiences = (settings.issuer, token_endpoint)
        return ClientAssertion(self.assertion, self.client_id, audiences)


def _client_assertion(request: Request, params: dict[str, str]) -> _Client | None:
    """A ``private_key_jwt`` client assertion (RFC 7523 §2.2), or None when none came."""
    assertion_type = params.get("client_assertion_type")
    assertion = params.get("client_assertion")
    if assertion_type is None and assertion is None:
        return None
    if "authorization" in request.headers or "client_secret" in params:
        # RFC 6749 §2.3: one authentication method per request.
        raise InvalidRequestError("use one client authentication method, not several")
    if assertion_type != CLIENT_ASSERTION_TYPE:
        # RFC 7521 §4.2.1: an assertion type the server does not support.
        raise InvalidClientError(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    if not assertion:
        raise InvalidRequestError("client_assertion is required")
    return _Client("", params.get("client_id") or None, assertion)


def _client_credentials(request: Request, params: dict[str, str]) -> _Client | None:
    """The client credentials, from HTTP Basic, ``client_secret`` or ``client_assertion``
    -- at most one; or None.

    RFC 6749 §2.3.1: Basic ``client_id:API_KEY`` (each form-urlencoded first), or the key
    alone as the user name (``curl -u KEY:``); in the body ``client_secret`` and an
    optional ``client_id``. A ``client_id`` in the body next to Basic must be the same.
    RFC 7523 §2.2: ``client_assertion_type`` and ``client_assertion``.
    """
    assertion = _client_assertion(request, params)
    if assertion is not None:
        return assertion
    header = request.headers.get("authorization")
    from_body = params.get("client_secret")
    body_id = params.get("client_id") or None
    if header is None:
        if from_body is None:
            return None
        if not from_body:
            raise InvalidClientError(_NO_CREDENTIALS)
        return _Client(from_body, body_id)
    if from_body is not None:
        # RFC 6749 §2.3: one authentication method per request.
        raise InvalidRequestError("use either HTTP Basic or client_secret, not both")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClientError("the token endpoint takes HTTP Basic client authentication")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClientError("malformed HTTP Basic credentials") from exc
    username, sep, password = decoded.partition(":")
    if not sep or not (password or username):
        raise InvalidClientError("malformed HTTP Basic credentials")
    if password:
        client_id, secret = unquote(username) or None, unquote(password)
    else:
        client_id, secret = None, unquote(username)
    if body_id is not None:
        # Two different ids name no key: refused after the lookup, like any wrong id, so
        # the answer and its timing match an unknown key's.
        client_id = body_id if client_id in (None, body_id) else _NO_CLIENT
    return _Client(secret, client_id)


def _requested_scopes(params: dict[str, str]) -> frozenset[str] | None:
    scope = params.get("scope")
    if scope is None:
        return None
    try:
        return parse_scope(scope)
    except ValueError as exc:
        raise InvalidRequestError("scope breaks the RFC 6749 §3.3 grammar") from exc


@_oauth
async def token(request: Request) -> Response:
    """``POST /v1/token``: client_credentials or refresh_token grant."""
    state = keyturn_state(request)
    params = await read_form_or_json(request)
    grant_type = params.get("grant_type")
    scopes = _requested_scopes(params)
    # Optional, as on the legacy routes: a key registered with an identifier must match it.
    identifier = params.get("identifier")
    if grant_type == "client_credentials":
        client = _client_credentials(request, params)
        if client is None:
            raise InvalidClientError(_NO_CREDENTIALS)
        await state.check_rate(client_address(request.scope), key_bucket=client.bucket)
        try:
            pair = await state.service.authenticate(
                client.credential(request),
                identifier=identifier,
                scopes=scopes,
                rotating=True,
                client_id=client.client_id,
                # RFC 6749 §4.4.3: no refresh token unless the deployment asks for one.
                issue_refresh_token=state.settings.client_credentials_refresh_tokens,
                request_id=request_id(request),
            )
        except InvalidGrantError as exc:
            # RFC 6749 §5.2: failed client authentication is invalid_client (401).
            raise InvalidClientError(exc.message) from exc
        return _token_response(pair)
    if grant_type == "refresh_token":
        refresh_token = params.get("refresh_token")
        if not refresh_token:
            raise InvalidRequestError("refresh_token is required")
        client = _client_credentials(request, params)
        bucket = None if client is None else client.bucket
        await state.check_rate(client_address(request.scope), key_bucket=bucket)
        # RFC 6749 §6: presented credentials are checked first, then the token's owner.
        authenticated = await _authenticated(request, client)
        pair = await state.service.refresh(
            refresh_token,
            identifier=identifier,
            scopes=scopes,
            check_client=True,
            client=authenticated,
            request_id=request_id(request),
        )
        return _token_response(pair)
    if grant_type is None:
        raise InvalidRequestError("grant_type is required")
    raise _UnsupportedGrantError("supported grant types: client_credentials, refresh_token")


@_oauth
async def revoke(request: Request) -> Response:
    """``POST /v1/revoke`` (RFC 7009): 200 whether or not the token was known."""
    state = keyturn_state(request)
    params = await read_form_or_json(request)
    value = params.get("token")
    if not value:
        raise InvalidRequestError("token is required")
    client = _client_credentials(request, params)
    if client is not None:
        # RFC 7009 §2.1: authenticate the client, then revoke only a token issued to it.
        await state.check_rate(client_address(request.scope), key_bucket=client.bucket)
    authenticated = await _authenticated(request, client)
    await state.service.revoke_token(value, client=authenticated, request_id=request_id(request))
    return Response(status_code=200, headers=NO_STORE)


async def _authenticated(request: Request, client: _Client | None) -> str | None:
    """The id of the key ``client`` authenticates as; None when no credentials came."""
    if client is None:
        return None
    service: KeyturnService = keyturn_state(request).service
    return await service.authenticate_client(client.credential(request), client_id=client.client_id)


def admin_credential_ok(request: Request) -> bool:
    """True when the request carries the configured admin bearer token."""
    expected = keyturn_state(request).settings.admin_token
    presented = bearer_token(request)
    if expected is None or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


async def introspect(request: Request) -> Response:
    """``POST /v1/introspect`` (RFC 7662): ``{"active": false}`` for anything invalid."""
    if not request.app.state.trusted_admin and not admin_credential_ok(request):
        return JSONResponse(
            {"error": "invalid_client", "error_description": "admin credential required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="keyturn"', **NO_STORE},
        )
    try:
        params = await read_form_or_json(request)
        if not params.get("token"):  # RFC 7662 §2.1: REQUIRED
            raise RequestRejectedError("token is required")
    except RequestRejectedError as exc:
        return problem_for(exc)
    try:
        verified = keyturn_state(request).service.validate(params["token"])
    except KeyturnError:
        return JSONResponse({"active": False}, headers=NO_STORE)
    claims = verified.claims
    body = {
        "active": True,
        "scope": format_scope(verified.scopes),
        "client_id": verified.client_id,
        "token_type": "Bearer",
        "exp": verified.expires_at,
        "iat": verified.issued_at,
        "sub": verified.subject,
        "aud": claims["aud"],
        "iss": claims["iss"],
        "jti": verified.jti,
    }
    return JSONResponse(body, headers=NO_STORE)


async def metadata(request: Request) -> Response:
    """``GET /.well-known/oauth-authorization-server`` (RFC 8414)."""
    settings = keyturn_state(request).settings
    base = settings.issuer.rstrip("/") + settings.url_prefix
    return JSONResponse(
        {
            "issuer": settings.issuer,
            "token_endpoint": f"{base}/v1/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_endpoint": f"{base}/v1/revoke",
            "introspection_endpoint": f"{base}/v1/introspect",
            "grant_types_supported": ["client_credentials", "refresh_token"],
            "response_types_supported": [],
            # "none": a login's refresh token (a public client's) needs no authentication.
            "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            # RFC 8414 §2: the algorithms private_key_jwt assertions may be signed with.
            "token_endpoint_auth_signing_alg_values_supported": SUPPORTED_ALGORITHMS,
            "revocation_endpoint_auth_signing_alg_values_supported": SUPPORTED_ALGORITHMS,
        },
        headers={"Cache-Control": "public, max-age=3600"},
    )


def public_routes(prefix: str) -> list[Route]:
    """The v1 routes of the public listener.

    With a prefix the metadata is also served where RFC 8414 §3.1 puts it for an issuer
    with that path, ``/.well-known/oauth-authorization-server<prefix>``.
    """
    routes = [
        Route(f"{prefix}/v1/token", token, methods=["POST"]),
        Route(f"{prefix}/v1/revoke", revoke, methods=["POST"]),
        Route(f"{prefix}/v1/introspect", introspect, methods=["POST"]),
        Route(f"{prefix}/v1/validate", V1ValidateEndpoint(), methods=["GET"]),
        Route(f"{prefix}/.well-known/jwks.json", JwksEndpoint(V1_JWKS), methods=["GET"]),
        Route(f"{prefix}{METADATA_PATH}", metadata, methods=["GET"]),
    ]
    if prefix:
        routes.append(Route(f"{METADATA_PATH}{prefix}", metadata, methods=["GET"]))
    return routes
