"""JWThenticator 1.6.3's tokens, accepted only under its key's JWThenticator kid."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from keyturn.core.jwthenticator_tokens import (
    JWTHENTICATOR_CLIENT_ID,
    is_jwthenticator_key,
    jwthenticator_kid,
)
from keyturn.core.signing import KeySet, SigningKey, VerificationKey
from keyturn.core.tokens import TokenVerifier, issue_access_token
from keyturn.errors import (
    ExpiredTokenError,
    InvalidTokenError,
    TokenClaimsError,
    TokenSignatureError,
)

NOW = 1_700_000_000
LEASE = 25 * 3600  # JWThenticator's default JWT_LEASE_TIME
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DER = RSA_KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
#: As jwthenticator.utils.calculate_key_signature computes it, spelled independently.
LEGACY_KID = base64.urlsafe_b64encode(hashlib.sha1(DER).digest()).rstrip(b"=").decode()  # noqa: S324
IDENTIFIER = str(uuid.UUID(int=42))
LEGACY_KEY = VerificationKey.from_public_key(RSA_KEY.public_key(), alg="RS256", kid=LEGACY_KID)
CURRENT = SigningKey.from_private_key(RSA_KEY)  # the same key under its RFC 7638 thumbprint


def jwthenticator_token(**changes: Any) -> str:
    """A token as JWThenticator 1.6.3 makes it (TokenManager.create_access_token)."""
    claims: dict[str, Any] = {
        "token_id": str(uuid.uuid4()),
        "identifier": IDENTIFIER,
        "iat": NOW,
        "exp": NOW + LEASE,
    }
    kid = changes.pop("kid", LEGACY_KID)
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": kid})


def verifier(*keys: VerificationKey, **options: Any) -> TokenVerifier:
    key_set = KeySet.of(CURRENT, *keys)
    options.setdefault("max_lifetime", 900)  # a Keyturn deployment's own 15 minutes
    return TokenVerifier(
        key_set, issuer="https://kt.test", audience="api", clock=lambda: NOW + 60, **options
    )


def test_the_kid_is_jwthenticators() -> None:
    assert jwthenticator_kid(RSA_KEY.public_key()) == LEGACY_KID
    assert is_jwthenticator_key(LEGACY_KEY)
    assert not is_jwthenticator_key(CURRENT.verification_key)


def test_a_25_hour_token_passes_under_the_legacy_kid() -> None:
    token = jwthenticator_token()

    verified = verifier(LEGACY_KEY).verify(token)

    assert verified.subject == IDENTIFIER
    assert verified.identifier == IDENTIFIER
    assert verified.client_id == JWTHENTICATOR_CLIENT_ID
    assert verified.expires_at == NOW + LEASE
    assert verified.scopes == frozenset()
    assert verified.kid == LEGACY_KID


def test_without_the_legacy_kid_published_it_is_refused() -> None:
    with pytest.raises(InvalidTokenError):
        verifier().verify(jwthenticator_token())


def test_a_keyturn_kid_never_vouches_for_the_jwthenticator_shape() -> None:
    with pytest.raises(InvalidTokenError):
        verifier(LEGACY_KEY).verify(jwthenticator_token(kid=CURRENT.kid))


def test_the_profile_can_be_turned_off() -> None:
    with pytest.raises(TokenClaimsError):
        verifier(LEGACY_KEY, jwthenticator_tokens=False).verify(jwthenticator_token())


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"exp": NOW - 3600, "iat": NOW - 7200}, ExpiredTokenError, id="expired"),
        pytest.param({"exp": NOW + 172_801}, TokenClaimsError, id="over-two-days"),
        pytest.param({"identifier": None}, TokenClaimsError, id="no-identifier"),
        pytest.param({"token_id": 7}, TokenClaimsError, id="token-id-not-text"),
        pytest.param({"aud": ["other"]}, TokenClaimsError, id="other-audience"),
        pytest.param({"iat": "now"}, TokenClaimsError, id="iat-not-integer"),
    ],
)
def test_bad_claims_are_refused(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        verifier(LEGACY_KEY).verify(jwthenticator_token(**changes))


def test_the_configured_audience_is_accepted() -> None:
    assert verifier(LEGACY_KEY).verify(jwthenticator_token(aud=["api", "x"])).subject == IDENTIFIER


def test_another_keys_signature_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"token_id": "t", "identifier": IDENTIFIER, "iat": NOW, "exp": NOW + 60},
        other,
        algorithm="RS256",
        headers={"kid": LEGACY_KID},
    )

    with pytest.raises(TokenSignatureError):
        verifier(LEGACY_KEY).verify(forged)


def test_keyturn_tokens_still_verify_beside_the_legacy_key() -> None:
    issued = issue_access_token(
        CURRENT,
        issuer="https://kt.test",
        audience="api",
        subject="key:k1",
        client_id="k1",
        now=NOW,
        lifetime=900,
        scopes=(),
    )

    assert verifier(LEGACY_KEY).verify(issued.token).subject == "key:k1"
