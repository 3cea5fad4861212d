"""What aiohttp, Starlette and FastAPI share to accept ``Authorization: DPoP`` (RFC 9449 §7).

Framework-free: each integration passes in its request's headers, method and URL parts,
and turns failures into responses with `keyturn.rfc9449.failure_for`. A ``Bearer``
credential is read exactly as before (`keyturn.rfc9449.access_credential` reads it with
`keyturn.rfc6750.bearer_token`) and verified with the
same call, so a bearer token answers as it always did; a bound token sent as Bearer is
refused by the verifier itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from keyturn.core.dpop import InvalidDPoPProofError
from keyturn.core.tokens import VerifiedToken
from keyturn.rfc9449 import Scheme
from keyturn.verify import Verifier

__all__ = ["check_base_url", "request_url", "verify_as"]


def check_base_url(base_url: str | None) -> str | None:
    """``base_url`` without a trailing slash, once checked (an absolute http(s) URL).

    Raises:
        ValueError: not an absolute http(s) URL, or one with a query or fragment.
    """
    if base_url is None:
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an absolute http(s) URL, not {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query or a fragment")
    return base_url.rstrip("/")


def request_url(*, scheme: str, netloc: str, raw_path: str, base_url: str | None) -> str:
    """The URL the client called, as a proof's ``htu`` names it (the query left out).

    Behind a proxy the request's own scheme and host are the proxy's: ``base_url`` (the
    external origin, with the path prefix the proxy strips) replaces them.
    """
    path = raw_path.partition("?")[0] or "/"
    if base_url is not None:
        return base_url + path
    return f"{scheme}://{netloc}{path}"


async def verify_as(
    verifier: Verifier,
    scheme: Scheme,
    token: str,
    *,
    proofs: Sequence[str],
    method: str,
    url: str,
) -> VerifiedToken:
    """Verify ``token`` as presented: a Bearer token exactly as before, a DPoP one with its proof.

    Raises:
        InvalidDPoPProofError: more than one ``DPoP`` header (RFC 9449 §4.3 check 1), or
            the verifier refused the proof or the binding.
        KeyturnError: whatever else the verifier raises.
    """
    if scheme == "bearer":
        return await verifier.verify(token)
    if len(proofs) > 1:
        raise InvalidDPoPProofError("the request must carry at most one DPoP header")
    proof = proofs[0] if proofs else None
    return await verifier.verify(token, dpop_proof=proof, method=method, url=url, scheme="dpop")
