"""Every error response the server writes, rendered in one place: `render` and `renders`.

Five wire forms (`ErrorStyle`), by route family:

* ``PROBLEM``: RFC 9457 ``application/problem+json`` (the admin API, health, 404/405);
* ``OAUTH``: RFC 6749 §5.2 token-endpoint errors (``/v1/token``, ``/v1/revoke``,
  ``/v1/login``, ``/v1/logout``, ``/v1/introspect``): ``{"error", "error_description"}``,
  a 413/415 still a problem document;
* ``BEARER``: RFC 6750 §3.1 (``/v1/validate``, ``/validate_request``): 401/403 with a
  ``WWW-Authenticate: Bearer`` challenge (`keyturn.rfc6750`) and no body;
* ``LEGACY``: JWThenticator's bodies (``{}``, field messages) on its routes;
* ``LOGIN``: problems, a bad email or password also in the tutorial's words (``/login``).

A handler raises a `keyturn.errors.KeyturnError` and its ``@renders(style)`` decorator
answers it. No message here contains a token, key or password.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from keyturn.errors import (
    ConflictError,
    InsufficientScopeError,
    InvalidGrantError,
    InvalidTokenError,
    KeyturnError,
    MalformedSecretError,
    PolicyViolation,
    RateLimitedError,
    RequestRejectedError,
    StorageUnavailableError,
)
from keyturn.rfc6750 import REALM, bearer_challenge
from keyturn.rfc9449 import dpop_challenge

__all__ = [
    "ADMIN_CHALLENGE",
    "NO_STORE",
    "PROBLEM_JSON",
    "WRONG_CREDENTIALS",
    "ErrorStyle",
    "RateLimitedError",
    "RequestRejectedError",
    "bearer_challenge",
    "bearer_error",
    "dpop_error",
    "legacy_error",
    "oauth_error",
    "problem",
    "problem_for",
    "render",
    "renders",
    "retry_headers",
    "stopping",
    "unexpected_error",
]

logger = logging.getLogger("keyturn.server")

PROBLEM_JSON: Final = "application/problem+json"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: The challenge of the admin API (its own realm: the admin token, not an access token).
ADMIN_CHALLENGE: Final = 'Bearer realm="keyturn-admin"'
Handler = Callable[[Request], Awaitable[Response]]
#: RFC 9449's error codes: answered with the ``DPoP`` challenge on the token-check routes.
DPOP_ERRORS: Final = frozenset({"invalid_dpop_proof", "use_dpop_nonce"})


class ErrorStyle(enum.Enum):
    """The wire form a route family answers errors in (see the module docstring)."""

    PROBLEM = "problem"
    OAUTH = "oauth"
    BEARER = "bearer"
    LEGACY = "legacy"
    LOGIN = "login"


def retry_headers(exc: Exception) -> dict[str, str]:
    """``Retry-After`` for errors that pass (503 storage outage, 429 rate limit)."""
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, StorageUnavailableError | RateLimitedError) and retry_after:
        return {"Retry-After": str(int(retry_after))}
    return {}


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document; ``code`` also appears as ``error`` for scripts."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "error": code,
        **(extra or {}),
    }
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


_TITLES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem_for(exc: KeyturnError, *, challenge: str | None = None) -> JSONResponse:
    """Render any Keyturn error as a problem document with its status and code."""
    status = exc.status_code
    extra: dict[str, Any] = {}
    if isinstance(exc, RequestRejectedError) and exc.fields:
        extra["errors"] = exc.fields
    headers = retry_headers(exc)
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return problem(
        status,
        _TITLES.get(status, "Error"),
        exc.message,
        code=exc.error_code,
        headers=headers,
        extra=extra,
    )


def bearer_error(exc: KeyturnError | None) -> Response:
    """RFC 6750 §3.1 response: 401 for a missing or bad token, 403 for a missing scope.

    ``exc`` None means no credentials at all: 401 with a bare challenge (§3.1: no error
    code when the request had no authentication information).
    """
    if exc is None:
        return Response(status_code=401, headers={"WWW-Authenticate": bearer_challenge()})
    if exc.error_code in DPOP_ERRORS:
        return dpop_error(exc)  # a DPoP-bound token sent as Bearer (RFC 9449 §7.1)
    if isinstance(exc, InsufficientScopeError):
        challenge = bearer_challenge("insufficient_scope", exc.message, exc.required)
        return Response(status_code=403, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, StorageUnavailableError | RateLimitedError):
        # A gateway must not read an outage as "bad token": 503, never 401 (docs/threats.md).
        return Response(status_code=503, headers=retry_headers(exc) or {"Retry-After": "1"})
    challenge = bearer_challenge(exc.error_code, exc.message)
    return Response(status_code=401, headers={"WWW-Authenticate": challenge})


def dpop_error(exc: KeyturnError | None) -> Response:
    """RFC 9449 §7.1 response of a DPoP-scheme request: the ``DPoP`` challenge, ``algs``.

    401 for a missing or bad token or proof, 403 for a missing scope, 503 for an outage.
    """
    if exc is None:
        return Response(status_code=401, headers={"WWW-Authenticate": dpop_challenge()})
    if isinstance(exc, InsufficientScopeError):
        challenge = dpop_challenge("insufficient_scope", exc.message, exc.required)
        return Response(status_code=403, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, StorageUnavailableError | RateLimitedError):
        return Response(status_code=503, headers=retry_headers(exc) or {"Retry-After": "1"})
    challenge = dpop_challenge(exc.error_code, exc.message)
    return Response(status_code=401, headers={"WWW-Authenticate": challenge})


def oauth_error(exc: KeyturnError, *, challenge: str | None = None) -> Response:
    """RFC 6749 §5.2 token-endpoint error (``invalid_client`` is 401 with a challenge).

    A 413 or 415 (the body never got read) stays a problem document. The challenge of an
    ``invalid_client`` is HTTP Basic unless ``challenge`` names another.
    """
    if isinstance(exc, RequestRejectedError) and exc.status_code in (413, 415):
        return problem_for(exc)
    headers = {**NO_STORE, **retry_headers(exc)}
    status = exc.status_code
    if exc.error_code == "invalid_client":
        status = 401
        headers["WWW-Authenticate"] = challenge or f'Basic realm="{REALM}"'
    elif status in (401, 403, 404, 409):
        status = 400
    body = {"error": exc.error_code, "error_description": exc.message}
    return JSONResponse(body, status_code=status, headers=headers)


def legacy_error(exc: KeyturnError) -> Response:
    """An error in JWThenticator's shapes: ``{}``, field messages, or a 413/415 problem."""
    if isinstance(exc, RequestRejectedError):
        if exc.status_code in (413, 415):
            return problem_for(exc)
        return JSONResponse(exc.fields, status_code=400)
    if isinstance(
        exc,
        InvalidGrantError
        | InvalidTokenError
        | MalformedSecretError
        | PolicyViolation
        | InsufficientScopeError,
    ):
        return JSONResponse({}, status_code=401)
    if isinstance(exc, ConflictError):
        return JSONResponse({"result": False, "message": exc.message}, status_code=409)
    # 503 storage down, 429 rate limited
    return JSONResponse({}, status_code=exc.status_code, headers=retry_headers(exc))


#: The tutorial's failure message for a bad email or password, kept for its clients.
WRONG_CREDENTIALS: Final = "Wrong credentials"


def _login_error(exc: KeyturnError) -> Response:
    if isinstance(exc, InvalidGrantError):
        return problem(
            400,
            "Bad Request",
            exc.message,
            code=exc.error_code,
            headers=NO_STORE,
            extra={"message": WRONG_CREDENTIALS},
        )
    return problem_for(exc)


def render(
    exc: KeyturnError | None, style: ErrorStyle, *, challenge: str | None = None
) -> Response:
    """The response to ``exc`` in the wire form of ``style``.

    Args:
        exc: the error; None only with ``BEARER``: the request had no credential.
        style: the route family's wire form.
        challenge: the ``WWW-Authenticate`` value of a 401 other than the style's own
            (the admin API's realm; introspection's Bearer challenge).
    """
    if style is ErrorStyle.BEARER:
        return bearer_error(exc)
    if exc is None:
        raise TypeError(f"{style.name} renders an error, not None")
    if style is ErrorStyle.OAUTH:
        return oauth_error(exc, challenge=challenge)
    if style is ErrorStyle.LEGACY:
        return legacy_error(exc)
    if style is ErrorStyle.LOGIN:
        return _login_error(exc)
    return problem_for(exc, challenge=challenge)


def renders(style: ErrorStyle) -> Callable[[Handler], Handler]:
    """Decorate a handler so every `KeyturnError` it raises is answered by `render`."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except KeyturnError as exc:
                return render(exc, style)

        return endpoint

    return decorate


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """The 500 problem for an exception no handler expected (Starlette's ``Exception`` handler).

    Never a traceback to the client; the log names the route and the exception's type,
    never a secret.
    """
    logger.error(
        "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return problem(
        500, "Internal Server Error", "an unexpected error occurred", code="server_error"
    )


#: The status counted for a request whose client hung up before its answer (nginx's).
CLIENT_CLOSED: Final = 499


def stopping() -> JSONResponse:
    """The 503 of a request cancelled because the server stops (``shutdown_timeout``).

    Nothing it did was committed halfway: a write whose body was read is not cancelled
    (`keyturn.server.listeners.ListenerServer`), so retrying is safe.
    """
    return problem(
        503,
        "Service Unavailable",
        "the server is stopping; try again",
        code="server_stopping",
        headers={"Retry-After": "1", "Connection": "close"},
    )


async def client_gone(request: Request, exc: Exception) -> Response:
    """A client that hung up mid-body: counted as `CLIENT_CLOSED`, never as a 500.

    Nothing is sent (the connection is gone); the access log and metrics show 499.
    """
    return Response(status_code=CLIENT_CLOSED)
