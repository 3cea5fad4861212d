"""The answers of the gateway's hot routes, computed without I/O.

An `Answer` is a whole HTTP response (status, raw headers, body); each function here
returns the success *or* the failure answer of one route, given what the request said.
Failures are rendered by `keyturn.server.errors` (or the error style the route's module
passes in) and converted with `Answer.of`, so their bytes are Starlette's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.types import Send

from keyturn.core.signing import KeySet
from keyturn.core.tokens import VerifiedToken, format_scope, parse_scope
from keyturn.errors import InvalidRequestError, KeyturnError
from keyturn.schemas import MAX_TOKEN, ValidateRequest
from keyturn.server.errors import bearer_error
from keyturn.server.requests import bearer_token_of, parse_body

__all__ = [
    "IDENTITY_HEADERS",
    "LEGACY_JWKS",
    "V1_JWKS",
    "Answer",
    "JwksStyle",
    "Refuse",
    "Verify",
    "header_scopes",
    "identity_headers",
    "jwks",
    "required_scopes",
    "v1_validate",
    "validate_body",
    "validate_request",
    "verified_answer",
]

#: `KeyturnService.validate`: a token (and the scopes it must hold) to its verified form.
Verify = Callable[..., VerifiedToken]
#: How a route renders a `KeyturnError` (JWThenticator's shapes, RFC 6750, ...).
Refuse = Callable[[KeyturnError], Response]
RawHeaders = tuple[tuple[bytes, bytes], ...]

#: Headers `/v1/validate` returns for the gateway to forward upstream.
IDENTITY_HEADERS: Final = {
    "subject": "X-Keyturn-Subject",
    "client_id": "X-Keyturn-Client-Id",
    "scope": "X-Keyturn-Scope",
    "identifier": "X-Keyturn-Identifier",
    "jti": "X-Keyturn-Token-Id",
    "expires": "X-Keyturn-Expires",
}


class Answer(NamedTuple):
    """A whole HTTP response: status, raw (lower-case) headers and body.

    ``jti`` names the verified token of a success, for the access log line. (A named
    tuple: built on every gateway request, at a fraction of a frozen dataclass's cost.)
    """

    status: int
    headers: RawHeaders
    body: bytes
    jti: str | None = None

    @classmethod
    def of(cls, response: Response) -> Answer:
        """The answer a Starlette ``response`` (without background tasks) would send."""
        return cls(response.status_code, tuple(response.raw_headers), bytes(response.body))

    async def send(self, send: Send) -> None:
        """Send it as the two ASGI messages of a response."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def _json(length: int) -> RawHeaders:
    return (
        (b"content-length", str(length).encode("ascii")),
        (b"content-type", b"application/json"),
    )


_VALIDATED: Final = _json(2)
_VALID_BODY: Final = _json(15)


def validate_request(verify: Verify, authorization: str | None) -> Answer:
    """``GET /validate_request`` (nginx ``auth_request``): 200 ``{}``, or the RFC 6750 401."""
    token = bearer_token_of(authorization)
    if token is None:
        return Answer.of(bearer_error(None))
    try:
        verified = verify(token)
    except KeyturnError as exc:
        return Answer.of(bearer_error(exc))
    return Answer(200, _VALIDATED, b"{}", verified.jti)


def v1_validate(
    verify: Verify, authorization: str | None, required: frozenset[str] | Answer
) -> Answer:
    """A gateway's Bearer check: 200 with the identity headers, or 401/403.

    ``required`` is what `required_scopes` or `header_scopes` made of the scopes the
    gateway asks for (the refusal of a malformed one, told after a missing credential).
    `keyturn.server.gateway.dpop.check_request` calls it for requests without DPoP.
    """
    token = bearer_token_of(authorization)
    if token is None:
        return Answer.of(bearer_error(None))
    if isinstance(required, Answer):
        return required
    try:
        verified = verify(token, required_scopes=required) if required else verify(token)
    except KeyturnError as exc:
        return Answer.of(bearer_error(exc))
    return verified_answer(verified)


def required_scopes(query: bytes) -> frozenset[str] | Answer:
    """The scopes ``?scope=`` requires, or the answer refusing a malformed one."""
    if not query:  # gateways mostly send none
        return frozenset()
    return header_scopes(QueryParams(query).get("scope", ""))


def header_scopes(value: str | None) -> frozenset[str] | Answer:
    """The scopes a space-separated list requires (``X-Keyturn-Scope``), or the refusal."""
    if not value:
        return frozenset()
    try:
        return parse_scope(value)
    except ValueError:
        # A gateway misconfiguration, not the client's fault: deny.
        return Answer.of(bearer_error(InvalidRequestError("the required scope is malformed")))


def verified_answer(verified: VerifiedToken) -> Answer:
    """``/v1/validate``'s 200: no body, the identity headers."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in identity_headers(verified).items()
    ]
    return Answer(200, ((b"content-length", b"0"), *headers), b"", verified.jti)


def identity_headers(verified: VerifiedToken) -> dict[str, str]:
    """The headers a 200 from ``/v1/validate`` carries for the gateway to forward."""
    headers = {
        IDENTITY_HEADERS["subject"]: verified.subject,
        IDENTITY_HEADERS["client_id"]: verified.client_id,
        IDENTITY_HEADERS["scope"]: format_scope(verified.scopes),
        IDENTITY_HEADERS["jti"]: verified.jti,
        IDENTITY_HEADERS["expires"]: str(verified.expires_at),
        "Cache-Control": "no-store",
    }
    if verified.identifier is not None:
        headers[IDENTITY_HEADERS["identifier"]] = verified.identifier
    return headers


def validate_body(verify: Verify, body: bytes, refuse: Refuse) -> Answer:
    """``POST /validate {"jwt"}``: 200 ``{"result": true}``, or ``refuse``'s answer.

    The body (read under the media-type and size rules) is checked by the rules of
    `keyturn.server.requests.read_json` and the `ValidateRequest` model; a plain
    ``{"jwt": "<ASCII token>"}`` skips the model, which could not refuse it.
    """
    try:
        token = _jwt_field(body)
        if token is None:
            token = parse_body(ValidateRequest, body).jwt.get_secret_value()
        verified = verify(token)
    except KeyturnError as exc:
        return Answer.of(refuse(exc))
    return Answer(200, _VALID_BODY, b'{"result":true}', verified.jti)


def _jwt_field(body: bytes) -> str | None:
    """The token of a body that is exactly ``{"jwt": "<str>"}`` of ASCII, or None."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if type(data) is not dict or len(data) != 1:
        return None
    token = data.get("jwt")
    if type(token) is not str or len(token) > MAX_TOKEN or not token.isascii():
        return None
    return token if "\x00" not in token else None


@dataclass(frozen=True, slots=True)
class JwksStyle:
    """How a route serves the JWK Set: its media type and ``Cache-Control``."""

    media_type: bytes
    cache_control: bytes


#: JWThenticator's ``GET /jwks`` (no ``x5c``: its key was not a certificate).
LEGACY_JWKS: Final = JwksStyle(b"application/json", b"max-age=300")
#: ``GET /.well-known/jwks.json`` (RFC 7517 §8.5's media type).
V1_JWKS: Final = JwksStyle(b"application/jwk-set+json", b"public, max-age=300")


def jwks(key_set: KeySet, style: JwksStyle) -> Answer:
    """The published JWK Set of ``key_set`` (encoded as Starlette's `JSONResponse` does)."""
    body = json.dumps(
        dict(key_set.jwks()), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")
    headers = (
        (b"cache-control", style.cache_control),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"content-type", style.media_type),
    )
    return Answer(200, headers, body)
