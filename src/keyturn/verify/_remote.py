"""`RemoteVerifier`: ask the Keyturn server whether a token is valid (JWThenticator's model).

Each call is one ``GET /v1/validate`` with the token as a Bearer credential and the
required scopes as ``?scope=``. The server checks the signature, the claims, the scopes
and revocation, so a revoked key is refused at once; the price is a network round trip
per request. When the server answers 200, the claims are read from the very token it
vouched for: the signature it checked covers them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any, Final

import httpx

from keyturn.core.tokens import (
    MAX_TOKEN_BYTES,
    VerifiedToken,
    format_scope,
    parse_scope,
    peek_unverified_claims,
)
from keyturn.errors import (
    InsufficientScopeError,
    InvalidTokenError,
    MalformedTokenError,
    TokenClaimsError,
    VerifierUnavailableError,
)
from keyturn.verify._common import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    check_url,
    fetch_capped,
)

__all__ = ["RemoteVerifier"]

# What may go into the Authorization header at all; the server checks the rest.
_TOKEN_CHARACTERS: Final = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN_ID_HEADER: Final = "x-keyturn-token-id"  # noqa: S105 -- a header name


class RemoteVerifier:
    """Verify tokens by asking a Keyturn server's ``/v1/validate``.

    Args:
        server_url: the Keyturn public listener, with its URL prefix if it has one
            (``https://auth.example.com``).
        client: an `httpx.AsyncClient` to reuse connections (you close it); by default
            each call opens and closes its own.
        allow_insecure_http: accept an ``http://`` URL (loopback and tests only): the
            token travels in every request.
        timeout: seconds a whole call may take.

    Raises:
        ValueError: the URL is not https (see ``allow_insecure_http``).
    """

    def __init__(
        self,
        server_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        allow_insecure_http: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        base = check_url(server_url, allow_insecure_http=allow_insecure_http, what="server URL")
        self.validate_url = base.rstrip("/") + "/v1/validate"
        self.timeout = timeout
        self._client = client

    def __repr__(self) -> str:
        return f"RemoteVerifier({self.validate_url!r})"

    async def verify(self, token: str, *, required_scopes: Iterable[str] = ()) -> VerifiedToken:
        """Ask the server about ``token`` and return its claims.

        Raises:
            InvalidTokenError: the server refused the token (401), or it is not even a
                compact JWS (then it is never sent).
            InsufficientScopeError: the token lacks a required scope (403).
            VerifierUnavailableError: the server could not be reached or failed (5xx,
                429, timeout); answer 503, not 401.
        """
        if len(token) > MAX_TOKEN_BYTES or not _TOKEN_CHARACTERS.fullmatch(token):
            # Refused here, not sent: a CR/LF would otherwise fail as a transport error (503).
            raise MalformedTokenError("token is not a compact JWS")
        required = frozenset(required_scopes)
        params = {"scope": format_scope(required)} if required else {}
        headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
        if self._client is not None:
            response = await self._ask(self._client, headers, params)
        else:
            async with httpx.AsyncClient() as client:
                response = await self._ask(client, headers, params)
        if response.status_code == 200:
            return _vouched_claims(token, response.headers.get(_TOKEN_ID_HEADER))
        if response.status_code == 403:
            raise InsufficientScopeError(
                f"token lacks required scope(s): {format_scope(required)}", required=required
            )
        if response.status_code in (400, 401):
            raise InvalidTokenError("the Keyturn server refused the token")
        raise VerifierUnavailableError(
            f"the Keyturn server answered HTTP {response.status_code}",
            retry_after=_retry_after(response),
        )

    async def _ask(
        self, client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
    ) -> httpx.Response:
        request = client.build_request("GET", self.validate_url, headers=headers, params=params)
        response, _ = await fetch_capped(
            client,
            request,
            timeout=self.timeout,
            max_bytes=DEFAULT_MAX_RESPONSE_BYTES,
            what="the Keyturn server",
        )
        return response


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "")
    return min(int(value), 3600) if value.isdigit() and int(value) > 0 else 1


def _vouched_claims(token: str, token_id: str | None) -> VerifiedToken:
    """Read the claims of a token the server has just verified."""
    # The server checked this exact token's signature, so its payload is authentic; it
    # is read here without a second verification, never before the server's answer.
    header, claims = peek_unverified_claims(token)
    try:
        scopes = parse_scope(claims.get("scope", ""))
        verified = VerifiedToken(
            subject=_text(claims, "sub"),
            jti=_text(claims, "jti"),
            client_id=_text(claims, "client_id"),
            issued_at=_integer(claims, "iat"),
            expires_at=_integer(claims, "exp"),
            scopes=scopes,
            kid=_text(header, "kid"),
            claims=MappingProxyType(claims),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise TokenClaimsError("the validated token does not carry Keyturn's claims") from exc
    if token_id is not None and token_id != verified.jti:
        raise TokenClaimsError("the server vouched for another token")
    return verified


def _text(values: dict[str, Any], name: str) -> str:
    value = values.get(name)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _integer(values: dict[str, Any], name: str) -> int:
    value = values.get(name)
    if type(value) is not int:
        raise TypeError(f"{name} must be an integer")
    return value
