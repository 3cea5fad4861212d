"""`Client` and `AsyncClient`: httpx clients that carry Keyturn tokens by themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self

import httpx

from keyturn.client._auth import KeyturnAuth, RefreshTokenCallback
from keyturn.client._proofs import PrivateKeySource
from keyturn.client._tokens import RetryPolicy
from keyturn.core.signing import SigningKey

__all__ = ["AsyncClient", "Client"]


class Client:
    """A synchronous HTTP client whose requests carry a Keyturn access token.

    A thin shell over `httpx.Client` with a `KeyturnAuth`: the token is fetched on the
    first request, renewed before it expires and after a 401, and shared by every
    thread using the client (one renewal at a time). ``base_url`` and ``timeout`` are
    those of the protected service; the other arguments are `KeyturnAuth`'s.

    Example::

        with Client("https://auth.example", api_key=KEY, base_url="https://api.example") as c:
            c.get("/reports").raise_for_status()

    A device that holds a private key instead of an API key, with DPoP-bound tokens::

        Client("https://auth.example", client_id=KEY_ID, private_key="device.pem", dpop=True)
    """

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
        base_url: str = "",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        refresh_ratio: float = 0.8,
        leeway: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.auth = KeyturnAuth(
            server_url,
            api_key=api_key,
            refresh_token=refresh_token,
            client_id=client_id,
            private_key=private_key,
            audience=audience,
            dpop=dpop,
            identifier=identifier,
            scopes=scopes,
            on_refresh_token=on_refresh_token,
            retry=retry,
            refresh_ratio=refresh_ratio,
            leeway=leeway,
            timeout=timeout,
            clock=clock,
            sleep=sleep,
            transport=transport,
        )
        self._http = httpx.Client(
            auth=self.auth, base_url=base_url, timeout=timeout, transport=transport
        )

    @property
    def refresh_token(self) -> str | None:
        """The current refresh token (it rotates: persist it through ``on_refresh_token``)."""
        return self.auth.refresh_token

    def access_token(self, *, force: bool = False) -> str:
        """A valid access token, for sending by other means (``force``: renew it first)."""
        return self.auth.sync_access_token(force=force)

    def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """Send a request with the token; takes `httpx.Client.request`'s arguments."""
        return self._http.request(method, url, **kwargs)

    def get(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``GET`` with the token."""
        return self.request("GET", url, **kwargs)

    def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``POST`` with the token."""
        return self.request("POST", url, **kwargs)

    def put(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``PUT`` with the token."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``PATCH`` with the token."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``DELETE`` with the token."""
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        """Close the connections to the service."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The `Client` for asyncio: a shell over `httpx.AsyncClient` with a `KeyturnAuth`.

    Concurrent requests share one token and trigger at most one renewal at a time.
    ``on_refresh_token`` may be a coroutine function.

    Example::

        async with AsyncClient("https://auth.example", api_key=KEY) as c:
            response = await c.get("https://api.example/reports")
    """

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
        base_url: str = "",
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        refresh_ratio: float = 0.8,
        leeway: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.auth = KeyturnAuth(
            server_url,
            api_key=api_key,
            refresh_token=refresh_token,
            client_id=client_id,
            private_key=private_key,
            audience=audience,
            dpop=dpop,
            identifier=identifier,
            scopes=scopes,
            on_refresh_token=on_refresh_token,
            retry=retry,
            refresh_ratio=refresh_ratio,
            leeway=leeway,
            timeout=timeout,
            clock=clock,
            async_sleep=sleep,
            async_transport=transport,
        )
        self._http = httpx.AsyncClient(
            auth=self.auth, base_url=base_url, timeout=timeout, transport=transport
        )

    @property
    def refresh_token(self) -> str | None:
        """The current refresh token (it rotates: persist it through ``on_refresh_token``)."""
        return self.auth.refresh_token

    async def access_token(self, *, force: bool = False) -> str:
        """A valid access token, for sending by other means (``force``: renew it first)."""
        return await self.auth.async_access_token(force=force)

    async def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """Send a request with the token; takes `httpx.AsyncClient.request`'s arguments."""
        return await self._http.request(method, url, **kwargs)

    async def get(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``GET`` with the token."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``POST`` with the token."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``PUT`` with the token."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``PATCH`` with the token."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """``DELETE`` with the token."""
        return await self.request("DELETE", url, **kwargs)

    async def aclose(self) -> None:
        """Close the connections to the service."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
