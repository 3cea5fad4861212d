"""Protect aiohttp handlers with Keyturn access tokens (extra ``keyturn[aiohttp]``).

Two ways in:

* ``auth_middleware(verifier)`` verifies the bearer token of every request and stores
  the claims in ``request["claims"]`` and a user from your loader in ``request["user"]``
  (the classic aiohttp JWT tutorial's ``request.user``); ``@login_required`` and
  ``@require_scopes(...)`` then guard single handlers.
* ``@authenticate(...)`` guards one handler on its own: ``authenticate(server_url)`` is
  JWThenticator's ``server_utils.authenticate`` (same signature, same answers), and
  ``authenticate(verifier=...)`` verifies locally.

Both accept ``Authorization: DPoP <token>`` with a ``DPoP`` proof (RFC 9449) beside
``Bearer``. Failures are RFC 6750 responses: 401 with ``WWW-Authenticate``, 403
``insufficient_scope``, 400 ``invalid_request``, and 503 + ``Retry-After`` when the keys
cannot be fetched; a DPoP request, or a bound token sent as Bearer, gets the same with a
``DPoP`` challenge (RFC 9449 §7.1). See ``docs/integrations-aiohttp.md``.
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, cast
from urllib.parse import urljoin, urlsplit

import httpx
from aiohttp import web

from keyturn.core.tokens import VerifiedToken, parse_scope
from keyturn.errors import InvalidTokenError, KeyturnError, VerifierUnavailableError
from keyturn.integrations._dpop import (
    check_base_url,
    request_url,
    verify_as,
)
from keyturn.rfc6750 import BearerFailure
from keyturn.rfc9449 import DPOP_HEADER, access_credential, claimed_scheme, failure_for
from keyturn.verify import Verifier

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

__all__ = [
    "CLAIMS",
    "USER",
    "UserLoader",
    "auth_middleware",
    "authenticate",
    "get_claims",
    "get_user",
    "login_required",
    "require_scopes",
]

#: ``request[CLAIMS]``: the `VerifiedToken`, or None for an anonymous request.
CLAIMS: Final = "claims"
#: ``request[USER]``: what the user loader returned, or None.
USER: Final = "user"
#: ``async def load_user(request, claims) -> User | None``; None refuses the token.
UserLoader: TypeAlias = Callable[[web.Request, VerifiedToken], Awaitable[Any]]
#: Seconds ``authenticate(server_url)`` waits for the server's ``/validate``.
VALIDATE_TIMEOUT: Final = 10.0

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[web.StreamResponse]])
_primed: set[str] = set()


def _store(request: web.Request, claims: VerifiedToken | None, user: Any) -> None:
    # aiohttp >= 3.13 warns once per string key ("use web.RequestKey"); the keys are
    # "claims" and "user" by contract, so the one-time warning is silenced here rather
    # than failing applications that run their tests with -W error.
    for key, value in ((CLAIMS, claims), (USER, user)):
        if key in _primed:
            request[key] = value
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            request[key] = value
        _primed.add(key)


def get_claims(request: web.Request) -> VerifiedToken | None:
    """The request's verified claims (typed), or None when it is anonymous.

    Raises:
        RuntimeError: neither ``auth_middleware`` nor ``@authenticate(verifier=...)``
            has seen this request: a configuration error, not an anonymous caller.
    """
    if CLAIMS not in request:
        raise RuntimeError(
            "no Keyturn authentication ran for this request: add auth_middleware(verifier) "
            "to the application or @authenticate(verifier=...) to the handler"
        )
    claims: VerifiedToken | None = request[CLAIMS]
    return claims


def get_user(request: web.Request) -> Any:
    """The object the user loader returned for this request, or None."""
    return request.get(USER)


def _reply(failure: BearerFailure) -> web.Response:
    return web.json_response(failure.body, status=failure.status, headers=failure.headers)


async def _authenticate_request(
    request: web.Request,
    verifier: Verifier,
    *,
    required: bool,
    user_loader: UserLoader | None,
    base_url: str | None,
) -> web.Response | None:
    """Verify the request's credential and store the claims; a response means refuse."""
    authorization = request.headers.get("Authorization")
    try:
        credential = access_credential(authorization)
        if credential is None:
            if required:
                return _reply(failure_for(None))
            _store(request, None, None)
            return None
        scheme, token = credential
        claims = await verify_as(
            verifier,
            scheme,
            token,
            proofs=request.headers.getall(DPOP_HEADER, []),
            method=request.method,
            url=request_url(
                scheme=request.scheme,
                netloc=request.host,
                raw_path=request.raw_path,
                base_url=base_url,
            ),
        )
        user = None
        if user_loader is not None:
            user = await user_loader(request, claims)
            if user is None:
                raise InvalidTokenError("the token's subject is not a known user")
    except KeyturnError as exc:
        return _reply(failure_for(exc, scheme=claimed_scheme(authorization)))
    _store(request, claims, user)
    return None


def auth_middleware(
    verifier: Verifier,
    required: bool = False,
    *,
    user_loader: UserLoader | None = None,
    base_url: str | None = None,
) -> Middleware:
    """An aiohttp middleware that verifies every request's access token.

    A valid token puts its `VerifiedToken` in ``request["claims"]`` and the loader's
    user in ``request["user"]``. A request without a bearer credential passes through
    anonymous (both None) unless ``required``; a bad token is always refused (401), never
    treated as anonymous.

    Args:
        verifier: a `keyturn.verify.Verifier` (usually a `JWKSVerifier`).
        required: refuse anonymous requests too (401 with a bare challenge).
        user_loader: ``async def load_user(request, claims) -> User | None``; None
            means the subject no longer exists, and the request is refused (401).
        base_url: the external origin clients call (``https://api.example.com``, with
            any path prefix a proxy strips), for DPoP proofs' ``htu``; by default the
            request's own scheme and ``Host``.

    ``Authorization: DPoP <token>`` with a ``DPoP`` proof is accepted as well (RFC 9449);
    a DPoP-bound token sent as Bearer is refused (401 with a DPoP challenge).

    Raises:
        ValueError: ``base_url`` is not an absolute http(s) URL.
    """
    base_url = check_base_url(base_url)

    @web.middleware
    async def keyturn_auth(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        refusal = await _authenticate_request(
            request, verifier, required=required, user_loader=user_loader, base_url=base_url
        )
        if refusal is not None:
            return refusal
        return await handler(request)

    return keyturn_auth


def _request_of(first: Any) -> web.Request:
    # Function handlers get the request; class-based views are called on a web.View.
    return cast("web.Request", first.request if isinstance(first, web.View) else first)


def login_required(handler: Handler) -> Handler:
    """Refuse anonymous requests to this handler: 401 with a bare Bearer challenge.

    Needs ``auth_middleware`` (or an outer ``@authenticate(verifier=...)``).
    """

    @functools.wraps(handler)
    async def guarded(first: Any, *args: Any, **kwargs: Any) -> web.StreamResponse:
        if get_claims(_request_of(first)) is None:
            return _reply(failure_for(None))
        return await handler(first, *args, **kwargs)

    return cast("Handler", guarded)


def require_scopes(*scopes: str) -> Callable[[Handler], Handler]:
    """Refuse requests whose token lacks any of ``scopes``: 403 ``insufficient_scope``.

    Anonymous requests get 401. Needs ``auth_middleware`` (or ``@authenticate(verifier=...)``).

    Raises:
        ValueError: a scope breaks the RFC 6749 §3.3 grammar.
    """
    required = frozenset(scope for value in scopes for scope in parse_scope(value))

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(first: Any, *args: Any, **kwargs: Any) -> web.StreamResponse:
            claims = get_claims(_request_of(first))
            if claims is None:
                return _reply(failure_for(None))
            try:
                claims.require_scopes(required)
            except KeyturnError as exc:  # a bound token came as DPoP: answer in kind
                return _reply(failure_for(exc, scheme="dpop" if claims.jkt else "bearer"))
            return await handler(first, *args, **kwargs)

        return cast("Handler", guarded)

    return decorate


def authenticate(
    server_url: str | None = None,
    *,
    verifier: Verifier | None = None,
    client: httpx.AsyncClient | None = None,
    timeout: float = VALIDATE_TIMEOUT,
    jwthenticator_server: str | None = None,
    base_url: str | None = None,
) -> Callable[[Handler], Handler]:
    """Guard one handler with a bearer token.

    ``authenticate(server_url)`` behaves as JWThenticator's ``server_utils.authenticate``:
    403 ``{}`` without an ``Authorization`` header, 400 ``{}`` unless it is exactly
    ``Bearer <token>``, then ``POST {server_url}/validate {"jwt": ...}`` and 401 ``{}``
    unless that answers 200. It works against Keyturn and JWThenticator servers alike.
    Where JWThenticator crashed (500) or blamed the token for an outage (401), this
    answers 400 for ``Bearer `` with no token and 503 + ``Retry-After`` when the server
    cannot be reached, times out, or fails (5xx, 429).

    ``authenticate(verifier=...)`` verifies locally (or through any `Verifier`), stores
    ``request["claims"]`` as the middleware does, and answers RFC 6750 responses.

    Args:
        server_url: the JWThenticator or Keyturn server (``http://auth:8080``).
        verifier: verify with this instead of asking a server.
        client: an `httpx.AsyncClient` for the server calls (pooled connections; you
            close it). By default each call opens its own, as JWThenticator did.
        timeout: seconds the whole ``/validate`` call may take.
        jwthenticator_server: JWThenticator's keyword name for ``server_url``.
        base_url: with ``verifier``: the external origin for DPoP proofs' ``htu``, as
            in `auth_middleware`.

    Raises:
        TypeError: neither or both of a server URL and ``verifier``.
        ValueError: the server URL has no scheme or host (JWThenticator raised
            ``InvalidServerURLError`` on every request; this raises once, at import).
    """
    if jwthenticator_server is not None:
        if server_url is not None:
            raise TypeError("pass server_url or jwthenticator_server, not both")
        server_url = jwthenticator_server
    if (server_url is None) == (verifier is None):
        raise TypeError("authenticate() takes a server URL or verifier=, exactly one")
    if verifier is not None:
        return _verifying(verifier, check_base_url(base_url))
    assert server_url is not None  # noqa: S101 -- narrowed by the check above
    return _jwthenticator(server_url, client, timeout)


def _verifying(verifier: Verifier, base_url: str | None) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(first: Any, *args: Any, **kwargs: Any) -> web.StreamResponse:
            refusal = await _authenticate_request(
                _request_of(first), verifier, required=True, user_loader=None, base_url=base_url
            )
            if refusal is not None:
                return refusal
            return await handler(first, *args, **kwargs)

        return cast("Handler", guarded)

    return decorate


def _jwthenticator(
    server_url: str, client: httpx.AsyncClient | None, timeout: float
) -> Callable[[Handler], Handler]:
    parts = urlsplit(server_url)
    if not (parts.scheme and parts.netloc):  # JWThenticator's utils.verify_url
        raise ValueError(f"not an absolute server URL: {server_url!r}")
    # JWThenticator's fix_url_path + urljoin: "http://h/prefix" -> "http://h/prefix/validate".
    validate_url = urljoin(server_url if server_url.endswith("/") else server_url + "/", "validate")

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request, *args: Any, **kwargs: Any) -> web.StreamResponse:
            authorization = request.headers.get("Authorization")
            if authorization is None:
                return web.json_response({}, status=403)
            split = authorization.split(" ")
            if len(split) != 2 or split[0] != "Bearer" or not split[1]:
                return web.json_response({}, status=400)
            try:
                valid = await _validate_remotely(validate_url, split[1], client, timeout)
            except VerifierUnavailableError as exc:
                headers = {"Retry-After": str(exc.retry_after)}
                return web.json_response({}, status=503, headers=headers)
            if not valid:
                return web.json_response({}, status=401)
            return await handler(request, *args, **kwargs)

        return cast("Handler", guarded)

    return decorate


async def _validate_remotely(
    url: str, token: str, client: httpx.AsyncClient | None, timeout: float
) -> bool:
    """``POST url {"jwt": token}``: True on 200; raises when the answer says nothing."""
    if client is None:
        async with httpx.AsyncClient() as own:
            return await _validate_with(own, url, token, timeout)
    return await _validate_with(client, url, token, timeout)


async def _validate_with(client: httpx.AsyncClient, url: str, token: str, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            # Only the status matters: the body is never read, so its size cannot hurt.
            async with client.stream(
                "POST", url, json={"jwt": token}, follow_redirects=False
            ) as response:
                status = response.status_code
    except TimeoutError as exc:
        raise VerifierUnavailableError("the authentication server timed out") from exc
    except httpx.HTTPError as exc:
        raise VerifierUnavailableError("the authentication server is unreachable") from exc
    if status == 429 or status >= 500:
        raise VerifierUnavailableError(f"the authentication server answered HTTP {status}")
    return status == 200
