"""`OfflineVerifier`, `RemoteVerifier` and the pure `cache_lifetime` rule."""

from __future__ import annotations

import httpx
import pytest

from keyturn.core.signing import KeySet, SigningKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import (
    ExpiredTokenError,
    InsufficientScopeError,
    InvalidTokenError,
    TokenClaimsError,
    TokenSignatureError,
    VerifierUnavailableError,
)
from keyturn.testing import FakeClock
from keyturn.verify import OfflineVerifier, RemoteVerifier, cache_lifetime
from tests.verify.conftest import AUDIENCE, ISSUER, FakeIssuer

SERVER = "https://auth.example.com/keyturn"


@pytest.mark.parametrize(
    ("cache_control", "age", "expected"),
    [
        pytest.param('max-age="120"', None, 120, id="quoted"),
        pytest.param("MAX-AGE=120", None, 120, id="case-insensitive"),
        pytest.param("max-age=120", "500", 60, id="older-than-max-age"),
        pytest.param("max-age=-5", None, 300, id="negative-ignored"),
        pytest.param("private, must-revalidate", None, 300, id="no-max-age"),
    ],
)
def test_cache_lifetime(cache_control: str, age: str | None, expected: float) -> None:
    lifetime = cache_lifetime(cache_control, age, default=300, minimum=60, maximum=3600)

    assert lifetime == expected


# -- OfflineVerifier --------------------------------------------------------------------


async def test_offline_verifier_accepts_tokens_of_its_key_set(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    keys = KeySet.from_jwks(KeySet.of(issuer.signing_key).jwks())
    verifier = OfflineVerifier(keys, issuer=ISSUER, audience=AUDIENCE, clock=clock.timestamp)

    verified = await verifier.verify(issuer.token(), required_scopes=["orders:read"])

    assert verified.scopes == frozenset({"orders:read"})


async def test_offline_verifier_refuses_other_keys_and_expired_tokens(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    verifier = OfflineVerifier(
        KeySet.of(issuer.signing_key), issuer=ISSUER, audience=AUDIENCE, clock=clock.timestamp
    )
    stranger = issuer.token(SigningKey.generate())
    token = issuer.token(lifetime=60)

    with pytest.raises(TokenSignatureError):
        await verifier.verify(stranger)
    clock.advance(91)  # lifetime + the default 30 s leeway
    with pytest.raises(ExpiredTokenError):
        await verifier.verify(token)


# -- RemoteVerifier ---------------------------------------------------------------------


def remote(handler: httpx.MockTransport) -> RemoteVerifier:
    return RemoteVerifier(SERVER, client=httpx.AsyncClient(transport=handler))


async def test_remote_verifier_asks_v1_validate_and_returns_the_vouched_claims(
    issuer: FakeIssuer,
) -> None:
    token = issuer.token(scopes=["orders:read", "orders:write"])
    seen: list[httpx.Request] = []

    def validate(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"X-Keyturn-Token-Id": jti})

    jti = peek_unverified_claims(token)[1]["jti"]
    verified = await remote(httpx.MockTransport(validate)).verify(
        token, required_scopes=["orders:write", "orders:read"]
    )

    assert (verified.subject, verified.client_id, verified.jti) == ("key:k1", "k1", jti)
    assert verified.scopes == frozenset({"orders:read", "orders:write"})
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/keyturn/v1/validate"
    assert seen[0].url.params["scope"] == "orders:read orders:write"
    assert seen[0].headers["Authorization"] == f"Bearer {token}"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(401, InvalidTokenError, id="401-invalid"),
        pytest.param(403, InsufficientScopeError, id="403-scope"),
        pytest.param(503, VerifierUnavailableError, id="503-outage"),
        pytest.param(429, VerifierUnavailableError, id="429-rate-limited"),
        pytest.param(500, VerifierUnavailableError, id="500-failure"),
    ],
)
async def test_remote_verifier_maps_the_server_answer(
    issuer: FakeIssuer, status: int, error: type[Exception]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": "7"})

    with pytest.raises(error) as exc_info:
        await remote(httpx.MockTransport(answer)).verify(issuer.token(), required_scopes=["x"])

    if isinstance(exc_info.value, VerifierUnavailableError):
        assert exc_info.value.retry_after == 7


async def test_remote_verifier_unreachable_server_is_unavailable(issuer: FakeIssuer) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(VerifierUnavailableError, match="could not be reached"):
        await remote(httpx.MockTransport(refuse)).verify(issuer.token())


async def test_remote_verifier_refuses_a_200_for_another_token(issuer: FakeIssuer) -> None:
    def confused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"X-Keyturn-Token-Id": "someone-else"})

    with pytest.raises(TokenClaimsError):
        await remote(httpx.MockTransport(confused)).verify(issuer.token())


def test_remote_verifier_refuses_plain_http_unless_allowed() -> None:
    with pytest.raises(ValueError, match="plain http"):
        RemoteVerifier("http://auth.internal:8080")

    verifier = RemoteVerifier("http://auth.internal:8080/", allow_insecure_http=True)
    assert verifier.validate_url == "http://auth.internal:8080/v1/validate"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("a.b.c\r\nX-Injected: 1", id="header-injection"),
        pytest.param("a b.c", id="space"),
        pytest.param("", id="empty"),
        pytest.param("a." * 5000, id="oversize"),
    ],
)
async def test_remote_verifier_never_sends_what_cannot_be_a_token(token: str) -> None:
    calls: list[httpx.Request] = []

    def validate(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200)

    with pytest.raises(InvalidTokenError):
        await remote(httpx.MockTransport(validate)).verify(token)
    assert calls == []
