"""``GET /v1/validate`` with DPoP (RFC 9449 §7): the proof of the request a gateway checks.

A gateway asks ``/v1/validate`` about a request it received; the proof in that request's
``DPoP`` header names the *original* method and URL, which the gateway passes:

* nginx ``auth_request``: ``X-Original-Method`` and ``X-Original-URL`` (or
  ``X-Original-URI`` with ``X-Forwarded-Proto`` and ``X-Forwarded-Host``);
* Traefik ForwardAuth: ``X-Forwarded-Method``, ``X-Forwarded-Proto``,
  ``X-Forwarded-Host`` and ``X-Forwarded-Uri`` (it sets them itself);
* Envoy ext_authz (HTTP service): the same ``X-Forwarded-*`` four, added with
  ``authorization_request.headers_to_add`` from ``%REQ(:METHOD)%``, ``%REQ(:PATH)%``
  and ``%REQ(:AUTHORITY)%``.

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
from keyturn.server.gateway.answers import Answer, required_scopes, verified_answer
from keyturn.service import KeyturnService

__all__ = ["DPOP_HEADER_NAME", "is_dpop_request", "original_request", "v1_validate_dpop"]

#: The proof header as ASGI lists it (lower-case bytes).
DPOP_HEADER_NAME: Final = b"dpop"
Headers = Sequence[tuple[bytes, bytes]]
_NO_ORIGINAL: Final = (
    "the gateway did not pass the original method and URL (X-Original-Method and "
    "X-Original-URL, or X-Forwarded-Method, -Proto, -Host and -Uri)"
)


def is_dpop_request(authorization: str | None, headers: Headers) -> bool:
    """Whether the request uses DPoP: ``Authorization: DPoP`` or a ``DPoP`` header."""
    if authorization is not None and authorization.lstrip()[:5].lower() == "dpop ":
        return True
    for name, _ in headers:  # noqa: SIM110 -- a plain loop: runs on every Bearer request
        if name == DPOP_HEADER_NAME:
            return True
    return False


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


async def v1_validate_dpop(
    service: KeyturnService, authorization: str | None, headers: Headers, query: bytes
) -> Answer:
    """``GET /v1/validate`` for a DPoP request: 200 with identity headers, or the §7.1 401."""
    try:
        credential = access_credential(authorization, malformed="missing")
    except KeyturnError as exc:  # pragma: no cover - "missing" never raises
        return Answer.of(dpop_error(exc))
    if credential is None:
        return Answer.of(dpop_error(None))
    scheme, token = credential
    required = required_scopes(query)
    if isinstance(required, Answer):
        return required
    try:
        verified = service.validate(token, required_scopes=required, allow_bound=True)
        proof = None
        if scheme == "dpop":
            proofs = [value.decode("latin-1") for name, value in headers if name == b"dpop"]
            original = original_request(headers) if proofs else None
            if proofs and original is None:
                raise InvalidDPoPProofError(_NO_ORIGINAL)
            if original is not None:
                method, url = original
                proof = await service.dpop.check(
                    proofs, method=method, urls=(url,), access_token=token
                )
        check_binding(verified.jkt, proof, scheme=scheme)
    except KeyturnError as exc:
        return Answer.of(dpop_error(exc))
    return verified_answer(verified)
