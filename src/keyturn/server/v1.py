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

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from keyturn.core.dpop import DPOP_ALGORITHMS, confirmation
from keyturn.core.signing import SUPPORTED_ALGORITHMS
from keyturn.core.tokens import format_scope
from keyturn.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    KeyturnError,
    RequestRejectedError,
    UnsupportedGrantTypeError,
)
from keyturn.rfc6750 import bearer_challenge, bearer_matches
from keyturn.server.dpop import token_proof
from keyturn.server.errors import NO_STORE, ErrorStyle, render, renders
from keyturn.server.gateway.answers import IDENTITY_HEADERS, V1_JWKS, identity_headers
from keyturn.server.gateway.endpoints import (
    EXT_AUTHZ_METHODS,
    EXT_AUTHZ_PATH,
    ExtAuthzEndpoint,
    JwksEndpoint,
    V1TokenEndpoint,
    V1ValidateEndpoint,
)
from keyturn.server.requests import authorization, keyturn_state, read_form_or_json, request_id
from keyturn.server.routes.oauth import (
    NO_CREDENTIALS,
    authenticated_client,
    client_credentials,
    requested_scopes,
    token_response,
)
from keyturn.server.state import KeyturnState, client_address
from keyturn.server.telemetry import REQUEST_ID_SCOPE_KEY

__all__ = ["IDENTITY_HEADERS", "identity_headers", "public_routes"]


#: The token endpoint's path under the prefix (a DPoP proof's ``htu``).
TOKEN_PATH: Final = "/v1/token"  # noqa: S105 -- a path, not a secret
#: RFC 8414 §3: where the authorization server metadata lives.
METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
#: The client authentication methods ``/v1/token`` and ``/v1/revoke`` accept (RFC 8414 §2).
CLIENT_AUTH_METHODS: Final = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)


async def token(state: KeyturnState, scope: Scope, params: dict[str, str]) -> Response:
    """``POST /v1/token``: client_credentials or refresh_token grant (with DPoP, bound).

    The answer of `V1TokenEndpoint` to the request's parameters (its errors are raised,
    rendered in the RFC 6749 §5.2 style by the endpoint).
    """
    grant_type = params.get("grant_type")
    scopes = requested_scopes(params)
    # Optional, as on the legacy routes: a key registered with an identifier must match it.
    identifier = params.get("identifier")
    request_id: Any = scope.get(REQUEST_ID_SCOPE_KEY)
    if grant_type == "client_credentials":
        client = client_credentials(authorization(scope), params)
        if client is None:
            raise InvalidClientError(NO_CREDENTIALS)
        await state.check_rate(client_address(scope), key_bucket=client.bucket)
        proof = await token_proof(state, scope, TOKEN_PATH)
        try:
            pair = await state.service.authenticate(
                client.credential(state.settings),
                identifier=identifier,
                scopes=scopes,
                rotating=True,
                client_id=client.client_id,
                # RFC 6749 §4.4.3: no refresh token unless the deployment asks for one.
                issue_refresh_token=state.settings.client_credentials_refresh_tokens,
                request_id=request_id,
                dpop_jkt=None if proof is None else proof.jkt,
            )
        except InvalidGrantError as exc:
            # RFC 6749 §5.2: failed client authentication is invalid_client (401).
            raise InvalidClientError(exc.message) from exc
        return token_response(pair)
    if grant_type == "refresh_token":
        refresh_token = params.get("refresh_token")
        if not refresh_token:
            raise InvalidRequestError("refresh_token is required")
        client = client_credentials(authorization(scope), params)
        bucket = None if client is None else client.bucket
        await state.check_rate(client_address(scope), key_bucket=bucket)
        proof = await token_proof(state, scope, TOKEN_PATH)
        # RFC 6749 §6: presented credentials are checked first, then the token's owner.
        authenticated = await authenticated_client(state, client)
        pair = await state.service.refresh(
            refresh_token,
            identifier=identifier,
            scopes=scopes,
            check_client=True,
            client=authenticated,
            request_id=request_id,
            dpop_jkt=None if proof is None else proof.jkt,
        )
        return token_response(pair)
    if grant_type is None:
        raise InvalidRequestError("grant_type is required")
    raise UnsupportedGrantTypeError("supported grant types: client_credentials, refresh_token")


@renders(ErrorStyle.OAUTH)
async def revoke(request: Request) -> Response:
    """``POST /v1/revoke`` (RFC 7009): 200 whether or not the token was known."""
    state = keyturn_state(request)
    params = await read_form_or_json(request)
    value = params.get("token")
    if not value:
        raise InvalidRequestError("token is required")
    client = client_credentials(authorization(request.scope), params)
    if client is not None:
        # RFC 7009 §2.1: authenticate the client, then revoke only a token issued to it.
        await state.check_rate(client_address(request.scope), key_bucket=client.bucket)
    authenticated = await authenticated_client(state, client)
    await state.service.revoke_token(value, client=authenticated, request_id=request_id(request))
    return Response(status_code=200, headers=NO_STORE)


def admin_credential_ok(request: Request) -> bool:
    """True when the request carries the configured admin bearer token."""
    expected = keyturn_state(request).settings.admin_token
    if expected is None:
        return False
    return bearer_matches(
        request.headers.get("authorization"), expected.get_secret_value().encode()
    )


async def introspect(request: Request) -> Response:
    """``POST /v1/introspect`` (RFC 7662): ``{"active": false}`` for anything invalid."""
    if not request.app.state.trusted_admin and not admin_credential_ok(request):
        error = InvalidClientError("admin credential required")
        return render(error, ErrorStyle.OAUTH, challenge=bearer_challenge())
    try:
        params = await read_form_or_json(request)
        if not params.get("token"):  # RFC 7662 §2.1: REQUIRED
            raise RequestRejectedError("token is required")
    except RequestRejectedError as exc:
        return render(exc, ErrorStyle.PROBLEM)
    try:
        # RFC 9449 §6.2: a bound token is reported with its cnf (the caller checks the proof).
        verified = keyturn_state(request).service.validate(params["token"], allow_bound=True)
    except KeyturnError:
        return JSONResponse({"active": False}, headers=NO_STORE)
    claims = verified.claims
    body: dict[str, Any] = {
        "active": True,
        "scope": format_scope(verified.scopes),
        "client_id": verified.client_id,
        "token_type": "Bearer" if verified.jkt is None else "DPoP",
        "exp": verified.expires_at,
        "iat": verified.issued_at,
        "sub": verified.subject,
        "aud": claims["aud"],
        "iss": claims["iss"],
        "jti": verified.jti,
    }
    if verified.jkt is not None:
        body["cnf"] = confirmation(verified.jkt)
    return JSONResponse(body, headers=NO_STORE)


async def metadata(request: Request) -> Response:
    """``GET /.well-known/oauth-authorization-server`` (RFC 8414)."""
    settings = keyturn_state(request).settings
    base = settings.public_url()
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
            # RFC 9449 §5.1: the algorithms DPoP proofs may be signed with.
            "dpop_signing_alg_values_supported": DPOP_ALGORITHMS,
        },
        headers={"Cache-Control": "public, max-age=3600"},
    )


def public_routes(prefix: str) -> list[Route]:
    """The v1 routes of the public listener.

    With a prefix the metadata is also served where RFC 8414 §3.1 puts it for an issuer
    with that path, ``/.well-known/oauth-authorization-server<prefix>``.
    """
    routes = [
        Route(f"{prefix}{TOKEN_PATH}", V1TokenEndpoint(token), methods=["POST"]),
        Route(f"{prefix}/v1/revoke", revoke, methods=["POST"]),
        Route(f"{prefix}/v1/introspect", introspect, methods=["POST"]),
        Route(f"{prefix}/v1/validate", V1ValidateEndpoint(), methods=["GET"]),
        Route(
            f"{prefix}{EXT_AUTHZ_PATH}/{{path:path}}",
            ExtAuthzEndpoint(prefix),
            methods=list(EXT_AUTHZ_METHODS),
        ),
        Route(f"{prefix}/.well-known/jwks.json", JwksEndpoint(V1_JWKS), methods=["GET"]),
        Route(f"{prefix}{METADATA_PATH}", metadata, methods=["GET"]),
    ]
    if prefix:
        routes.append(Route(f"{METADATA_PATH}{prefix}", metadata, methods=["GET"]))
    return routes
