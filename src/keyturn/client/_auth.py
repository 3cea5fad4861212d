"""`KeyturnAuth`: an `httpx.Auth` that sends a Keyturn access token with every request."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from typing import Any, TypeAlias

import httpx

from keyturn.client._errors import KeyturnUnavailableError
from keyturn.client._proofs import DPoP, PrivateKeySource, load_private_key
from keyturn.client._tokens import (
    AccessToken,
    Persist,
    Result,
    RetryPolicy,
    Step,
    TokenState,
    Wait,
    token_flow,
)
from keyturn.core.signing import SigningKey

__all__ = ["KeyturnAuth", "RefreshTokenCallback"]

#: Called with each new refresh token, and with None when Keyturn refused it. May be a
#: coroutine function when the auth is used asynchronously only.
RefreshTokenCallback: TypeAlias = Callable[[str | None], Any]
_Flow: TypeAlias = Generator[Step, Result, AccessToken]


class KeyturnAuth(httpx.Auth):
    """Authenticate httpx requests with tokens from Keyturn's ``POST /v1/token``.

    The first request trades the API key (or the refresh token) for an access token.
    The token is renewed with the rotating refresh token once ``refresh_ratio`` of its
    lifetime has passed, and once more when the service answers 401. However many
    requests run at once, only one of them talks to Keyturn (one lock for threads, one
    for each event loop; do not use one instance from sync and async code at once).
    Connection errors, 5xx and 429 are retried with backoff (honouring ``Retry-After``);
    only Keyturn's ``invalid_grant``/``invalid_client`` make the client discard a
    credential.

    With ``private_key`` the client authenticates with a fresh signed client assertion
    per token request (``private_key_jwt``, RFC 7523) instead of an API key. With
    ``dpop`` every token request carries a DPoP proof (RFC 9449), and a DPoP-bound token
    is sent as ``Authorization: DPoP`` with a fresh proof on every request; a server's
    ``use_dpop_nonce`` is answered by one retry with the nonce it sent (§8, §9).

    Token requests go to ``server_url`` through a short-lived httpx client of their own
    (over ``transport``/``async_transport`` when given), never through the client the
    auth is attached to, so that client's base URL, headers and cookies do not leak to
    Keyturn.

    Args:
        server_url: Keyturn's public base URL, e.g. ``https://auth.example``.
        api_key: the API key; used when there is no (valid) refresh token.
        refresh_token: a refresh token saved from an earlier run.
        client_id: the Keyturn key's id; required with ``private_key``.
        private_key: the key's private key (a `keyturn.core.signing.SigningKey`, a PEM
            file's path or PEM bytes), whose public key is registered to the key.
        audience: the ``aud`` of client assertions (default: the token endpoint URL;
            Keyturn also accepts its issuer identifier, ``KEYTURN_ISSUER``).
        dpop: a `SigningKey` to bind tokens to with DPoP, or True for a fresh ES256 key
            held in memory (a refresh token bound to it dies with the process).
        identifier: the identifier the key was registered with; Keyturn checks it.
        scopes: scopes to ask for (default: all the key's scopes).
        on_refresh_token: called with every new refresh token (persist it), and with
            None when Keyturn refused the stored one.
        retry: how transient failures are retried.
        refresh_ratio: renew after this share of the token's lifetime (0.8).
        leeway: seconds before expiry at which a token is no longer sent (10).
        timeout: timeout of each token request, in seconds.
        clock: returns the time as UNIX seconds (``FakeClock.timestamp`` in tests).
        sleep, async_sleep: how backoff waits; inject no-op functions in tests.
        transport, async_transport: httpx transports for the token requests.
    """

    requires_request_body = True  # the request may be sent twice (after a 401)

    def __init__(
        self,
        server_url: str,
        *,
        api_key: str | None = None,
        refresh_token: str | None = None,
        client_id: str | None = None,
        private_key: PrivateKeySource | None = None,
        audience: str | None = None,
        dpop: SigningKey | bool = False,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        on_refresh_token: RefreshTokenCallback | None = None,
        retry: RetryPolicy | None = None,
        refresh_ratio: float = 0.8,
        leeway: float = 10.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if isinstance(dpop, SigningKey):
            self._dpop: DPoP | None = DPoP(dpop)
        else:
            self._dpop = DPoP(SigningKey.generate()) if dpop else None
        self._state = TokenState(
            server_url,
            api_key=api_key,
            refresh_token=refresh_token,
            private_key=load_private_key(private_key) if private_key is not None else None,
            client_id=client_id,
            audience=audience,
            dpop=self._dpop,
            identifier=identifier,
            scopes=scopes,
            refresh_ratio=refresh_ratio,
            leeway=leeway,
        )
        self._on_refresh_token = on_refresh_token
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._transport = transport
        self._async_transport = async_transport
        self._thread_lock = threading.Lock()
        self._async_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._async_locks_guard = threading.Lock()  # never held across I/O

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state.token_url!r})"

    @property
    def refresh_token(self) -> str | None:
        """The refresh token the next renewal will use (persist it to resume later)."""
        return self._state.refresh_token

    @property
    def dpop_key(self) -> SigningKey | None:
        """The key DPoP proofs are signed with (None without DPoP)."""
        return self._dpop.key if self._dpop is not None else None

    # -- httpx.Auth ---------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Send ``request`` with a token; after a 401, once more with a fresh one.

        With DPoP, a 401 asking for a nonce is first retried with the same token.
        """
        request.read()
        token = self._sync_token()
        response = yield self._authorize(request, token)
        if self._wants_nonce(request, response, token):
            response = yield self._authorize(request, token)
            if self._wants_nonce(request, response, token):
                return  # a second challenge is the service's answer
        if response.status_code == 401:
            token = self._sync_token(stale=token.generation)
            response = yield self._authorize(request, token)
            self._wants_nonce(request, response, token)  # remember its nonce

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send ``request`` with a token; after a 401, once more with a fresh one.

        With DPoP, a 401 asking for a nonce is first retried with the same token.
        """
        await request.aread()
        token = await self._async_token()
        response = yield self._authorize(request, token)
        if self._wants_nonce(request, response, token):
            response = yield self._authorize(request, token)
            if self._wants_nonce(request, response, token):
                return  # a second challenge is the service's answer
        if response.status_code == 401:
            token = await self._async_token(stale=token.generation)
            response = yield self._authorize(request, token)
            self._wants_nonce(request, response, token)

    def _authorize(self, request: httpx.Request, token: AccessToken) -> httpx.Request:
        """Put ``token`` on ``request``, with a fresh DPoP proof when the token is bound."""
        request.headers["Authorization"] = f"{token.token_type} {token.value}"
        if token.bound and self._dpop is not None:
            request.headers["DPoP"] = self._dpop.proof(
                request.method, request.url, now=self._clock(), access_token=token.value
            )
        return request

    def _wants_nonce(
        self, request: httpx.Request, response: httpx.Response, token: AccessToken
    ) -> bool:
        """Remember the nonce a response carries; True when the service refused the
        request for want of one (RFC 9449 §9) and a retry with it may pass."""
        if self._dpop is None:
            return False
        wants = self._dpop.resource_wants_nonce(request.url, response)
        return wants and token.bound

    # -- tokens -------------------------------------------------------------------------

    def sync_access_token(self, *, force: bool = False) -> str:
        """A valid access token, fetched or renewed first when needed (``force``: always)."""
        return self._sync_token(stale=self._generation() if force else None).value

    async def async_access_token(self, *, force: bool = False) -> str:
        """A valid access token, fetched or renewed first when needed (``force``: always)."""
        return (await self._async_token(stale=self._generation() if force else None)).value

    def _plan(self, stale: int | None) -> tuple[AccessToken | None, bool]:
        """(the token to fall back on, whether to fetch a new one); call under the lock.

        ``stale`` is the generation of a token that must not be sent again (a service
        refused it, or the caller forces a renewal). If another caller has replaced it
        meanwhile, the newer token is used as it is: one refresh however many waited.
        """
        now = self._clock()
        current = self._state.usable(now)
        if current is not None and current.generation == stale:
            return None, True
        return current, current is None or self._state.due(now)

    def _generation(self) -> int:
        return self._state.token.generation if self._state.token is not None else -1

    def _sync_token(self, stale: int | None = None) -> AccessToken:
        with self._thread_lock:
            current, fetch = self._plan(stale)
            if not fetch:
                assert current is not None  # noqa: S101 -- _plan's contract
                return current
            # Renewing a token that is still valid: one try, then keep using it.
            flow = token_flow(self._state, self._retry, self._clock, retry=current is None)
            try:
                return self._drive_sync(flow)
            except KeyturnUnavailableError:
                if current is None:
                    raise
                return current

    async def _async_token(self, stale: int | None = None) -> AccessToken:
        async with self._async_lock():
            current, fetch = self._plan(stale)
            if not fetch:
                assert current is not None  # noqa: S101 -- _plan's contract
                return current
            flow = token_flow(self._state, self._retry, self._clock, retry=current is None)
            try:
                return await self._drive_async(flow)
            except KeyturnUnavailableError:
                if current is None:
                    raise
                return current

    def _async_lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to one event loop; keep one per loop that uses us.
        loop = asyncio.get_running_loop()
        with self._async_locks_guard:
            for other in [other for other in self._async_locks if other.is_closed()]:
                del self._async_locks[other]
            return self._async_locks.setdefault(loop, asyncio.Lock())

    # -- drivers: the only I/O ----------------------------------------------------------

    def _drive_sync(self, flow: _Flow) -> AccessToken:
        http = httpx.Client(transport=self._transport, timeout=self._timeout)
        try:
            return _run_sync(flow, http, self._sleep, self._persist_sync)
        finally:
            if self._transport is None:
                http.close()

    async def _drive_async(self, flow: _Flow) -> AccessToken:
        http = httpx.AsyncClient(transport=self._async_transport, timeout=self._timeout)
        try:
            return await _run_async(flow, http, self._async_sleep, self._callback)
        finally:
            if self._async_transport is None:
                await http.aclose()

    def _persist_sync(self, step: Persist) -> None:
        outcome = self._callback(step)
        if inspect.isawaitable(outcome):
            if inspect.iscoroutine(outcome):
                outcome.close()
            raise TypeError("on_refresh_token returned an awaitable; use the async client")

    def _callback(self, step: Persist) -> Any:
        if self._on_refresh_token is None:
            return None
        return self._on_refresh_token(step.refresh_token)


def _run_sync(
    flow: _Flow,
    http: httpx.Client,
    sleep: Callable[[float], None],
    persist: Callable[[Persist], None],
) -> AccessToken:
    """Send, sleep and report for ``flow`` until it returns its token."""
    try:
        step = next(flow)
        while True:
            result: Result = None
            if isinstance(step, httpx.Request):
                try:
                    result = http.send(step)
                except httpx.TransportError as exc:
                    result = exc
            elif isinstance(step, Wait):
                sleep(step.seconds)
            else:
                persist(step)
            step = flow.send(result)
    except StopIteration as stop:
        token: AccessToken = stop.value
        return token


async def _run_async(
    flow: _Flow,
    http: httpx.AsyncClient,
    sleep: Callable[[float], Awaitable[None]],
    persist: Callable[[Persist], Any],
) -> AccessToken:
    """`_run_sync` for asyncio: ``persist`` may return an awaitable, which is awaited."""
    try:
        step = next(flow)
        while True:
            result: Result = None
            if isinstance(step, httpx.Request):
                try:
                    result = await http.send(step)
                except httpx.TransportError as exc:
                    result = exc
            elif isinstance(step, Wait):
                await sleep(step.seconds)
            else:
                outcome = persist(step)
                if inspect.isawaitable(outcome):
                    await outcome
            step = flow.send(result)
    except StopIteration as stop:
        token: AccessToken = stop.value
        return token
