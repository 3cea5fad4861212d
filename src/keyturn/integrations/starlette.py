"""Protect Starlette and FastAPI routes with Keyturn access tokens.

Starlette: add ``authentication_middleware(verifier)`` (Starlette's
``AuthenticationMiddleware`` with `KeyturnBackend` and RFC 6750 errors); then
``request.user`` is a `KeyturnUser`, ``request.auth.scopes`` holds the token's scopes plus
``"authenticated"``, and Starlette's own ``@requires("scope")`` works. ``Authorization:
DPoP <token>`` with a ``DPoP`` proof (RFC 9449) is accepted beside ``Bearer``; a DPoP-bound
token sent as Bearer is refused.

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
from keyturn.integrations._dpop import (
    check_base_url,
    request_url,
    verify_as,
)
from keyturn.rfc6750 import BearerFailure
from keyturn.rfc9449 import DPOP_HEADER, Scheme, access_credential, claimed_scheme, failure_for
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
    """Carries the Keyturn error (and the request's scheme) through ``AuthenticationMiddleware``."""

    def __init__(self, error: KeyturnError, scheme: Scheme | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.scheme = scheme


class KeyturnBackend(AuthenticationBackend):
    """A Starlette ``AuthenticationBackend`` that verifies ``Authorization: Bearer`` or ``DPoP``.

    No credential: anonymous (``UnauthenticatedUser``). A bad one: a
    `KeyturnAuthenticationError`, which `on_auth_error` renders as RFC 6750 (or, for a
    DPoP request or a bound token sent as Bearer, with a DPoP challenge, RFC 9449 §7.1).

    Args:
        verifier: a `keyturn.verify.Verifier`.
        base_url: the external origin clients call (``https://api.example.com``, with
            any path prefix a proxy strips), for DPoP proofs' ``htu``; by default the
            request's own URL (behind a proxy, run uvicorn with ``--proxy-headers``).

    Raises:
        ValueError: ``base_url`` is not an absolute http(s) URL.
    """

    def __init__(self, verifier: Verifier, *, base_url: str | None = None) -> None:
        self.verifier = verifier
        self.base_url = check_base_url(base_url)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """Verify the connection's access token, if it has one."""
        authorization = conn.headers.get("authorization")
        try:
            credential = access_credential(authorization)
            if credential is None:
                return None
            verified = await verify_connection(self.verifier, conn, credential, self.base_url)
        except KeyturnError as exc:
            raise KeyturnAuthenticationError(exc, claimed_scheme(authorization)) from exc
        scopes = ["authenticated", *sorted(verified.scopes)]
        return AuthCredentials(scopes), KeyturnUser(verified)


async def verify_connection(
    verifier: Verifier,
    conn: HTTPConnection,
    credential: tuple[Scheme, str],
    base_url: str | None,
) -> VerifiedToken:
    """Verify a connection's credential, with its ``DPoP`` proof when the scheme is DPoP."""
    raw_path = conn.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else conn.url.path
    scheme, token = credential
    return await verify_as(
        verifier,
        scheme,
        token,
        proofs=conn.headers.getlist(DPOP_HEADER),
        method=conn.scope.get("method", "GET"),
        url=request_url(
            scheme=conn.url.scheme, netloc=conn.url.netloc, raw_path=path, base_url=base_url
        ),
    )


def _render(failure: BearerFailure) -> Response:
    """A `BearerFailure` as a Starlette JSON response."""
    return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)


def on_auth_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """``AuthenticationMiddleware(on_error=...)``: 401/400 with a challenge, 503 on outage."""
    if isinstance(exc, KeyturnAuthenticationError):
        return _render(failure_for(exc.error, scheme=exc.scheme))
    return _render(failure_for(InvalidTokenError(str(exc))))


def authentication_middleware(verifier: Verifier, *, base_url: str | None = None) -> Middleware:
    """``Middleware(AuthenticationMiddleware, backend=KeyturnBackend(verifier), on_error=...)``."""
    return Middleware(
        AuthenticationMiddleware,
        backend=KeyturnBackend(verifier, base_url=base_url),
        on_error=on_auth_error,
    )


def require_scopes(
    *scopes: str, verifier: Verifier | None = None, base_url: str | None = None
) -> Callable[..., Awaitable[VerifiedToken]]:
    """A FastAPI dependency: the request's `VerifiedToken`, holding every one of ``scopes``.

    ``verifier`` verifies the request's token itself (Bearer, or DPoP with its proof;
    ``base_url`` as in `KeyturnBackend`); without it the dependency uses what
    `KeyturnBackend` (``authentication_middleware``) already verified. Answers 401 with
    ``WWW-Authenticate`` (no or bad token), 403 ``insufficient_scope``, 503 on outage.
    Needs the extra ``keyturn[fastapi]``.

    Raises:
        ValueError: a scope breaks the RFC 6749 §3.3 grammar.
    """
    from keyturn.integrations._fastapi import scopes_dependency  # noqa: PLC0415 -- optional

    if verifier is None:
        return scopes_dependency(scopes, None, _middleware_token)
    own, base = verifier, check_base_url(base_url)

    async def verify(conn: HTTPConnection, credential: tuple[Scheme, str]) -> VerifiedToken:
        return await verify_connection(own, conn, credential, base)

    return scopes_dependency(scopes, verify, _middleware_token)


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
