"""Shared by the integration tests: a key, an offline verifier, and a token factory."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from keyturn.core.signing import KeySet, SigningKey
from keyturn.core.tokens import VerifiedToken, issue_access_token
from keyturn.errors import VerifierUnavailableError
from keyturn.testing import FakeClock
from keyturn.verify import OfflineVerifier

ISSUER = "https://auth.example.com"
AUDIENCE = "orders-api"
MakeToken = Callable[..., str]


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(signing_key: SigningKey, clock: FakeClock) -> OfflineVerifier:
    return OfflineVerifier(
        KeySet.of(signing_key), issuer=ISSUER, audience=AUDIENCE, clock=clock.timestamp
    )


@pytest.fixture
def make_token(signing_key: SigningKey, clock: FakeClock) -> MakeToken:
    def make(
        scopes: Iterable[str] = ("orders:read",),
        *,
        subject: str = "key:k1",
        key: SigningKey | None = None,
        lifetime: int = 900,
    ) -> str:
        return issue_access_token(
            key or signing_key,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=subject,
            client_id="k1",
            now=int(clock.timestamp()),
            lifetime=lifetime,
            scopes=scopes,
        ).token

    return make


class DownVerifier:
    """A verifier whose keys cannot be fetched: every call is an outage."""

    async def verify(self, token: str, *, required_scopes: Iterable[str] = ()) -> VerifiedToken:
        raise VerifierUnavailableError("the JWKS endpoint answered HTTP 502", retry_after=7)
