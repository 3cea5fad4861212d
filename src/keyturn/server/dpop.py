"""DPoP at the token endpoints (RFC 9449 §5, §8): ``/v1/token`` and ``/v1/login``.

`token_proof` checks a request's ``DPoP`` header with `keyturn.service.dpop.DPoPChecker`
(``htm`` POST; ``htu`` the endpoint's external URL, ``KEYTURN_ISSUER`` +
``KEYTURN_URL_PREFIX`` + path as private_key_jwt's ``aud`` is built, or the URL the
request arrived at). `with_dpop_nonce` gives every answer of those endpoints a fresh
``DPoP-Nonce`` when the server requires nonces (``KEYTURN_DPOP_NONCE``), so a client
answered ``use_dpop_nonce`` can retry at once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from keyturn.core.dpop import DPoPProof
from keyturn.rfc9449 import DPOP_HEADER
from keyturn.server.requests import keyturn_state
from keyturn.service.dpop import DPOP_NONCE_HEADER

__all__ = ["endpoint_urls", "token_proof", "with_dpop_nonce"]

Handler = Callable[[Request], Awaitable[Response]]


def endpoint_urls(request: Request, path: str) -> tuple[str, str]:
    """The URLs a proof's ``htu`` may name: the external one, then the one as received."""
    settings = keyturn_state(request).settings
    external = f"{settings.issuer.rstrip('/')}{settings.url_prefix}{path}"
    return external, str(request.url.replace(query="", fragment=""))


async def token_proof(request: Request, path: str) -> DPoPProof | None:
    """The request's checked DPoP proof for a token endpoint at ``path``, or None.

    Raises:
        InvalidDPoPProofError: several ``DPoP`` headers, a failed check, a replay.
        UseDPoPNonceError: the server requires a nonce the proof lacks.
    """
    proofs = request.headers.getlist(DPOP_HEADER)
    if not proofs:
        return None
    checker = keyturn_state(request).service.dpop
    return await checker.check(
        proofs, method="POST", urls=endpoint_urls(request, path), use_nonce=True
    )


def with_dpop_nonce(handler: Handler) -> Handler:
    """Add a fresh ``DPoP-Nonce`` to every answer of ``handler`` while nonces are on."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        response = await handler(request)
        nonce = keyturn_state(request).service.dpop.nonce()
        if nonce is not None:
            response.headers[DPOP_NONCE_HEADER] = nonce
        return response

    return endpoint
