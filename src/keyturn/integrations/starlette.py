"""Protect Starlette and FastAPI routes with Keyturn access tokens.

Starlette: add ``authentication_middleware(verifier)`` (Starlette's
``AuthenticationMiddleware`` with `KeyturnBackend` and RFC 6750 errors); then
``request.user`` is a `KeyturnUser`, ``request.auth.scopes`` holds the token's scopes plus
``"authenticated"``, and Starlette's own ``@requires("scope")`` works.

FastAPI (extra ``keyturn[fastapi]``): ``Depends(require_scopes("orders:read", verifier=v))``
returns the typed `VerifiedToken`, answers RFC 6750 401/403, and shows the bearer scheme
in the OpenAPI document. See ``docs/integrations-starlette.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from keyturn.core.tokens import VerifiedToken
from keyturn.errors import InvalidTokenError, KeyturnError
from keyturn.rfc6750 import BearerFailure, bearer_token, failure_for
from keyturn.verify import Verifier

__all__ = [
    "KeyturnAuthenticationError",
    "KeyturnBackend",
    "KeyturnUser",
    "authentication_middleware",
    "on_auth_error",
    "require_scopes",
]


class KeyturnUser(BaseUser):
    """The caller a valid token names; ``request.user`` behind `KeyturnBackend`."""

    def __init__(self, token: VerifiedToken) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"KeyturnUser({self.token.subject!r})"

    @property
    def is_authenticated(self) -> bool:
        """Always True: anonymous requests get Starlette's ``UnauthenticatedUser``."""
        return True

    @property
    def display_name(self) -> str:
        """The token's ``sub``."""
        return self.token.subject

    @property
    def identity(self) -> str:
        """The token's ``sub``."""
        return self.token.subject

    @property
    def scopes(self) -> frozenset[str]:
        """The token's scopes."""
        return self.token.scopes


class KeyturnAuthenticationError(AuthenticationError):
    """Carries the Keyturn error through Starlette's ``AuthenticationMiddleware``."""

    def __init__(self, error: KeyturnError) -> None:
        super().__init__(error.message)
        self.error = error


class KeyturnBackend(AuthenticationBackend):
    """A Starlette ``AuthenticationBackend`` that verifies ``Authorization: Bearer``.

    No bearer credential: anonymous (``UnauthenticatedUser``). A bad one: a
    `KeyturnAuthenticationError`, which `on_auth_error` renders as RFC 6750.
    """

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """Verify the connection's bearer token, if it has one."""
        try:
            token = bearer_token(conn.headers.get("authorization"))
            if token is None:
                return None
            verified = await self.verifier.verify(token)
        except KeyturnError as exc:
            raise KeyturnAuthenticationError(exc) from exc
        scopes = ["authenticated", *sorted(verified.scopes)]
        return AuthCredentials(scopes), KeyturnUser(verified)


def _render(failure: BearerFailure) -> Response:
    """A `BearerFailure` as a Starlette JSON response."""
    return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)


def on_auth_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """``AuthenticationMiddleware(on_error=...)``: 401/400 with a challenge, 503 on outage."""
    error = (
        exc.error if isinstance(exc, KeyturnAuthenticationError) else InvalidTokenError(str(exc))
    )
    return _render(failure_for(error))


def authentication_middleware(verifier: Verifier) -> Middleware:
    """``Middleware(AuthenticationMiddleware, backend=KeyturnBackend(verifier), on_error=...)``."""
    return Middleware(
        AuthenticationMiddleware, backend=KeyturnBackend(verifier), on_error=on_auth_error
    )


def require_scopes(
    *scopes: str, verifier: Verifier | None = None
) -> Callable[..., Awaitable[VerifiedToken]]:
    """A FastAPI dependency: the request's `VerifiedToken`, holding every one of ``scopes``.

    ``verifier`` verifies the bearer token itself; without it the dependency uses what
    `KeyturnBackend` (``authentication_middleware``) already verified. Answers 401 with
    ``WWW-Authenticate`` (no or bad token), 403 ``insufficient_scope``, 503 on outage.
    Needs the extra ``keyturn[fastapi]``.

    Raises:
        ValueError: a scope breaks the RFC 6749 §3.3 grammar.
    """
    from keyturn.integrations._fastapi import scopes_dependency  # noqa: PLC0415 -- optional

    return scopes_dependency(scopes, verifier, _middleware_token)


def _middleware_token(conn: HTTPConnection) -> VerifiedToken | None:
    """The token `KeyturnBackend` verified for this request, or None (anonymous).

    Raises:
        RuntimeError: no authentication middleware ran in front of the route.
    """
    if "user" not in conn.scope:
        raise RuntimeError(
            "require_scopes() needs verifier=..., or keyturn's authentication_middleware "
            "in front of the application"
        )
    user = conn.scope["user"]
    return user.token if isinstance(user, KeyturnUser) else None
