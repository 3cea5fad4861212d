"""DPoP-bound tokens at the verifiers (RFC 9449 §4.3, §7.1, §11.1): proof, binding, replay.

The tests name the RFC section whose rule they pin. `JWKSVerifier` and `OfflineVerifier`
share `keyturn.verify._dpop.DPoPCheck`, so each rule runs against both.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from keyturn.core._encoding import b64url_encode, compact_json
from keyturn.core.dpop import access_token_hash, create_dpop_proof, proof_jwk
from keyturn.core.signing import KeySet, SigningKey
from keyturn.errors import InsufficientScopeError, VerifierUnavailableError
from keyturn.testing import FakeClock
from keyturn.verify import (
    DPoPReplayCache,
    InvalidDPoPProofError,
    JWKSVerifier,
    OfflineVerifier,
    Verifier,
)
from tests.verify.conftest import AUDIENCE, ISSUER, JWKS_URL, FakeIssuer, bind_token

URL = "https://api.example.com/orders/17"
DEVICE = SigningKey.generate("ES256")

Build = Callable[..., Verifier]


@pytest.fixture(params=["offline", "jwks"])
async def build(
    request: pytest.FixtureRequest, issuer: FakeIssuer, http: httpx.AsyncClient, clock: FakeClock
) -> AsyncIterator[Build]:
    """Makes verifiers of one kind (offline or JWKS) on the fake issuer's keys."""
    opened: list[JWKSVerifier] = []

    def make(**options: Any) -> Verifier:
        if request.param == "offline":
            return OfflineVerifier(
                KeySet.of(issuer.signing_key),
                issuer=ISSUER,
                audience=AUDIENCE,
                clock=clock.timestamp,
                **options,
            )
        verifier = JWKSVerifier(
            JWKS_URL,
            issuer=ISSUER,
            audience=AUDIENCE,
            client=http,
            clock=clock.timestamp,
            **options,
        )
        opened.append(verifier)
        return verifier

    yield make
    for verifier in opened:
        await verifier.aclose()


def bound(issuer: FakeIssuer, key: SigningKey = DEVICE, **options: Any) -> str:
    return bind_token(issuer.token(**options), issuer.signing_key, key.kid)


def proof(
    clock: FakeClock,
    token: str | None,
    *,
    key: SigningKey = DEVICE,
    method: str = "GET",
    url: str = URL,
    iat: float | None = None,
) -> str:
    now = int(clock.timestamp() if iat is None else iat)
    return create_dpop_proof(key, method=method, url=url, now=now, access_token=token)


async def test_rfc9449_7_1_bound_token_with_a_valid_proof_passes(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """A bound token with a proof of its key for this request: the claims, with ``jkt``."""
    token = bound(issuer)

    verified = await build().verify(
        token,
        required_scopes=["orders:read"],
        dpop_proof=proof(clock, token),
        method="GET",
        url=URL,
        scheme="dpop",
    )

    assert verified.jkt == DEVICE.kid
    assert verified.scopes == frozenset({"orders:read"})


async def test_rfc9449_7_1_scheme_defaults_to_dpop_when_a_proof_is_given(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """``verify(token, dpop_proof=, method=, url=)`` (the issue's call) needs no ``scheme``."""
    token = bound(issuer)

    verified = await build().verify(token, dpop_proof=proof(clock, token), method="GET", url=URL)

    assert verified.jkt == DEVICE.kid


async def test_rfc9449_7_1_bound_token_as_bearer_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """No downgrade: ``cnf.jkt`` as Bearer fails, even with a valid proof beside it."""
    token = bound(issuer)
    verifier = build()

    with pytest.raises(InvalidDPoPProofError, match="must be sent as DPoP"):
        await verifier.verify(token)
    with pytest.raises(InvalidDPoPProofError, match="must be sent as DPoP"):
        await verifier.verify(
            token, dpop_proof=proof(clock, token), method="GET", url=URL, scheme="bearer"
        )


async def test_rfc9449_7_1_bound_token_as_bearer_fails_before_its_scopes(
    build: Build, issuer: FakeIssuer
) -> None:
    """The binding is checked first: the answer is the DPoP refusal, not 403."""
    with pytest.raises(InvalidDPoPProofError):
        await build().verify(bound(issuer), required_scopes=["admin"])


async def test_rfc9449_7_1_bound_token_without_a_proof_is_refused(
    build: Build, issuer: FakeIssuer
) -> None:
    with pytest.raises(InvalidDPoPProofError, match="needs a DPoP proof"):
        await build().verify(bound(issuer), method="GET", url=URL, scheme="dpop")


async def test_rfc9449_7_1_bearer_token_as_dpop_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = issuer.token()
    verifier = build()

    assert (await verifier.verify(token)).jkt is None
    with pytest.raises(InvalidDPoPProofError, match="not DPoP-bound"):
        await verifier.verify(token, dpop_proof=proof(clock, token), method="GET", url=URL)


async def test_rfc9449_7_1_a_valid_proof_still_needs_the_scopes(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bound(issuer)

    with pytest.raises(InsufficientScopeError):
        await build().verify(
            token, required_scopes=["admin"], dpop_proof=proof(clock, token), method="GET", url=URL
        )


async def test_rfc9449_4_3_proof_by_another_key_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """A thief's own valid proof: signed by a key other than ``cnf.jkt``."""
    token = bound(issuer)
    thief = SigningKey.generate("ES256")

    with pytest.raises(InvalidDPoPProofError, match="another key"):
        await build().verify(
            token, dpop_proof=proof(clock, token, key=thief), method="GET", url=URL
        )


@pytest.mark.parametrize(
    ("method", "url", "match"),
    [
        pytest.param("POST", URL, "htm", id="wrong-htm"),
        pytest.param("get", URL, "htm", id="htm-is-case-sensitive"),
        pytest.param("GET", "https://api.example.com/orders/18", "htu", id="wrong-path"),
        pytest.param("GET", "https://evil.example.com/orders/17", "htu", id="wrong-host"),
        pytest.param("GET", "http://api.example.com/orders/17", "htu", id="wrong-scheme"),
    ],
)
async def test_rfc9449_4_3_proof_for_another_request_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock, *, method: str, url: str, match: str
) -> None:
    token = bound(issuer)

    with pytest.raises(InvalidDPoPProofError, match=match):
        await build().verify(
            token, dpop_proof=proof(clock, token, method="GET", url=URL), method=method, url=url
        )


async def test_rfc9449_4_3_htu_is_compared_normalised_without_the_query(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bound(issuer)
    called = "HTTPS://API.example.com:443/orders/17?page=2"

    verified = await build().verify(token, dpop_proof=proof(clock, token), method="GET", url=called)

    assert verified.jkt == DEVICE.kid


@pytest.mark.parametrize(
    ("age", "match"),
    [
        pytest.param(60 + 30 + 1, "too old", id="stale: max age + leeway + 1"),
        pytest.param(-(30 + 1), "future", id="future: leeway + 1 ahead"),
    ],
)
async def test_rfc9449_4_3_stale_or_future_iat_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock, age: int, match: str
) -> None:
    token = bound(issuer)
    dated = proof(clock, token, iat=clock.timestamp() - age)

    with pytest.raises(InvalidDPoPProofError, match=match):
        await build().verify(token, dpop_proof=dated, method="GET", url=URL)


async def test_rfc9449_4_3_proof_max_age_is_a_verifier_option(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bound(issuer)
    dated = proof(clock, token, iat=clock.timestamp() - 20)
    verifier = build(dpop_max_age=10, leeway=5)

    with pytest.raises(InvalidDPoPProofError, match="too old"):
        await verifier.verify(token, dpop_proof=dated, method="GET", url=URL)


async def test_rfc9449_11_1_replayed_proof_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bound(issuer)
    verifier = build()
    once = proof(clock, token)
    await verifier.verify(token, dpop_proof=once, method="GET", url=URL)

    with pytest.raises(InvalidDPoPProofError, match="used before"):
        await verifier.verify(token, dpop_proof=once, method="GET", url=URL)
    fresh = proof(clock, token)
    assert (await verifier.verify(token, dpop_proof=fresh, method="GET", url=URL)).jkt


async def test_rfc9449_11_1_replicas_share_single_use_through_one_replay_store(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """Two verifiers on one store refuse a proof either has seen; apart, they cannot."""
    token = bound(issuer)
    shared = DPoPReplayCache()
    first, second = build(replay_store=shared), build(replay_store=shared)
    once = proof(clock, token)
    await first.verify(token, dpop_proof=once, method="GET", url=URL)

    with pytest.raises(InvalidDPoPProofError, match="used before"):
        await second.verify(token, dpop_proof=once, method="GET", url=URL)
    # The documented window of per-process caches: another replica accepts it once.
    assert await build().verify(token, dpop_proof=once, method="GET", url=URL)


async def test_rfc9449_4_3_proof_without_ath_or_for_another_token_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bound(issuer)
    other = bound(issuer)
    verifier = build()

    with pytest.raises(InvalidDPoPProofError, match="ath"):
        await verifier.verify(token, dpop_proof=proof(clock, None), method="GET", url=URL)
    with pytest.raises(InvalidDPoPProofError, match="ath"):
        await verifier.verify(token, dpop_proof=proof(clock, other), method="GET", url=URL)


def proof_carrying_private_key(clock: FakeClock, token: str) -> str:
    """A proof otherwise valid whose ``jwk`` header is the device's private key."""
    header = {"typ": "dpop+jwt", "alg": DEVICE.alg, "jwk": DEVICE.private_jwk()}
    claims = {
        "jti": "j-1",
        "htm": "GET",
        "htu": URL,
        "iat": int(clock.timestamp()),
        "ath": access_token_hash(token),
    }
    signing_input = f"{b64url_encode(compact_json(header))}.{b64url_encode(compact_json(claims))}"
    return f"{signing_input}.{b64url_encode(DEVICE.sign(signing_input.encode('ascii')))}"


async def test_rfc9449_4_3_proof_carrying_a_private_key_is_refused(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bound(issuer)
    leaky = proof_carrying_private_key(clock, token)

    assert "d" in DEVICE.private_jwk()
    assert "d" not in proof_jwk(DEVICE)
    with pytest.raises(InvalidDPoPProofError, match="public key"):
        await build().verify(token, dpop_proof=leaky, method="GET", url=URL)


async def test_a_proof_needs_the_request_method_and_url(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """A programming error, not a client's: ValueError, never a pass."""
    token = bound(issuer)

    with pytest.raises(ValueError, match="method and url"):
        await build().verify(token, dpop_proof=proof(clock, token))


# -- DPoPReplayCache -----------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_replay_cache_forgets_a_proof_once_it_has_expired() -> None:
    cache = DPoPReplayCache()
    until = T0 + timedelta(seconds=90)

    assert await cache.claim("a", expires_at=until, now=T0)
    assert not await cache.claim("a", expires_at=until, now=T0 + timedelta(seconds=89))
    assert await cache.claim("b", expires_at=until + timedelta(seconds=91), now=until)
    assert len(cache) == 1  # "a" expired and was dropped
    assert await cache.claim("a", expires_at=until + timedelta(seconds=90), now=until)


async def test_replay_cache_full_of_live_proofs_refuses_rather_than_forgets() -> None:
    cache = DPoPReplayCache(max_entries=2)
    await cache.claim("a", expires_at=T0 + timedelta(seconds=30), now=T0)
    await cache.claim("b", expires_at=T0 + timedelta(seconds=60), now=T0)

    with pytest.raises(VerifierUnavailableError) as refused:
        await cache.claim("c", expires_at=T0 + timedelta(seconds=90), now=T0)
    assert refused.value.retry_after == 30
    assert not await cache.claim("a", expires_at=T0 + timedelta(seconds=90), now=T0)
    assert await cache.claim(
        "c", expires_at=T0 + timedelta(seconds=90), now=T0 + timedelta(seconds=30)
    )


def thumbprint_by_hand(jwk: dict[str, str]) -> str:
    """RFC 7638 §3 for an EC key, written out: SHA-256 of the required members, sorted."""
    members = json.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()


def pyjwt_proof(private: ec.EllipticCurvePrivateKey, token: str, clock: FakeClock) -> str:
    """A proof made by PyJWT alone (its own JWK export and ES256 signature)."""
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    claims = {"jti": "pyjwt-1", "htm": "GET", "htu": URL, "iat": int(clock.timestamp()), "ath": ath}
    return jwt.encode(claims, private, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk})


async def test_rfc9449_4_2_a_proof_made_by_pyjwt_passes(
    build: Build, issuer: FakeIssuer, clock: FakeClock
) -> None:
    """Interop: another implementation's proof and thumbprint, not Keyturn's own."""
    device = ec.generate_private_key(ec.SECP256R1())
    jkt = thumbprint_by_hand(json.loads(ECAlgorithm.to_jwk(device.public_key())))
    token = bind_token(issuer.token(), issuer.signing_key, jkt)
    proof = pyjwt_proof(device, token, clock)
    verifier = build()

    verified = await verifier.verify(token, dpop_proof=proof, method="GET", url=URL)

    assert verified.jkt == jkt
    with pytest.raises(InvalidDPoPProofError, match="used before"):
        await verifier.verify(token, dpop_proof=proof, method="GET", url=URL)
