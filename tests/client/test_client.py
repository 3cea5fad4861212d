"""`Client`, `AsyncClient` and `KeyturnAuth` against a scripted Keyturn (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from keyturn.client import (
    AsyncClient,
    Client,
    CredentialsRejectedError,
    KeyturnAuth,
    KeyturnUnavailableError,
    NoCredentialsError,
    RetryPolicy,
    TokenEndpointError,
)
from keyturn.errors import KeyturnError
from keyturn.testing import FakeClock

from .conftest import API_KEY, KEYTURN, LIFETIME, SERVICE, FakeKeyturn, Sleeps, oauth_error

Options = Callable[..., dict[str, Any]]


def sync_client(transport: httpx.MockTransport, sleeps: Sleeps, options: Options) -> Client:
    return Client(KEYTURN, transport=transport, sleep=sleeps, **options())


def async_client(transport: httpx.MockTransport, sleeps: Sleeps, options: Options) -> AsyncClient:
    return AsyncClient(KEYTURN, transport=transport, sleep=sleeps.async_sleep, **options())


# -- getting and sending a token -------------------------------------------------------------


def test_the_first_request_trades_the_key_for_a_token(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    """Lazily: constructing the client sends nothing; the key goes as the Basic password."""
    client = make_sync(scopes=["write", "read"], identifier="id-1")
    assert keyturn.calls == []

    response = client.get(SERVICE)

    assert response.json() == {"token": "at-1", "body": ""}
    encoded = base64.b64encode(b":kt_k1_secret%2Bkey%2Fwith%25odd%3Dchars").decode()
    assert keyturn.calls == [
        {
            "grant_type": "client_credentials",
            "scope": "read write",
            "identifier": "id-1",
            "authorization": f"Basic {encoded}",
        }
    ]


def test_the_token_is_reused_until_80_percent_of_its_lifetime(
    keyturn: FakeKeyturn,
    clock: FakeClock,
    persisted: list[str | None],
    make_sync: Callable[..., Client],
) -> None:
    client = make_sync()
    client.get(SERVICE)
    clock.advance(LIFETIME * 0.8 - 1)
    assert client.get(SERVICE).json()["token"] == "at-1"

    clock.advance(1)
    renewed = client.get(SERVICE)

    assert renewed.json()["token"] == "at-2"
    assert keyturn.grants() == ["client_credentials", "refresh_token"]
    assert keyturn.calls[1]["refresh_token"] == "ktr_rt-1"
    assert persisted == ["ktr_rt-1", "ktr_rt-2"]  # every rotation reaches the callback
    assert client.refresh_token == "ktr_rt-2"


def test_a_client_with_only_a_refresh_token_refreshes_on_first_use(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    keyturn.valid_refresh_tokens.add("ktr_saved")
    client = make_sync(api_key=None, refresh_token="ktr_saved")

    assert client.get(SERVICE).status_code == 200
    assert [(c["grant_type"], c.get("refresh_token")) for c in keyturn.calls] == [
        ("refresh_token", "ktr_saved")
    ]


def test_a_401_from_the_service_renews_once_and_resends(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    client = make_sync()
    client.get(SERVICE)
    keyturn.valid_access_tokens.clear()  # revoked at the service

    response = client.post(SERVICE, content=b"payload")

    assert response.json() == {"token": "at-2", "body": "payload"}
    assert keyturn.service_calls == ["at-1", "at-1", "at-2"]


def test_a_second_401_is_returned_not_retried_forever(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    client = make_sync()
    keyturn.valid_access_tokens = _Nothing()

    response = client.get(SERVICE)

    assert response.status_code == 401
    assert keyturn.service_calls == ["at-1", "at-2"]
    assert keyturn.grants() == ["client_credentials", "refresh_token"]


class _Nothing(set[str]):
    """A set that never holds anything: every token is refused by the service."""

    def add(self, element: str) -> None:
        pass


def test_keyturn_auth_works_with_a_plain_httpx_client(
    keyturn: FakeKeyturn, transport: httpx.MockTransport, clock: FakeClock
) -> None:
    auth = KeyturnAuth(KEYTURN, api_key=API_KEY, clock=clock.timestamp, transport=transport)

    with httpx.Client(auth=auth, transport=transport, headers={"X-App": "1"}) as http:
        assert http.get(SERVICE).status_code == 200

    assert auth.sync_access_token() == "at-1"
    assert auth.sync_access_token(force=True) == "at-2"
    assert keyturn.grants() == ["client_credentials", "refresh_token"]


async def test_keyturn_auth_works_with_a_plain_httpx_async_client(
    keyturn: FakeKeyturn, transport: httpx.MockTransport, clock: FakeClock
) -> None:
    auth = KeyturnAuth(KEYTURN, api_key=API_KEY, clock=clock.timestamp, async_transport=transport)

    async with httpx.AsyncClient(auth=auth, transport=transport) as http:
        assert (await http.get(SERVICE)).status_code == 200

    assert await auth.async_access_token() == "at-1"
    assert keyturn.grants() == ["client_credentials"]


async def test_an_async_callback_persists_the_refresh_token(
    keyturn: FakeKeyturn, make_async: Callable[..., AsyncClient]
) -> None:
    saved: list[str | None] = []

    async def save(token: str | None) -> None:
        await asyncio.sleep(0)
        saved.append(token)

    async with make_async(on_refresh_token=save) as client:
        await client.get(SERVICE)
        await client.access_token(force=True)

    assert saved == ["ktr_rt-1", "ktr_rt-2"]


# -- single flight ---------------------------------------------------------------------------


async def test_100_concurrent_async_requests_with_an_expired_token_refresh_once(
    keyturn: FakeKeyturn, sleeps: Sleeps, auth_options: Options, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "keyturn.test" and keyturn.calls:
            entered.set()
            await gate.wait()  # hold the refresh open while the others pile up
        return keyturn.handle(request)

    client = async_client(httpx.MockTransport(handle), sleeps, auth_options)
    await client.get(SERVICE)
    clock.advance(LIFETIME + 1)  # expired, not just due

    requests = [asyncio.ensure_future(client.get(SERVICE)) for _ in range(100)]
    await entered.wait()
    for _ in range(20):  # let every other request run up to the lock
        await asyncio.sleep(0)
    gate.set()
    responses = await asyncio.gather(*requests)

    assert keyturn.grants() == ["client_credentials", "refresh_token"]
    assert {r.json()["token"] for r in responses} == {"at-2"}


async def test_100_concurrent_401s_renew_once(
    keyturn: FakeKeyturn, sleeps: Sleeps, auth_options: Options
) -> None:
    """All 100 are refused with the old token before any renews; one renewal serves all."""
    refused = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        response = keyturn.handle(request)
        if response.status_code == 401:
            if keyturn.service_calls.count("at-1") == 101:  # the first call, then 100
                refused.set()
            await refused.wait()
        return response

    client = async_client(httpx.MockTransport(handle), sleeps, auth_options)
    await client.get(SERVICE)
    keyturn.valid_access_tokens.clear()

    responses = await asyncio.gather(*(client.get(SERVICE) for _ in range(100)))

    assert {r.status_code for r in responses} == {200}
    assert keyturn.grants() == ["client_credentials", "refresh_token"]


class CountingLock:
    """A `threading.Lock` that counts who holds it or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Condition()
        self.contenders = 0

    def __enter__(self) -> bool:
        with self._count:
            self.contenders += 1
            self._count.notify_all()
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        with self._count:
            self.contenders -= 1
        self._lock.release()

    def wait_for(self, contenders: int, timeout: float) -> bool:
        with self._count:
            return self._count.wait_for(lambda: self.contenders >= contenders, timeout)


def test_100_threads_with_an_expired_token_refresh_once(
    keyturn: FakeKeyturn, sleeps: Sleeps, auth_options: Options, clock: FakeClock
) -> None:
    gate = threading.Event()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "keyturn.test" and keyturn.calls:
            assert gate.wait(timeout=30)
        return keyturn.handle(request)

    client = sync_client(httpx.MockTransport(handle), sleeps, auth_options)
    client.get(SERVICE)
    clock.advance(LIFETIME + 1)
    lock = CountingLock()
    client.auth._thread_lock = lock  # type: ignore[assignment]  # observe who waits

    with ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(client.get, SERVICE) for _ in range(100)]
        # One thread holds the lock inside the refresh; the other 99 wait for it.
        assert lock.wait_for(100, timeout=30)
        gate.set()
        responses = [future.result(timeout=30) for future in futures]

    assert keyturn.grants() == ["client_credentials", "refresh_token"]
    assert {r.json()["token"] for r in responses} == {"at-2"}


# -- transient failures keep the credentials -------------------------------------------------


def test_a_503_during_refresh_keeps_the_credentials_and_recovers(
    keyturn: FakeKeyturn,
    sleeps: Sleeps,
    clock: FakeClock,
    persisted: list[str | None],
    make_sync: Callable[..., Client],
) -> None:
    client = make_sync()
    client.get(SERVICE)
    clock.advance(LIFETIME + 1)
    down = httpx.Response(503, headers={"Retry-After": "2"}, json={"type": "about:blank"})
    keyturn.failures = [down, down]

    response = client.get(SERVICE)

    assert response.json()["token"] == "at-2"
    assert sleeps.waits == [2.0, 2.0]  # Retry-After is the floor: 0.5 and 1.0 raised to 2
    assert [c.get("refresh_token") for c in keyturn.calls[1:]] == ["ktr_rt-1"] * 3
    assert persisted == ["ktr_rt-1", "ktr_rt-2"]  # never told to forget


def test_an_outage_longer_than_the_retries_raises_then_recovers(
    keyturn: FakeKeyturn, sleeps: Sleeps, clock: FakeClock, make_sync: Callable[..., Client]
) -> None:
    client = make_sync()
    client.get(SERVICE)
    clock.advance(LIFETIME + 1)
    keyturn.failures = [httpx.Response(503)] * 4

    with pytest.raises(KeyturnUnavailableError) as exc_info:
        client.get(SERVICE)

    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert exc_info.value.status_code == 503
    assert "kept" in exc_info.value.message
    assert client.refresh_token == "ktr_rt-1"
    assert client.get(SERVICE).json()["token"] == "at-2"  # Keyturn is back
    assert keyturn.calls[-1]["refresh_token"] == "ktr_rt-1"


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="connect-error"),
        pytest.param(httpx.ReadTimeout("slow"), id="read-timeout"),
        pytest.param(httpx.Response(502), id="502"),
        pytest.param(httpx.Response(429, headers={"Retry-After": "1"}), id="429"),
    ],
)
async def test_transient_failures_are_retried(
    keyturn: FakeKeyturn,
    sleeps: Sleeps,
    failure: httpx.Response | Exception,
    make_async: Callable[..., AsyncClient],
) -> None:
    keyturn.failures = [failure]
    client = make_async()

    response = await client.get(SERVICE)

    assert response.status_code == 200
    assert keyturn.grants() == ["client_credentials", "client_credentials"]
    assert len(sleeps.waits) == 1


def test_a_retry_after_beyond_max_backoff_gives_up_at_once(
    keyturn: FakeKeyturn, sleeps: Sleeps, make_sync: Callable[..., Client]
) -> None:
    keyturn.failures = [httpx.Response(429, headers={"Retry-After": "120"})]
    client = make_sync()

    with pytest.raises(KeyturnUnavailableError) as exc_info:
        client.get(SERVICE)

    assert (exc_info.value.retry_after, exc_info.value.status_code) == (120.0, 429)
    assert sleeps.waits == []


def test_a_failed_early_renewal_keeps_using_the_valid_token(
    keyturn: FakeKeyturn, sleeps: Sleeps, clock: FakeClock, make_sync: Callable[..., Client]
) -> None:
    """Past 80 % but before expiry: one try, no waiting, and no new try until the backoff."""
    client = make_sync()
    client.get(SERVICE)
    clock.advance(LIFETIME * 0.8)
    keyturn.failures = [httpx.Response(503, headers={"Retry-After": "30"})]

    assert client.get(SERVICE).json()["token"] == "at-1"
    assert client.get(SERVICE).json()["token"] == "at-1"
    clock.advance(30)
    assert client.get(SERVICE).json()["token"] == "at-2"

    assert keyturn.grants() == ["client_credentials", "refresh_token", "refresh_token"]
    assert sleeps.waits == []


# -- definitive refusals -----------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401])
def test_an_invalid_grant_refresh_token_falls_back_to_the_key(
    keyturn: FakeKeyturn,
    sleeps: Sleeps,
    persisted: list[str | None],
    status: int,
    make_sync: Callable[..., Client],
) -> None:
    client = make_sync()
    client.get(SERVICE)
    sleeps.clock.advance(LIFETIME + 1)
    keyturn.failures = [oauth_error(status, "invalid_grant", "the refresh token is not valid")]

    response = client.get(SERVICE)

    assert response.json()["token"] == "at-2"
    assert keyturn.grants() == ["client_credentials", "refresh_token", "client_credentials"]
    assert persisted == ["ktr_rt-1", None, "ktr_rt-2"]
    assert sleeps.waits == []


def test_an_invalid_grant_without_a_key_raises_credentials_rejected(
    keyturn: FakeKeyturn, persisted: list[str | None], make_sync: Callable[..., Client]
) -> None:
    client = make_sync(api_key=None, refresh_token="ktr_gone")

    with pytest.raises(CredentialsRejectedError) as exc_info:
        client.get(SERVICE)

    assert (exc_info.value.status_code, exc_info.value.error_code) == (400, "invalid_grant")
    assert "refresh token" in exc_info.value.message
    assert persisted == [None]
    with pytest.raises(NoCredentialsError):
        client.get(SERVICE)
    assert len(keyturn.calls) == 1  # nothing left to send


def test_a_refused_key_is_dropped_and_not_sent_again(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    client = make_sync(api_key="kt_k1_wrong")

    with pytest.raises(CredentialsRejectedError) as exc_info:
        client.get(SERVICE)
    with pytest.raises(NoCredentialsError):
        client.get(SERVICE)

    assert (exc_info.value.status_code, exc_info.value.error_code) == (401, "invalid_client")
    assert "create a new one" in exc_info.value.message
    assert len(keyturn.calls) == 1


def test_other_token_errors_are_typed_and_keep_the_credentials(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    keyturn.failures = [oauth_error(400, "invalid_scope", "claim 'scope': not allowed")]
    client = make_sync(scopes=["admin"])

    with pytest.raises(TokenEndpointError) as exc_info:
        client.get(SERVICE)

    assert exc_info.value.error_code == "invalid_scope"
    assert "claim 'scope': not allowed" in exc_info.value.message
    assert client.get(SERVICE).status_code == 200  # the key was kept


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(httpx.Response(200, text="<html>"), id="not-json"),
        pytest.param(httpx.Response(200, json={"token_type": "Bearer"}), id="no-access-token"),
        pytest.param(
            httpx.Response(200, json={"access_token": "a", "token_type": "mac", "expires_in": 9}),
            id="not-bearer",
        ),
        pytest.param(
            httpx.Response(200, json={"access_token": "a", "token_type": "Bearer"}),
            id="no-lifetime",
        ),
        pytest.param(httpx.Response(200, content=b" " * 70_000), id="too-big"),
        pytest.param(httpx.Response(404, text="not found"), id="404-not-oauth"),
    ],
)
def test_a_response_that_is_not_a_token_is_a_typed_error(
    keyturn: FakeKeyturn, answer: httpx.Response, make_sync: Callable[..., Client]
) -> None:
    keyturn.failures = [answer]
    client = make_sync()

    with pytest.raises(TokenEndpointError):
        client.get(SERVICE)

    assert client.get(SERVICE).status_code == 200


def test_errors_and_reprs_never_show_the_secrets(
    keyturn: FakeKeyturn, make_sync: Callable[..., Client]
) -> None:
    seen: list[str] = []
    for failure, credentials in (
        (oauth_error(400, "invalid_grant"), {"api_key": None, "refresh_token": "ktr_secret-rt"}),
        (oauth_error(401, "invalid_client"), {}),
        (httpx.Response(503), {}),
    ):
        keyturn.failures = [failure] * 4
        client = make_sync(**credentials)
        with pytest.raises(KeyturnError) as exc_info:
            client.access_token()
        seen += [str(exc_info.value), repr(exc_info.value), repr(client.auth)]

    assert seen
    assert not [text for text in seen if API_KEY in text or "ktr_secret-rt" in text]


def test_a_client_needs_a_credential_and_an_http_url() -> None:
    with pytest.raises(NoCredentialsError):
        Client(KEYTURN)
    with pytest.raises(ValueError, match="http"):
        KeyturnAuth("keyturn.test", api_key=API_KEY)


# -- the retry policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        pytest.param(1, None, 0.5, id="first"),
        pytest.param(3, None, 2.0, id="doubles"),
        pytest.param(4, None, None, id="out-of-retries"),
        pytest.param(1, 5.0, 5.0, id="retry-after-is-the-floor"),
        pytest.param(3, 1.0, 2.0, id="backoff-above-retry-after"),
        pytest.param(1, 31.0, None, id="retry-after-beyond-max"),
    ],
)
def test_retry_policy_delays(attempt: int, retry_after: float | None, expected: float | None):
    assert RetryPolicy(retries=3, backoff=0.5, max_backoff=30.0).delay(attempt, retry_after) == (
        expected
    )


def test_retry_after_as_an_http_date(
    keyturn: FakeKeyturn, sleeps: Sleeps, make_sync: Callable[..., Client]
) -> None:
    """RFC 9110 §10.2.3: ``Retry-After`` may be a date; measured against the client's clock."""
    keyturn.failures = [
        httpx.Response(503, headers={"Retry-After": "Thu, 01 Jan 2026 00:00:07 GMT"})
    ]
    client = make_sync()

    client.get(SERVICE)

    assert sleeps.waits == [7.0]
