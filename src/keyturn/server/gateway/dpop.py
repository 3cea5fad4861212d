"""The gateway check with DPoP (RFC 9449 §7): the proof of the request a gateway checks.

A gateway asks Keyturn about a request it received; the proof in that request's ``DPoP``
header names the *original* method and URL. ``GET /v1/validate`` takes them from headers
the gateway passes:

* nginx ``auth_request``: ``X-Original-Method`` and ``X-Original-URL`` (or
  ``X-Original-URI`` with ``X-Forwarded-Proto`` and ``X-Forwarded-Host``);
* Traefik ForwardAuth: ``X-Forwarded-Method``, ``X-Forwarded-Proto``,
  ``X-Forwarded-Host`` and ``X-Forwarded-Uri`` (it sets them itself).

Envoy's ext_authz HTTP service cannot call a fixed route: it sends the client's method
to ``path_prefix`` + the client's path, which ``/v1/ext_authz/...``
(`keyturn.server.gateway.endpoints.ExtAuthzEndpoint`) turns back into the original
request. Both end in `check_request`, the one check.

The request's ``Authorization: DPoP <token>`` token is verified first (a bad token
never spends a proof), then the proof with the token's ``ath``, its ``jti`` claimed once
in the replay store, and `keyturn.core.dpop.check_binding`. Failures are 401 with
``WWW-Authenticate: DPoP error=...`` and ``algs`` (§7.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from keyturn.core.dpop import InvalidDPoPProofError, check_binding
from keyturn.errors import KeyturnError
from keyturn.rfc9449 import access_credential
from keyturn.server.errors import dpop_error
from keyturn.server.gateway.answers import Answer, v1_validate, verified_answer
from keyturn.service import KeyturnService

__all__ = [
    "DPOP_HEADER_NAME",
    "check_request",
    "dpop_proofs",
    "original_request",
]

#: The proof header as ASGI lists it (lower-case bytes).
DPOP_HEADER_NAME: Final = b"dpop"
Headers = Sequence[tuple[bytes, bytes]]
_NO_ORIGINAL: Final = (
    "the gateway did not pass the original method and URL (X-Original-Method and "
    "X-Original-URL, or X-Forwarded-Method, -Proto, -Host and -Uri)"
)


def _headers(headers: Headers) -> dict[bytes, str]:
    wanted = {
        b"x-original-method",
        b"x-original-url",
        b"x-original-uri",
        b"x-forwarded-method",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-uri",
        b"host",
    }
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in wanted and name not in found:
            found[name] = value.decode("latin-1").strip()
    return found


def original_request(headers: Headers) -> tuple[str, str] | None:
    """The method and absolute URL of the request the gateway asks about, or None."""
    found = _headers(headers)
    method = found.get(b"x-original-method") or found.get(b"x-forwarded-method")
    if not method:
        return None
    url = found.get(b"x-original-url")
    if url:
        return method.upper(), url
    path = found.get(b"x-original-uri") or found.get(b"x-forwarded-uri")
    proto = found.get(b"x-forwarded-proto")
    host = found.get(b"x-forwarded-host") or found.get(b"host")
    if not (path and proto and host):
        return None
    proto = proto.split(",", 1)[0].strip()
    host = host.split(",", 1)[0].strip()
    return method.upper(), f"{proto}://{host}{path if path.startswith('/') else '/' + path}"


def dpop_proofs(headers: Headers) -> list[str]:
    """The values of the request's ``DPoP`` headers (more than one is refused later)."""
    return [value.decode("latin-1") for name, value in headers if name == DPOP_HEADER_NAME]


async def check_request(
    service: KeyturnService,
    authorization: str | None,
    proofs: Sequence[str],
    original: tuple[str, str] | None,
    required: frozenset[str] | Answer,
) -> Answer:
    """The one gateway check (``/v1/validate``, ``/v1/ext_authz/...``).

    ``authorization`` and ``proofs`` are the client's credential and ``DPoP`` headers,
    ``original`` the method and absolute URL of the client's request (None when the
    gateway did not pass them), ``required`` the scopes it asks for (`required_scopes`,
    `header_scopes`). Without DPoP it is the RFC 6750 Bearer check; with it (an
    ``Authorization: DPoP`` or a ``DPoP`` header) the §7.1 check. 200 with the identity
    headers, or the 401/403 of the scheme; storage down is the service's 503.
    """
    if not proofs and not _dpop_scheme(authorization):
        return v1_validate(service.validate, authorization, required)
    try:
        credential = access_credential(authorization, malformed="missing")
    except KeyturnError as exc:  # pragma: no cover - "missing" never raises
        return Answer.of(dpop_error(exc))
    if credential is None:
        return Answer.of(dpop_error(None))
    scheme, token = credential
    if isinstance(required, Answer):
        return required
    try:
        verified = service.validate(token, required_scopes=required, allow_bound=True)
        proof = None
        if scheme == "dpop" and proofs:
            if original is None:
                raise InvalidDPoPProofError(_NO_ORIGINAL)
            method, url = original
            proof = await service.dpop.check(proofs, method=method, urls=(url,), access_token=token)
        check_binding(verified.jkt, proof, scheme=scheme)
    except KeyturnError as exc:
        return Answer.of(dpop_error(exc))
    return verified_answer(verified)


def _dpop_scheme(authorization: str | None) -> bool:
    return authorization is not None and authorization.lstrip()[:5].lower() == "dpop "
