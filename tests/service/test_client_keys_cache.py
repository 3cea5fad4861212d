"""`loaded_public_key`: a stored public JWK is parsed once per distinct content."""

from __future__ import annotations

import pytest

from keyturn.core.signing import SigningKey
from keyturn.errors import SigningKeyError
from keyturn.service.client_keys import loaded_public_key


def test_the_same_jwk_is_parsed_once_whatever_its_member_order() -> None:
    jwk = dict(SigningKey.generate("ES256").verification_key.to_jwk())
    first = loaded_public_key(jwk)
    again = loaded_public_key(dict(reversed(list(jwk.items()))))
    assert again is first
    assert first.to_jwk()["x"] == jwk["x"]


def test_another_jwk_is_another_key() -> None:
    one = loaded_public_key(SigningKey.generate("ES256").verification_key.to_jwk())
    two = loaded_public_key(SigningKey.generate("ES256").verification_key.to_jwk())
    assert one.kid != two.kid


def test_a_bad_jwk_still_fails_every_time() -> None:
    bad = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}
    for _ in range(2):
        with pytest.raises(SigningKeyError):
            loaded_public_key(bad)
