"""Keys for the security suite: generated once per session (RSA generation is slow)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyturn.core.signing import KeySet, SigningKey


@dataclass(frozen=True)
class Keys:
    """The trusted keys of one deployment and an attacker's keys."""

    es256: SigningKey
    rs256: SigningKey
    eddsa: SigningKey
    attacker_es256: SigningKey
    attacker_rs256: SigningKey
    attacker_eddsa: SigningKey
    attacker_p384: ec.EllipticCurvePrivateKey

    def trusted(self, alg: str) -> SigningKey:
        """The deployment's key for ``alg``."""
        return {"ES256": self.es256, "RS256": self.rs256, "EdDSA": self.eddsa}[alg]

    def attacker(self, alg: str) -> SigningKey:
        """The attacker's key for ``alg``."""
        return {
            "ES256": self.attacker_es256,
            "RS256": self.attacker_rs256,
            "EdDSA": self.attacker_eddsa,
        }[alg]


def _rsa_2048() -> SigningKey:
    return SigningKey.from_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )


@pytest.fixture(scope="session")
def keys() -> Keys:
    """One ES256, RS256 (2048-bit) and EdDSA key for us, the same again for an attacker."""
    return Keys(
        es256=SigningKey.generate("ES256"),
        rs256=_rsa_2048(),
        eddsa=SigningKey.generate("EdDSA"),
        attacker_es256=SigningKey.generate("ES256"),
        attacker_rs256=_rsa_2048(),
        attacker_eddsa=SigningKey.generate("EdDSA"),
        attacker_p384=ec.generate_private_key(ec.SECP384R1()),
    )


@pytest.fixture(scope="session")
def trusted(keys: Keys) -> KeySet:
    """The deployment's key set: ES256 active, RS256 and EdDSA verify-only."""
    return KeySet.of(keys.es256, keys.rs256.verification_key, keys.eddsa.verification_key)


@pytest.fixture(scope="session", params=["ES256", "RS256", "EdDSA"])
def alg(request: pytest.FixtureRequest) -> str:
    """Each algorithm Keyturn signs with."""
    return str(request.param)
