"""A scripted Keyturn and protected service behind one `httpx.MockTransport`.

``https://keyturn.test/v1/token`` behaves like Keyturn's (client_credentials with the key
as the HTTP Basic password, rotating refresh tokens, RFC 6749 §5.2 errors) unless the test
queues failures in ``FakeKeyturn.failures``; ``https://api.test/...`` answers 200 to a
bearer token Keyturn issued and 401 to anything else.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import pytest

from keyturn.client import AsyncClient, Client
from keyturn.testing import FakeClock

KEYTURN = "https://keyturn.test"
SERVICE = "https://api.test/reports"
API_KEY = "kt_k1_secret+key/with%odd=chars"
LIFETIME = 900

Failure = httpx.Response | Exception


def oauth_error(status: int, error: str, description: str = "") -> httpx.Response:
    body = {"error": error, "error_description": description or error}
    return httpx.Response(status, json=body)


@dataclass
class FakeKeyturn:
    """Counts token calls; ``failures`` are answered (or raised) first, in order."""

    api_key: str = API_KEY
    failures: list[Failure] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    service_calls: list[str] = field(default_factory=list)
    valid_refresh_tokens: set[str] = field(default_factory=set)
    valid_access_tokens: set[str] = field(default_factory=set)
    scope: str = "read write"
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def grants(self) -> list[str]:
        return [call["grant_type"] for call in self.calls]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "keyturn.test":
            return self.token(request)
        return self.service(request)

    def token(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/token"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        self.calls.append(params | {"authorization": request.headers.get("authorization", "")})
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        if params["grant_type"] == "client_credentials":
            scheme, _, encoded = request.headers["authorization"].partition(" ")
            assert scheme == "Basic"
            secret = unquote(base64.b64decode(encoded).decode().partition(":")[2])
            if secret != self.api_key:
                return oauth_error(401, "invalid_client", "the API key is not valid")
        else:
            presented = params["refresh_token"]
            if presented not in self.valid_refresh_tokens:
                return oauth_error(400, "invalid_grant", "the refresh token is not valid")
            self.valid_refresh_tokens.discard(presented)  # rotation
        return self.issue()

    def issue(self) -> httpx.Response:
        serial = next(self._serial)
        access, refresh = f"at-{serial}", f"ktr_rt-{serial}"
        self.valid_access_tokens.add(access)
        self.valid_refresh_tokens.add(refresh)
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": LIFETIME,
            "refresh_token": refresh,
            "scope": self.scope,
        }
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})

    def service(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.service_calls.append(token)
        if token not in self.valid_access_tokens:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"token": token, "body": request.content.decode()})


@dataclass
class Sleeps:
    """An injected ``sleep``: records the waits and moves the clock instead of waiting."""

    clock: FakeClock
    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self(seconds)


@pytest.fixture
def keyturn() -> FakeKeyturn:
    return FakeKeyturn()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps(clock: FakeClock) -> Sleeps:
    return Sleeps(clock)


@pytest.fixture
def transport(keyturn: FakeKeyturn) -> httpx.MockTransport:
    return httpx.MockTransport(keyturn.handle)


@pytest.fixture
def persisted() -> list[str | None]:
    """What ``on_refresh_token`` was called with, in order."""
    return []


@pytest.fixture
def auth_options(
    clock: FakeClock, sleeps: Sleeps, persisted: list[str | None]
) -> Callable[..., dict[str, Any]]:
    def options(**overrides: Any) -> dict[str, Any]:
        return {
            "api_key": API_KEY,
            "clock": clock.timestamp,
            "on_refresh_token": persisted.append,
            **overrides,
        }

    return options


@pytest.fixture
def make_sync(
    transport: httpx.MockTransport, sleeps: Sleeps, auth_options: Callable[..., dict[str, Any]]
) -> Callable[..., Client]:
    """``make_sync(**overrides)``: a `Client` on the fake, with the fake clock and sleep."""
    return lambda **kw: Client(KEYTURN, transport=transport, sleep=sleeps, **auth_options(**kw))


@pytest.fixture
def make_async(
    transport: httpx.MockTransport, sleeps: Sleeps, auth_options: Callable[..., dict[str, Any]]
) -> Callable[..., AsyncClient]:
    """``make_async(**overrides)``: an `AsyncClient` on the fake."""
    return lambda **kw: AsyncClient(
        KEYTURN, transport=transport, sleep=sleeps.async_sleep, **auth_options(**kw)
    )
