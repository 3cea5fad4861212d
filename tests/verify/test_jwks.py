"""`JWKSVerifier`: caching, rotation, refetch cooldown, caps and URL rules."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from keyturn.core.signing import SigningKey
from keyturn.errors import (
    InsufficientScopeError,
    TokenClaimsError,
    TokenSignatureError,
    VerifierUnavailableError,
)
from keyturn.testing import FakeClock
from keyturn.verify import JWKSVerifier
from tests.verify.conftest import AUDIENCE, ISSUER, JWKS_URL, FakeIssuer


def make_verifier(client: httpx.AsyncClient, clock: FakeClock, **options: object) -> JWKSVerifier:
    return JWKSVerifier(
        JWKS_URL,
        issuer=ISSUER,
        audience=AUDIENCE,
        client=client,
        clock=clock.timestamp,
        **options,  # type: ignore[arg-type]
    )


async def yield_to_other_tasks(rounds: int = 5) -> None:
    """Let every ready task run until it blocks (cooperative yields, no timed wait)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- fetching and caching ----------------------------------------------------------------


async def test_first_verify_fetches_the_jwks_then_serves_from_cache(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)

    for _ in range(5):
        verified = await verifier.verify(issuer.token())

    assert verified.subject == "key:k1"
    assert verified.kid == issuer.signing_key.kid
    assert issuer.requests == 1


async def test_required_scopes_are_enforced(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)

    with pytest.raises(InsufficientScopeError) as exc_info:
        await verifier.verify(issuer.token(scopes=["orders:read"]), required_scopes=["admin"])

    assert exc_info.value.required == frozenset({"admin"})


async def test_issuer_is_checked(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)

    with pytest.raises(TokenClaimsError) as refused:
        await verifier.verify(issuer.token(issuer="https://auth.example.com.evil"))

    # Finding 10: both values, so a moved port or a missing KEYTURN_ISSUER is obvious.
    assert refused.value.message == (
        f"token was issued by another issuer (expected '{ISSUER}', token has "
        "'https://auth.example.com.evil'); the verifier's issuer must be the server's "
        "KEYTURN_ISSUER"
    )


async def test_a_hostile_issuer_is_shown_printable_and_short(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)
    hostile = 'https://evil"\r\nX-Injected: 1' + "x" * 500

    with pytest.raises(TokenClaimsError) as refused:
        await verifier.verify(issuer.token(issuer=hostile))

    shown = refused.value.message.split("token has ", 1)[1]
    assert shown.startswith("'https://evil???X-Injected: 1xxx")
    assert "xxx...'); the verifier's issuer" in shown
    assert len(shown) < 180
    assert all(" " <= char <= "~" for char in refused.value.message)


@pytest.mark.parametrize(
    ("cache_control", "age", "lifetime"),
    [
        pytest.param("public, max-age=300", None, 300, id="max-age"),
        pytest.param("max-age=600", "100", 500, id="max-age-minus-age"),
        pytest.param("max-age=5", None, 60, id="raised-to-min-ttl"),
        pytest.param("max-age=999999", None, 3600, id="lowered-to-max-ttl"),
        pytest.param("no-store", None, 60, id="no-store-means-min-ttl"),
        pytest.param("no-cache, max-age=900", None, 60, id="no-cache-means-min-ttl"),
        pytest.param(None, None, 300, id="no-header-means-default"),
        pytest.param("max-age=soon", None, 300, id="garbage-means-default"),
    ],
)
async def test_cache_lifetime_follows_cache_control_within_bounds(
    *,
    issuer: FakeIssuer,
    http: httpx.AsyncClient,
    clock: FakeClock,
    cache_control: str | None,
    age: str | None,
    lifetime: int,
) -> None:
    issuer.headers = {}
    if cache_control is not None:
        issuer.headers["Cache-Control"] = cache_control
    if age is not None:
        issuer.headers["Age"] = age
    verifier = make_verifier(http, clock, default_ttl=300, min_ttl=60, max_ttl=3600)

    await verifier.refresh()

    assert verifier.expires_at == clock.timestamp() + lifetime


async def test_jwks_is_refetched_when_its_max_age_passes(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    issuer.headers = {"Cache-Control": "max-age=120"}
    verifier = make_verifier(http, clock)
    await verifier.verify(issuer.token())

    clock.advance(119)
    await verifier.verify(issuer.token())
    assert issuer.requests == 1

    clock.advance(1)
    await verifier.verify(issuer.token())
    assert issuer.requests == 2


async def test_concurrent_first_verifications_share_one_fetch(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    issuer.gate = asyncio.Event()
    verifier = make_verifier(http, clock)
    token = issuer.token()

    tasks = [asyncio.create_task(verifier.verify(token)) for _ in range(20)]
    await issuer.fetch_started.wait()
    await yield_to_other_tasks()
    issuer.gate.set()
    results = await asyncio.gather(*tasks)

    assert {result.jti for result in results} == {results[0].jti}
    assert issuer.requests == 1


# -- rotation (T-ROT-01/02/04) ------------------------------------------------------------


async def test_rotation_new_kid_is_fetched_once_under_concurrent_verifications(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Fifty requests carrying a freshly activated kid cause exactly one refetch, and
    every one of them is accepted (none is refused while the refetch is in flight)."""
    verifier = make_verifier(http, clock, refetch_interval=30)
    await verifier.verify(issuer.token())
    clock.advance(31)
    new_key = issuer.rotate()
    token = issuer.token(new_key)
    issuer.gate = asyncio.Event()
    issuer.fetch_started.clear()

    tasks = [asyncio.create_task(verifier.verify(token)) for _ in range(50)]
    await issuer.fetch_started.wait()
    await yield_to_other_tasks()
    issuer.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [type(result).__name__ for result in results] == ["VerifiedToken"] * 50
    assert issuer.requests == 2
    assert verifier.keys is not None
    assert new_key.kid in verifier.keys


async def test_old_key_tokens_stay_valid_while_the_old_key_is_published(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)
    old_token = issuer.token()
    clock.advance(31)
    issuer.rotate()
    await verifier.verify(issuer.token())  # refetch for the new kid

    assert (await verifier.verify(old_token)).kid == issuer.keys[1].kid


async def test_token_signed_by_a_key_not_in_the_jwks_is_refused(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)
    await verifier.verify(issuer.token())
    clock.advance(31)
    stranger = SigningKey.generate()

    with pytest.raises(TokenSignatureError):
        await verifier.verify(issuer.token(stranger))
    assert issuer.requests == 2  # one refetch, in case it was a fresh key: it was not

    with pytest.raises(TokenSignatureError):
        await verifier.verify(issuer.token(stranger))
    assert issuer.requests == 2  # cooling down: no second refetch


async def test_known_kid_with_a_bad_signature_is_refused_without_a_refetch(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)
    await verifier.verify(issuer.token())
    clock.advance(31)
    impostor = SigningKey.from_private_key(
        SigningKey.generate().private_key, kid=issuer.signing_key.kid
    )

    with pytest.raises(TokenSignatureError):
        await verifier.verify(issuer.token(impostor))

    assert issuer.requests == 1


async def test_a_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock, refetch_interval=30)
    await verifier.verify(issuer.token())
    strangers = [issuer.token(SigningKey.generate("EdDSA")) for _ in range(20)]

    clock.advance(10)
    for token in strangers:
        with pytest.raises(TokenSignatureError):
            await verifier.verify(token)
    assert issuer.requests == 1  # 10 s after the first fetch: still cooling down

    clock.advance(25)
    for token in strangers:
        with pytest.raises(TokenSignatureError):
            await verifier.verify(token)
    assert issuer.requests == 2


async def test_a_key_removed_from_the_jwks_is_refused_once_the_cache_expires(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """T-ROT-02: an emergency removal reaches every verifier within the cache lifetime,
    even for tokens it has already verified (and cached)."""
    verifier = make_verifier(http, clock)
    old_key = issuer.signing_key
    old_token = issuer.token(old_key)
    await verifier.verify(old_token)
    issuer.rotate()
    issuer.keys.remove(old_key)

    clock.advance(301)
    with pytest.raises(TokenSignatureError):
        await verifier.verify(old_token)


# -- failures: never 401 for an outage, never a lost cache ---------------------------------


async def test_refresh_failure_keeps_the_cached_keys(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock, refetch_interval=30)
    await verifier.verify(issuer.token())
    issuer.status = 503

    clock.advance(301)
    assert (await verifier.verify(issuer.token())).subject == "key:k1"
    assert issuer.requests == 2
    clock.advance(10)
    await verifier.verify(issuer.token())
    assert issuer.requests == 2  # no retry before refetch_interval

    issuer.status = 200
    clock.advance(21)
    await verifier.verify(issuer.token())
    assert issuer.requests == 3
    assert verifier.expires_at == clock.timestamp() + 300


async def test_no_keys_and_an_unreachable_jwks_is_unavailable_not_invalid(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    issuer.status = 500
    verifier = make_verifier(http, clock, refetch_interval=30)

    with pytest.raises(VerifierUnavailableError) as first:
        await verifier.verify(issuer.token())
    clock.advance(5)
    with pytest.raises(VerifierUnavailableError) as second:
        await verifier.verify(issuer.token())

    assert first.value.status_code == 503
    assert "HTTP 500" in first.value.message
    assert second.value.retry_after == 25
    assert issuer.requests == 1


async def test_an_unknown_kid_during_an_outage_is_unavailable_not_invalid(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """The new kid may be genuine: while the JWKS cannot be fetched, say 503, not 401."""
    verifier = make_verifier(http, clock)
    await verifier.verify(issuer.token())
    clock.advance(31)
    new_key = issuer.rotate()
    issuer.status = 502

    with pytest.raises(VerifierUnavailableError):
        await verifier.verify(issuer.token(new_key))
    assert (await verifier.verify(issuer.token(issuer.keys[1]))).kid == issuer.keys[1].kid


def body_of(size: int) -> bytes:
    padding = "x" * max(0, size - 40)
    return json.dumps({"keys": [], "padding": padding}).encode()


async def test_a_jwks_larger_than_the_cap_is_refused(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    async def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body_of(10_000))

    issuer.respond = huge
    verifier = make_verifier(http, clock, max_response_bytes=4096)

    with pytest.raises(VerifierUnavailableError, match="larger than 4096 bytes"):
        await verifier.refresh()


async def test_a_streamed_jwks_without_length_is_cut_off_at_the_cap(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"keys": ['
        while True:
            sent += 1
            yield b" " * 1024

    async def streaming(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    issuer.respond = streaming
    verifier = make_verifier(http, clock, max_response_bytes=8192)

    with pytest.raises(VerifierUnavailableError, match="larger than 8192 bytes"):
        await verifier.refresh()
    assert sent <= 9


async def test_a_jwks_endpoint_that_never_answers_times_out(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # never set
        raise AssertionError("unreachable")

    issuer.respond = silent
    verifier = make_verifier(http, clock, timeout=0.05)

    with pytest.raises(VerifierUnavailableError, match=r"within 0\.05 s"):
        await verifier.refresh()


async def test_a_jwks_body_that_drips_forever_times_out(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    """The deadline covers the body too, not only the wait for headers."""

    async def drip() -> AsyncIterator[bytes]:
        yield b'{"keys": ['
        await asyncio.Event().wait()  # the rest never comes

    async def dripping(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=drip())

    issuer.respond = dripping
    verifier = make_verifier(http, clock, timeout=0.05)

    with pytest.raises(VerifierUnavailableError, match="did not answer"):
        await verifier.refresh()


@pytest.mark.parametrize(
    ("status", "headers", "content", "expected"),
    [
        pytest.param(
            302, {"Location": "https://evil.example/jwks"}, b"", "HTTP 302", id="redirect"
        ),
        pytest.param(200, {}, b"<html>", "not return a JWK Set", id="not-json"),
        pytest.param(200, {}, b"[1, 2]", "not return a JWK Set", id="not-a-jwk-set"),
        pytest.param(200, {}, b"[" * 5000, "not return a JWK Set", id="deeply-nested"),
        pytest.param(
            200,
            {"Content-Encoding": "gzip"},
            gzip.compress(b'{"keys": []}'),
            "encoded body",
            id="compressed",
        ),
    ],
)
async def test_unusable_jwks_responses_are_refused(
    *,
    issuer: FakeIssuer,
    http: httpx.AsyncClient,
    clock: FakeClock,
    status: int,
    headers: dict[str, str],
    content: bytes,
    expected: str,
) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=content)

    issuer.respond = answer
    verifier = make_verifier(http, clock)

    with pytest.raises(VerifierUnavailableError, match=expected):
        await verifier.refresh()
    assert issuer.requests == 1  # a redirect is not followed


async def test_the_fetch_asks_for_a_jwk_set_without_compression(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"keys": []})

    issuer.respond = record
    async with issuer.client() as client:
        await make_verifier(client, clock).refresh()

    assert str(seen[0].url) == JWKS_URL
    assert seen[0].headers["Accept-Encoding"] == "identity"
    assert "application/jwk-set+json" in seen[0].headers["Accept"]


# -- URL rules and lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://auth.example.com/.well-known/jwks.json", id="plain-http"),
        pytest.param("file:///etc/keyturn/jwks.json", id="file"),
        pytest.param("data:application/json,{}", id="data"),
        pytest.param("ftp://auth.example.com/jwks.json", id="ftp"),
        pytest.param("/.well-known/jwks.json", id="relative"),
        pytest.param("https:///jwks.json", id="no-host"),
    ],
)
def test_non_https_jwks_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        JWKSVerifier(url, issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("http://127.0.0.1:8080/.well-known/jwks.json", True, id="http"),
        pytest.param("file:///etc/keyturn/jwks.json", False, id="file-never"),
    ],
)
def test_allow_insecure_http_admits_http_and_nothing_else(url: str, allowed: bool) -> None:
    if allowed:
        verifier = JWKSVerifier(url, issuer=ISSUER, audience=AUDIENCE, allow_insecure_http=True)
        assert verifier.jwks_url == url
    else:
        with pytest.raises(ValueError, match="https"):
            JWKSVerifier(url, issuer=ISSUER, audience=AUDIENCE, allow_insecure_http=True)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"min_ttl": 0}, id="zero-min"),
        pytest.param({"min_ttl": 600, "default_ttl": 300}, id="min-above-default"),
        pytest.param({"max_ttl": 100, "default_ttl": 300}, id="max-below-default"),
        pytest.param({"refetch_interval": 0}, id="zero-interval"),
        pytest.param({"timeout": -1}, id="negative-timeout"),
    ],
)
def test_inconsistent_bounds_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be positive|min_ttl"):
        JWKSVerifier(JWKS_URL, issuer=ISSUER, audience=AUDIENCE, **options)  # type: ignore[arg-type]


async def test_aclose_closes_only_the_client_the_verifier_opened(
    issuer: FakeIssuer, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    borrowed = JWKSVerifier(JWKS_URL, issuer=ISSUER, audience=AUDIENCE, client=http)
    await borrowed.refresh()
    await borrowed.aclose()
    assert not http.is_closed

    opened: list[httpx.AsyncClient] = []
    real_client = httpx.AsyncClient

    def open_client() -> httpx.AsyncClient:
        opened.append(real_client(transport=httpx.MockTransport(issuer.handle)))
        return opened[-1]

    monkeypatch.setattr(httpx, "AsyncClient", open_client)
    async with JWKSVerifier(JWKS_URL, issuer=ISSUER, audience=AUDIENCE) as owning:
        await owning.refresh()
        assert not opened[0].is_closed
    assert len(opened) == 1
    assert opened[0].is_closed


async def test_refresh_fetches_even_when_the_cache_is_fresh(
    issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    verifier = make_verifier(http, clock)
    await verifier.refresh()
    clock.advance(1)

    keys = await verifier.refresh()

    assert issuer.requests == 2
    assert keys.kids == {issuer.signing_key.kid}
