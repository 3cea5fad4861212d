"""What every verifier shares: the `Verifier` protocol, URL rules, capped HTTP reads.

`cache_lifetime` is pure (no clock, no I/O) so its rules are tested as a table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Final, Protocol
from urllib.parse import urlsplit

import httpx

from keyturn.core.tokens import VerifiedToken
from keyturn.errors import VerifierUnavailableError
from keyturn.verify._dpop import Scheme

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "Verifier",
    "cache_lifetime",
    "check_url",
    "fetch_capped",
]

#: Seconds a whole fetch may take: connect, headers and body together.
DEFAULT_TIMEOUT: Final = 5.0
#: A JWKS with a dozen RSA keys is about 10 KiB; anything far larger is not one.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024


class Verifier(Protocol):
    """Anything that checks an access token, as a request presents it, and returns its claims.

    `JWKSVerifier`, `OfflineVerifier` and `RemoteVerifier` are verifiers; the aiohttp,
    Starlette and FastAPI integrations accept any of them.
    """

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
        """Return the token's verified claims.

        Args:
            token: the access token of ``Authorization: <scheme> <token>``.
            required_scopes: scopes the token must hold.
            dpop_proof: the request's ``DPoP`` header (RFC 9449 §4), if it has one.
            method: the request's method (the proof's ``htm``); needed with a proof.
            url: the request's absolute URL as the client called it (``htu``; the query
                is ignored); needed with a proof.
            scheme: the ``Authorization`` scheme, ``"bearer"`` or ``"dpop"``; None means
                ``"dpop"`` when a proof is given, else ``"bearer"``. A token bound to a
                key (``cnf.jkt``) passes only as ``"dpop"`` with a valid proof made with
                that key, never as ``"bearer"`` (RFC 9449 §7.1: no downgrade).

        Raises:
            InvalidTokenError: the token is not valid (a subclass says why).
            InvalidDPoPProofError: a bound token as Bearer or without a proof, a bearer
                token as DPoP, or a proof that fails a check or was used before.
            InsufficientScopeError: valid, but a required scope is missing.
            VerifierUnavailableError: keys or server unreachable; retry later (503).
        """
        ...


def check_url(url: str, *, allow_insecure_http: bool, what: str) -> str:
    """Return ``url`` if it is an absolute https URL (or http, when explicitly allowed).

    Bearer tokens and the keys that decide their validity must not cross the network in
    clear text, and ``file:``/``data:`` URLs must never be fetched (PyJWT GHSA-993g-76c3-p5m4).

    Raises:
        ValueError: another scheme, no host, or http without ``allow_insecure_http``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"{what} must be an absolute https:// URL, not {url!r}")
    if parts.scheme == "http" and not allow_insecure_http:
        raise ValueError(
            f"{what} {url!r} is plain http; use https, or pass allow_insecure_http=True "
            "for a loopback or test deployment"
        )
    return url


def cache_lifetime(
    cache_control: str | None,
    age: str | None,
    *,
    default: float,
    minimum: float,
    maximum: float,
) -> float:
    """Seconds to keep a fetched document, from its ``Cache-Control`` and ``Age`` headers.

    ``max-age`` minus ``Age`` (RFC 9111 §4.2.3) when given; ``no-store``/``no-cache``
    mean as short as allowed; otherwise ``default``. The result is always clamped to
    ``[minimum, maximum]``: a server cannot make us refetch on every request, nor keep a
    removed key trusted for days.
    """
    lifetime = default
    directives = {
        name.strip().lower(): value.strip().strip('"')
        for name, _, value in (part.partition("=") for part in (cache_control or "").split(","))
    }
    if "no-store" in directives or "no-cache" in directives:
        lifetime = minimum
    elif directives.get("max-age", "").isdigit():
        lifetime = int(directives["max-age"])
        if age is not None and age.strip().isdigit():
            lifetime -= int(age.strip())
    return float(min(max(lifetime, minimum), maximum))


async def fetch_capped(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    timeout: float,
    max_bytes: int,
    what: str,
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read at most ``max_bytes`` of body within ``timeout`` seconds.

    The deadline covers the whole exchange, so a server that drips one byte a second
    cannot hold a worker (httpx's own timeouts are per read). Redirects are never
    followed (PyJWT GHSA-9v7f-9g4p-ffgj) and compressed bodies are refused, so the cap
    is the size actually held in memory.

    Raises:
        VerifierUnavailableError: transport error, timeout, oversize or encoded body.
    """
    try:
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                body = await _read_body(response, max_bytes=max_bytes, what=what)
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise VerifierUnavailableError(f"{what} did not answer within {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise VerifierUnavailableError(
            f"{what} could not be reached ({type(exc).__name__})"
        ) from exc
    return response, body


async def _read_body(response: httpx.Response, *, max_bytes: int, what: str) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise VerifierUnavailableError(f"{what} sent a {encoding!r}-encoded body; expected none")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise VerifierUnavailableError(f"{what} response is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():  # identity-encoded: the bytes as sent
        body += chunk
        if len(body) > max_bytes:
            raise VerifierUnavailableError(f"{what} response is larger than {max_bytes} bytes")
    return bytes(body)
