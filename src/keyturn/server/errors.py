"""Every error response the server writes, rendered in one place.

Three wire forms, by route family:

* RFC 6750 bearer errors (``/v1/validate``, ``/validate_request``): 401/403 with a
  ``WWW-Authenticate: Bearer`` challenge;
* RFC 6749 §5.2 token-endpoint errors (``/v1/token``): ``{"error", "error_description"}``;
* RFC 9457 ``application/problem+json`` for everything else.

The legacy JWThenticator routes keep its bodies (``{}`` or field messages) and are
rendered by their handlers. No message here contains a token, key or password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from keyturn.errors import (
    InsufficientScopeError,
    KeyturnError,
    StorageUnavailableError,
)

__all__ = [
    "PROBLEM_JSON",
    "RateLimitedError",
    "RequestRejectedError",
    "bearer_challenge",
    "bearer_error",
    "oauth_error",
    "problem",
    "problem_for",
    "retry_headers",
    "stopping",
    "unexpected_error",
]

logger = logging.getLogger("keyturn.server")

PROBLEM_JSON: Final = "application/problem+json"
REALM: Final = "keyturn"
_UNSAFE_IN_QUOTES = re.compile(r'["\\\x00-\x1f\x7f]')
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class RequestRejectedError(KeyturnError):
    """The HTTP request itself is unacceptable (size, media type, JSON, fields)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        error_code: str = "invalid_request",
        fields: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.fields = dict(fields or {})


class RateLimitedError(KeyturnError):
    """Too many requests from one client address or for one key; retry later."""

    error_code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


def retry_headers(exc: Exception) -> dict[str, str]:
    """``Retry-After`` for errors that pass (503 storage outage, 429 rate limit)."""
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, StorageUnavailableError | RateLimitedError) and retry_after:
        return {"Retry-After": str(int(retry_after))}
    return {}


def _quoted(value: str) -> str:
    return _UNSAFE_IN_QUOTES.sub("", value)


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


def problem_for(exc: KeyturnError) -> JSONResponse:
    """Render any Keyturn error as a problem document with its status and code."""
    status = exc.status_code
    extra: dict[str, Any] = {}
    if isinstance(exc, RequestRejectedError) and exc.fields:
        extra["errors"] = exc.fields
    return problem(
        status,
        _TITLES.get(status, "Error"),
        exc.message,
        code=exc.error_code,
        headers=retry_headers(exc),
        extra=extra,
    )


def bearer_challenge(
    error: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] = (),
) -> str:
    """A ``WWW-Authenticate: Bearer`` value (RFC 6750 §3); parameters are sanitised."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_quoted(description)}"')
    scope = " ".join(sorted(scopes))
    if scope:
        parts.append(f'scope="{_quoted(scope)}"')
    return "Bearer " + ", ".join(parts)


def bearer_error(exc: KeyturnError | None) -> Response:
    """RFC 6750 §3.1 response: 401 for a missing or bad token, 403 for a missing scope.

    ``exc`` None means no credentials at all: 401 with a bare challenge (§3.1: no error
    code when the request had no authentication information).
    """
    if exc is None:
        return Response(status_code=401, headers={"WWW-Authenticate": bearer_challenge()})
    if isinstance(exc, InsufficientScopeError):
        challenge = bearer_challenge("insufficient_scope", exc.message, exc.required)
        return Response(status_code=403, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, StorageUnavailableError | RateLimitedError):
        # A gateway must not read an outage as "bad token": 503, never 401 (docs/threats.md).
        return Response(status_code=503, headers=retry_headers(exc) or {"Retry-After": "1"})
    challenge = bearer_challenge(exc.error_code, exc.message)
    return Response(status_code=401, headers={"WWW-Authenticate": challenge})


def oauth_error(exc: KeyturnError) -> JSONResponse:
    """RFC 6749 §5.2 token-endpoint error (``invalid_client`` is 401 with a challenge)."""
    headers = {**NO_STORE, **retry_headers(exc)}
    status = exc.status_code
    if exc.error_code == "invalid_client":
        status = 401
        headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    elif status in (401, 403, 404, 409):
        status = 400
    body = {"error": exc.error_code, "error_description": exc.message}
    return JSONResponse(body, status_code=status, headers=headers)


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
