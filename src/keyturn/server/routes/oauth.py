"""What the OAuth 2.0 token endpoints share: client credentials, scopes, the token response.

``/v1/token``, ``/v1/revoke`` (`keyturn.server.v1`) and ``/v1/login`` (`keyturn.server.login`)
read client credentials (RFC 6749 §2.3, RFC 7523 §2.2) and the ``scope`` parameter (§3.3)
the same way, and answer with the same §5.1 token response.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from starlette.responses import Response

from keyturn.config import Settings
from keyturn.core.assertions import CLIENT_ASSERTION_TYPE, ClientAssertion, assertion_client_id
from keyturn.core.tokens import format_scope, parse_scope
from keyturn.errors import InvalidClientError, InvalidRequestError
from keyturn.server.errors import NO_STORE
from keyturn.server.requests import key_bucket
from keyturn.server.state import KeyturnState
from keyturn.service import TokenPair

__all__ = [
    "NO_CREDENTIALS",
    "ClientCredentials",
    "authenticated_client",
    "client_credentials",
    "requested_scopes",
    "token_response",
]

NO_CREDENTIALS: Final = "send the API key as HTTP Basic password or client_secret"
#: A ``client_id`` no key has (key ids are never empty).
_NO_CLIENT: Final = ""


_ACCESS_TOKEN: Final = b'{"access_token":"'
_BEARER_AND_LIFETIME: Final = b'","token_type":"Bearer","expires_in":'
_DPOP_AND_LIFETIME: Final = b'","token_type":"DPoP","expires_in":'
_SCOPE: Final = b',"scope":'
_REFRESH_TOKEN: Final = b',"refresh_token":'


def _json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


def token_response(pair: TokenPair) -> Response:
    """The RFC 6749 §5.1 answer: access token, type, lifetime, scope, maybe a refresh token.

    A DPoP-bound access token (``cnf``) is of type ``DPoP`` (RFC 9449 §5). The body is
    assembled from pre-encoded parts (issue 19): what `JSONResponse` would write for the
    same object, compact, in the same order, without a JSON encoder pass.
    """
    parts = [
        _ACCESS_TOKEN,
        pair.access.token.encode("ascii"),  # a JWS compact serialisation: base64url and dots
        _DPOP_AND_LIFETIME if "cnf" in pair.access.claims else _BEARER_AND_LIFETIME,
        str(int(pair.access.expires_in)).encode("ascii"),
        _SCOPE,
        _json(format_scope(pair.scopes)),
    ]
    if pair.refresh_token is not None:
        parts += (_REFRESH_TOKEN, _json(pair.refresh_token))
    parts.append(b"}")
    return Response(b"".join(parts), headers=NO_STORE, media_type="application/json")


def requested_scopes(params: dict[str, str]) -> frozenset[str] | None:
    """The ``scope`` parameter as a set (None when absent).

    Raises:
        InvalidRequestError: it breaks the RFC 6749 §3.3 grammar.
    """
    scope = params.get("scope")
    if scope is None:
        return None
    try:
        return parse_scope(scope)
    except ValueError as exc:
        raise InvalidRequestError("scope breaks the RFC 6749 §3.3 grammar") from exc


@dataclass(frozen=True, slots=True)
class ClientCredentials:
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

    def credential(self, settings: Settings) -> str | ClientAssertion:
        """What `KeyturnService.authenticate_client` takes: the key, or the assertion."""
        if self.assertion is None:
            return self.secret
        token_endpoint = settings.public_url("/v1/token")
        # RFC 7523 §3: the issuer identifier; also the token endpoint URL (OIDC Core §9).
        audiences = (settings.issuer, token_endpoint)
        return ClientAssertion(self.assertion, self.client_id, audiences)


def _client_assertion(
    authorization: str | None, params: dict[str, str]
) -> ClientCredentials | None:
    """A ``private_key_jwt`` client assertion (RFC 7523 §2.2), or None when none came."""
    assertion_type = params.get("client_assertion_type")
    assertion = params.get("client_assertion")
    if assertion_type is None and assertion is None:
        return None
    if authorization is not None or "client_secret" in params:
        # RFC 6749 §2.3: one authentication method per request.
        raise InvalidRequestError("use one client authentication method, not several")
    if assertion_type != CLIENT_ASSERTION_TYPE:
        # RFC 7521 §4.2.1: an assertion type the server does not support.
        raise InvalidClientError(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    if not assertion:
        raise InvalidRequestError("client_assertion is required")
    return ClientCredentials("", params.get("client_id") or None, assertion)


def client_credentials(
    authorization: str | None, params: dict[str, str]
) -> ClientCredentials | None:
    """The client credentials, from HTTP Basic, ``client_secret`` or ``client_assertion``
    -- at most one; or None.

    RFC 6749 §2.3.1: Basic ``client_id:API_KEY`` (each form-urlencoded first), or the key
    alone as the user name (``curl -u KEY:``); in the body ``client_secret`` and an
    optional ``client_id``. A ``client_id`` in the body next to Basic must be the same.
    RFC 7523 §2.2: ``client_assertion_type`` and ``client_assertion``. ``authorization``
    is the request's (first) ``Authorization`` header, None when it sent none.
    """
    assertion = _client_assertion(authorization, params)
    if assertion is not None:
        return assertion
    header = authorization
    from_body = params.get("client_secret")
    body_id = params.get("client_id") or None
    if header is None:
        if from_body is None:
            return None
        if not from_body:
            raise InvalidClientError(NO_CREDENTIALS)
        return ClientCredentials(from_body, body_id)
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
    return ClientCredentials(secret, client_id)


async def authenticated_client(state: KeyturnState, client: ClientCredentials | None) -> str | None:
    """The id of the key ``client`` authenticates as; None when no credentials came."""
    if client is None:
        return None
    credential = client.credential(state.settings)
    return await state.service.authenticate_client(credential, client_id=client.client_id)
