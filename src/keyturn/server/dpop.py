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
from typing import Final

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from keyturn.config import Settings
from keyturn.core.dpop import DPoPProof
from keyturn.server.requests import keyturn_state
from keyturn.server.state import KeyturnState
from keyturn.service.dpop import DPOP_NONCE_HEADER

__all__ = ["add_dpop_nonce", "endpoint_urls", "token_proof", "with_dpop_nonce"]

Handler = Callable[[Request], Awaitable[Response]]
#: The proof header as ASGI lists it (RFC 9449 §4.1, ``DPoP``).
_DPOP: Final = b"dpop"


def endpoint_urls(settings: Settings, scope: Scope, path: str) -> tuple[str, str]:
    """The URLs a proof's ``htu`` may name: the external one, then the one as received.

    The one as received is Starlette's ``request.url`` without query or fragment (scheme
    and host from the ASGI scope and the ``Host`` header).
    """
    return settings.public_url(path), str(URL(scope=scope).replace(query="", fragment=""))


async def token_proof(state: KeyturnState, scope: Scope, path: str) -> DPoPProof | None:
    """The request's checked DPoP proof for a token endpoint at ``path``, or None.

    Raises:
        InvalidDPoPProofError: several ``DPoP`` headers, a failed check, a replay.
        UseDPoPNonceError: the server requires a nonce the proof lacks.
    """
    proofs = [value.decode("latin-1") for name, value in scope["headers"] if name == _DPOP]
    if not proofs:
        return None
    urls = endpoint_urls(state.settings, scope, path)
    return await state.service.dpop.check(proofs, method="POST", urls=urls, use_nonce=True)


def add_dpop_nonce(state: KeyturnState, response: Response) -> Response:
    """``response`` with a fresh ``DPoP-Nonce`` while the server requires nonces."""
    nonce = state.service.dpop.nonce()
    if nonce is not None:
        response.headers[DPOP_NONCE_HEADER] = nonce
    return response


def with_dpop_nonce(handler: Handler) -> Handler:
    """Add a fresh ``DPoP-Nonce`` to every answer of ``handler`` while nonces are on."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        return add_dpop_nonce(keyturn_state(request), await handler(request))

    return endpoint
