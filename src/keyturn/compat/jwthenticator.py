"""A drop-in for ``jwthenticator.client`` (JWThenticator 1.6.3), on aiohttp.

Migrate by changing ``from jwthenticator.client import Client, InternalClient`` to
``from keyturn.compat.jwthenticator import Client, InternalClient`` (and
``jwthenticator.exceptions.X`` to ``keyturn.compat.jwthenticator.X``). The constructors,
methods, attributes and exceptions are JWThenticator's, and so is the wire: the legacy
``/authenticate``, ``/refresh``, ``/register_key`` and ``/is_key_registered`` routes, and
aiohttp's `ClientResponse` from ``*_with_auth``. Differences, all deliberate:

* ``exp`` is read from the JWT without PyJWT or ``algorithm`` (any signing algorithm works);
* concurrent ``request_with_auth`` calls share one refresh instead of one each;
* the response body is read before its session closes, so ``await response.text()``
  always works;
* token responses with extra fields are accepted (JWThenticator's schemas raised);
  malformed ones raise `AuthenticationError` / `RefreshError`.

Needs the ``aiohttp`` extra (``pip install 'keyturn[aiohttp]'``). New code should use
`keyturn.client`, which rotates refresh tokens and retries transient failures.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urljoin, urlparse
from uuid import UUID

from aiohttp import ClientResponse, ClientSession

from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import MalformedTokenError

__all__ = [
    "AuthenticationError",
    "Client",
    "InternalClient",
    "InvalidServerURLError",
    "IsKeyRegisteredError",
    "MissingCredentialsError",
    "RefreshError",
    "RegisterKeyError",
]


# JWThenticator's exception classes (``jwthenticator.exceptions``), with their names and
# arguments, so ``except`` clauses and logs keep working after the import change.
class RefreshError(Exception):
    """Raised when refreshing the JWT fails."""


class AuthenticationError(Exception):
    """Raised when authenticating with the key fails."""


class MissingCredentialsError(Exception):
    """Raised when `Client` is given no JWT, refresh token or key."""


class InvalidServerURLError(Exception):
    """Raised when the server URL has no scheme or host."""


class RegisterKeyError(Exception):
    """Raised when registering a key fails (args: the HTTP status or the server's message)."""


class IsKeyRegisteredError(Exception):
    """Raised when checking a key fails (args: the HTTP status)."""


def _server_url(url: str) -> str:
    parsed = urlparse(url)
    if not (parsed.scheme and parsed.netloc):
        raise InvalidServerURLError()
    # urljoin drops the last path segment unless the URL ends in "/".
    return url if url.endswith("/") else url + "/"


def _ssl(verify_ssl: bool | None) -> bool:
    # JWThenticator passed None for "default"; aiohttp spells that True.
    return verify_ssl is not False


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _token_fields(data: Any, *names: str) -> dict[str, Any] | None:
    """The named fields of a JSON object, or None when it is not one or ``jwt`` is bad."""
    if not isinstance(data, dict) or not isinstance(data.get(names[0]), str):
        return None
    return {name: data.get(name) for name in names}


class Client:
    """JWThenticator's client: keeps a JWT and refresh token and sends authenticated requests.

    All methods are coroutines; every call opens its own aiohttp session, as the original
    did.

    Args:
        jwthenticator_server: Keyturn's public URL, e.g. ``http://localhost:8080/``.
        identifier: the UUID the key was registered with.
        jwt: a JWT already held, if any.
        refresh_token: a refresh token already held, if any.
        key: the key to authenticate with.
        verify_ssl: False disables certificate checks; None is aiohttp's default.
        algorithm: accepted for compatibility and ignored (``exp`` is read for any alg).

    Raises:
        InvalidServerURLError: the URL has no scheme or host.
        MissingCredentialsError: none of ``jwt``, ``refresh_token`` and ``key`` was given.
    """

    def __init__(  # noqa: PLR0917 -- JWThenticator's positional signature is the contract
        self,
        jwthenticator_server: str,
        identifier: UUID,
        jwt: str | None = None,
        refresh_token: str | None = None,
        key: str | None = None,
        verify_ssl: bool | None = None,
        algorithm: str = "RS256",
    ) -> None:
        self.jwthenticator_server = _server_url(jwthenticator_server)
        self.identifier = identifier
        self.verify_ssl = verify_ssl
        self.algorithm = algorithm
        self._jwt_exp: float | None = None
        self._jwt: str | None = None
        self.jwt = jwt
        self._refresh_token = refresh_token
        self._key = key
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        if jwt is None and refresh_token is None and key is None:
            raise MissingCredentialsError()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.jwthenticator_server!r}, {self.identifier!r})"

    @property
    def jwt(self) -> str | None:
        """The current JWT (setting it reads its ``exp``, without verifying anything)."""
        return self._jwt

    @jwt.setter
    def jwt(self, value: str | None) -> None:
        self._jwt = value
        self._jwt_exp = None
        if value:
            try:
                exp = peek_unverified_claims(value)[1].get("exp")
            except MalformedTokenError:
                exp = None  # an unreadable JWT counts as expired: the next call refreshes
            if isinstance(exp, int | float) and not isinstance(exp, bool):
                self._jwt_exp = float(exp)

    @property
    def is_jwt_expired(self) -> bool:
        """True when there is no JWT or its ``exp`` has passed."""
        if self._jwt_exp is None:
            return True
        return _utcnow().timestamp() >= self._jwt_exp

    @property
    def refresh_token(self) -> str | None:
        """The refresh token in use."""
        return self._refresh_token

    @property
    def header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <jwt>"}``."""
        return {"Authorization": f"Bearer {self.jwt}"}

    async def refresh(self, auth_on_fail: bool = True) -> None:
        """Get a new JWT with the refresh token (or the key, when there is none).

        Args:
            auth_on_fail: authenticate with the key when refreshing fails.

        Raises:
            RefreshError: refreshing failed and ``auth_on_fail`` is False.
            AuthenticationError: authenticating failed.
        """
        if self._refresh_token is None:
            return await self.authenticate()
        url = urljoin(self.jwthenticator_server, "refresh")
        body = {"refresh_token": self._refresh_token, "identifier": str(self.identifier)}
        status, data = await _post(url, body, self.verify_ssl)
        fields = _token_fields(data, "jwt") if status == HTTPStatus.OK else None
        if fields is None:
            # Only a definitive 401 loses the refresh token; 429 and 503 keep it.
            if status == HTTPStatus.UNAUTHORIZED:
                self._refresh_token = None
            if auth_on_fail:
                return await self.authenticate()
            raise RefreshError()
        self.jwt = fields["jwt"]
        return None

    async def authenticate(self) -> None:
        """Trade the key for a JWT and a refresh token.

        Raises:
            TypeError: the client has no key (JWThenticator's behaviour).
            AuthenticationError: Keyturn refused (a 401 also forgets the key).
        """
        if self._key is None:
            raise TypeError("Missing key")
        url = urljoin(self.jwthenticator_server, "authenticate")
        body = {"key": self._key, "identifier": str(self.identifier)}
        status, data = await _post(url, body, self.verify_ssl)
        fields = _token_fields(data, "jwt", "refresh_token") if status == HTTPStatus.OK else None
        if fields is None:
            if status == HTTPStatus.UNAUTHORIZED:
                self._key = None
            raise AuthenticationError()
        self.jwt = fields["jwt"]
        refresh_token = fields["refresh_token"]
        if isinstance(refresh_token, str) and refresh_token:
            self._refresh_token = refresh_token

    async def _make_request(self, method: str, url: str, **kwargs: Any) -> ClientResponse:
        headers = dict(kwargs.pop("headers", None) or {})
        headers.update(self.header)
        async with ClientSession() as session:
            response = await session.request(
                method, url, headers=headers, ssl=_ssl(self.verify_ssl), **kwargs
            )
            await response.read()  # the body outlives the session
        return response

    async def request_with_auth(self, method: str, url: str, **kwargs: Any) -> ClientResponse:
        """Send a request with ``Authorization: Bearer``; refresh first if the JWT is
        missing or expired, and once more after a 401.

        ``kwargs`` are those of `aiohttp.ClientSession.request`.
        """
        async with self._lock():
            if self.is_jwt_expired or self.jwt is None:
                await self.refresh()
        sent = self.jwt
        response = await self._make_request(method, url, **kwargs)
        if response.status == HTTPStatus.UNAUTHORIZED:
            async with self._lock():
                if self.jwt == sent:  # else another call refreshed meanwhile
                    self.jwt = None
                    await self.refresh()
            response = await self._make_request(method, url, **kwargs)
        return response

    async def get_with_auth(self, url: str, **kwargs: Any) -> ClientResponse:
        """``GET`` with the JWT."""
        return await self.request_with_auth("GET", url, **kwargs)

    async def post_with_auth(self, url: str, **kwargs: Any) -> ClientResponse:
        """``POST`` with the JWT."""
        return await self.request_with_auth("POST", url, **kwargs)

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        return self._locks.setdefault(loop, asyncio.Lock())


class InternalClient:
    """JWThenticator's internal client: register keys on the admin listener.

    Keyturn's admin listener answers loopback callers without credentials, as
    JWThenticator did; elsewhere it needs ``KEYTURN_ADMIN_TOKEN``, which this client, like
    the original, cannot send (use ``keyturn keys`` or the admin v1 API there).
    """

    def __init__(
        self, jwthenticator_server: str, identifier: UUID, verify_ssl: bool | None = None
    ) -> None:
        self.jwthenticator_server = _server_url(jwthenticator_server)
        self.identifier = identifier
        self.verify_ssl = verify_ssl

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.jwthenticator_server!r}, {self.identifier!r})"

    async def register_key(self, key: str) -> None:
        """Register ``key`` for the identifier (again: renew it).

        Raises:
            RegisterKeyError: with the HTTP status when it is not 201, or the server's message.
        """
        url = urljoin(self.jwthenticator_server, "register_key")
        body = {"key": key, "identifier": str(self.identifier)}
        status, data = await _post(url, body, self.verify_ssl)
        if status != HTTPStatus.CREATED:
            raise RegisterKeyError(status)
        if not isinstance(data, dict) or not data.get("result"):
            message = data.get("message") if isinstance(data, dict) else None
            raise RegisterKeyError(message)

    async def is_key_registered(self, key: str) -> bool:
        """Whether ``key`` is registered (and not expired or revoked).

        Raises:
            IsKeyRegisteredError: with the HTTP status when it is not 200.
        """
        url = urljoin(self.jwthenticator_server, "is_key_registered")
        status, data = await _post(url, {"key": key}, self.verify_ssl)
        if status != HTTPStatus.OK:
            raise IsKeyRegisteredError(status)
        if not isinstance(data, dict) or not isinstance(data.get("result"), bool):
            raise IsKeyRegisteredError(HTTPStatus.OK)
        return bool(data["result"])


async def _post(url: str, body: dict[str, str], verify_ssl: bool | None) -> tuple[int, Any]:
    """POST JSON in a session of its own; the status and the JSON body (None if not JSON)."""
    async with (
        ClientSession() as session,
        session.post(url, json=body, ssl=_ssl(verify_ssl)) as response,
    ):
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        return response.status, data
