"""`RemoteVerifier`: ask the Keyturn server whether a token is valid (JWThenticator's model).

Each call is one ``GET /v1/validate`` with the token as a Bearer credential (or, for a
DPoP request, as ``DPoP`` with the proof and the request's method and URL, as a gateway
forwards them) and the required scopes as ``?scope=``. The server checks the signature,
the claims, the scopes, revocation and the proof, so a revoked key is refused at once;
the price is a network round trip per request. When the server answers 200, the claims
are read from the very token it vouched for: the signature it checked covers them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any, Final

import httpx

from keyturn.core.dpop import MAX_PROOF_BYTES, InvalidDPoPProofError, check_binding
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
    KeyturnError,
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
from keyturn.verify._dpop import Scheme

__all__ = ["ORIGINAL_METHOD_HEADER", "ORIGINAL_URL_HEADER", "RemoteVerifier"]

# What may go into the Authorization header at all; the server checks the rest.
_TOKEN_CHARACTERS: Final = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN_ID_HEADER: Final = "x-keyturn-token-id"  # noqa: S105 -- a header name
_DPOP_REFUSAL: Final = re.compile(
    r'^\s*DPoP\b.*\berror="(?:invalid_dpop_proof|use_dpop_nonce)"', re.I
)
_METHOD: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # an RFC 9110 token
_URL: Final = re.compile(r"[\x21-\x7e]{1,8192}")  # printable ASCII: no space, CR or LF
#: RFC 9449 §4.1: the proof's header; as the gateways forward it.
DPOP_HEADER: Final = "DPoP"
#: What the gateways send ``/v1/validate`` about the request they check (agreed with the
#: server): its method and its absolute URL as the client called it.
ORIGINAL_METHOD_HEADER: Final = "X-Original-Method"
ORIGINAL_URL_HEADER: Final = "X-Original-URL"


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

    async def verify(
        self,
        token: str,
        *,
        required_scopes: Iterable[str] = (),
        dpop_proof: str | None = None,
        method: str | None = None,
        url: str | None = None,
        scheme: Scheme | None = None,
    ) -> VerifiedToken:
        """Ask the server about ``token``, as the request presents it, and return its claims.

        With ``scheme="dpop"`` the call forwards ``Authorization: DPoP``, the ``DPoP``
        proof and the request's method and URL (``X-Original-Method``,
        ``X-Original-URL``), as a gateway does: the server checks the proof and its single
        use. A bound token as Bearer is refused here too, whatever the server says.

        Raises:
            InvalidTokenError: the server refused the token (401), or it is not even a
                compact JWS (then it is never sent).
            InvalidDPoPProofError: a bound token as Bearer or without a proof, or the
                server refused the proof (401 ``invalid_dpop_proof``).
            InsufficientScopeError: the token lacks a required scope (403).
            VerifierUnavailableError: the server could not be reached or failed (5xx,
                429, timeout); answer 503, not 401.
            ValueError: a proof without the request's ``method`` and ``url``.
        """
        if len(token) > MAX_TOKEN_BYTES or not _TOKEN_CHARACTERS.fullmatch(token):
            # Refused here, not sent: a CR/LF would otherwise fail as a transport error (503).
            raise MalformedTokenError("token is not a compact JWS")
        used: Scheme = scheme or ("dpop" if dpop_proof is not None else "bearer")
        headers = {"Accept-Encoding": "identity"}
        if used == "dpop":
            headers.update(_dpop_headers(dpop_proof, method, url))
        headers["Authorization"] = f"{'DPoP' if used == 'dpop' else 'Bearer'} {token}"
        required = frozenset(required_scopes)
        params = {"scope": format_scope(required)} if required else {}
        if self._client is not None:
            response = await self._ask(self._client, headers, params)
        else:
            async with httpx.AsyncClient() as client:
                response = await self._ask(client, headers, params)
        if response.status_code == 200:
            verified = _vouched_claims(token, response.headers.get(_TOKEN_ID_HEADER))
            # No downgrade even from a server that does not know DPoP: cnf.jkt needs DPoP.
            if used == "bearer" or verified.jkt is None:
                check_binding(verified.jkt, None, scheme=used)
            return verified
        raise _refusal(response, required)

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


def _refusal(response: httpx.Response, required: frozenset[str]) -> KeyturnError:
    """The error a non-200 answer of ``/v1/validate`` means."""
    if response.status_code == 403:
        return InsufficientScopeError(
            f"token lacks required scope(s): {format_scope(required)}", required=required
        )
    if response.status_code in (400, 401):
        if _DPOP_REFUSAL.search(response.headers.get("www-authenticate", "")):
            return InvalidDPoPProofError("the Keyturn server refused the DPoP proof")
        return InvalidTokenError("the Keyturn server refused the token")
    return VerifierUnavailableError(
        f"the Keyturn server answered HTTP {response.status_code}",
        retry_after=_retry_after(response),
    )


def _dpop_headers(proof: str | None, method: str | None, url: str | None) -> dict[str, str]:
    """The headers a gateway forwards to ``/v1/validate`` with a DPoP request."""
    if proof is None:
        raise InvalidDPoPProofError("a DPoP-bound token needs a DPoP proof")
    if method is None or url is None:
        raise ValueError("a DPoP proof is checked against the request's method and url")
    if len(proof) > MAX_PROOF_BYTES or not _TOKEN_CHARACTERS.fullmatch(proof):
        raise InvalidDPoPProofError("the DPoP proof is not a compact JWS")
    if not _METHOD.fullmatch(method) or not _URL.fullmatch(url):
        raise ValueError("the request's method or url cannot be forwarded in a header")
    return {DPOP_HEADER: proof, ORIGINAL_METHOD_HEADER: method, ORIGINAL_URL_HEADER: url}


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
