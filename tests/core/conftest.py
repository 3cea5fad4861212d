"""Keys for the core tests, generated once per session (RSA generation is slow)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keyturn.core.signing import SigningKey


@pytest.fixture(scope="session")
def es256_key() -> SigningKey:
    """A P-256 key bound to ES256."""
    return SigningKey.generate("ES256")


@pytest.fixture(scope="session")
def rs256_key() -> SigningKey:
    """A 2048-bit RSA key bound to RS256 (the minimum Keyturn accepts, fastest to make)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey.from_private_key(private_key)


@pytest.fixture(scope="session")
def eddsa_key() -> SigningKey:
    """An Ed25519 key bound to EdDSA."""
    return SigningKey.generate("EdDSA")


@pytest.fixture(scope="session", params=["ES256", "RS256", "EdDSA"])
def signing_key(
    request: pytest.FixtureRequest,
    es256_key: SigningKey,
    rs256_key: SigningKey,
    eddsa_key: SigningKey,
) -> SigningKey:
    """Each kind of key Keyturn signs with, in turn."""
    return {"ES256": es256_key, "RS256": rs256_key, "EdDSA": eddsa_key}[request.param]
