"""What the DPoP server tests share: device keys, proofs, and token requests with a proof."""

from __future__ import annotations

from typing import Any, Final

import httpx

from keyturn.core.dpop import create_dpop_proof
from keyturn.core.signing import SigningKey, jwk_thumbprint
from keyturn.core.tokens import peek_unverified_claims

from .conftest import ISSUER, START

NOW: Final = int(START.timestamp())
TOKEN_URL: Final = f"{ISSUER}/v1/token"
LOGIN_URL: Final = f"{ISSUER}/v1/login"
#: The protected resource a gateway asks /v1/validate about.
RESOURCE: Final = "https://api.example/orders"
DEVICE: Final = SigningKey.generate("ES256")
OTHER_DEVICE: Final = SigningKey.generate("EdDSA")


def thumbprint(key: SigningKey) -> str:
    """RFC 7638 thumbprint of ``key``'s public half: a bound token's ``cnf.jkt``."""
    return jwk_thumbprint(key.verification_key.to_jwk())


def proof(
    key: SigningKey = DEVICE,
    *,
    method: str = "POST",
    url: str = TOKEN_URL,
    now: int = NOW,
    **extra: Any,
) -> str:
    """A valid DPoP proof for ``method`` ``url`` at ``now`` (fresh ``jti``)."""
    return create_dpop_proof(key, method=method, url=url, now=now, **extra)


def claims(token: str) -> dict[str, Any]:
    """A token's payload, unverified."""
    return dict(peek_unverified_claims(token)[1])


async def dpop_token(
    public: httpx.AsyncClient, key: str, dpop: str | None = None, **form: str
) -> httpx.Response:
    """``POST /v1/token`` client_credentials with HTTP Basic and a ``DPoP`` header."""
    headers = {} if dpop is None else {"DPoP": dpop}
    return await public.post(
        "/v1/token",
        data={"grant_type": "client_credentials", **form},
        auth=(key, ""),
        headers=headers,
    )


def dpop_headers(
    token: str,
    key: SigningKey = DEVICE,
    *,
    method: str = "GET",
    url: str = RESOURCE,
    **extra: Any,
) -> dict[str, str]:
    """What nginx passes /v1/validate for a DPoP request of ``method`` ``url``."""
    return {
        "Authorization": f"DPoP {token}",
        "DPoP": proof(key, method=method, url=url, access_token=token, **extra),
        "X-Original-Method": method,
        "X-Original-URL": f"{url}?page=2",
    }
