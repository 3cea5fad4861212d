"""Signing-key rotation as the core sees it: T-ROT-01..04 (security.md §2.4).

The server phases (publish, activate, retire, remove) are `KeySet` values; a verifier
learns of each through `TokenVerifier.set_keys`. JWKS fetching and its cooldown (the rest
of T-ROT-04) and concurrent key creation (T-ROT-05) belong to the client and storage.
"""

from __future__ import annotations

import pytest

from keyturn.core.signing import KeySet, SigningKey, VerificationKey
from keyturn.core.tokens import issue_access_token
from keyturn.errors import SigningKeyError, TokenSignatureError
from tests.security.conftest import Keys
from tests.security.forge import AUDIENCE, ISSUER, NOW, assert_rejected, verifier, verify


def _issue(key: SigningKey, *, now: int = NOW) -> str:
    return issue_access_token(
        key,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="key:k1",
        client_id="k1",
        now=now,
        lifetime=900,
    ).token


class MutableKeys:
    """A `KeyLookup` that changes underneath a verifier, without `set_keys` being called."""

    def __init__(self, *keys: VerificationKey) -> None:
        self.by_kid = {key.kid: key for key in keys}

    def get(self, kid: str) -> VerificationKey | None:
        return self.by_kid.get(kid)


def test_t_rot_01_retiring_key_tokens_stay_valid_during_the_overlap(keys: Keys) -> None:
    """T-ROT-01: K1 signed a token, K2 became active, K1 is still published: both verify."""
    k1, k2 = keys.es256, keys.eddsa
    old_token = _issue(k1)
    rotated = KeySet.of(k1).with_signing_key(k2)

    new_token = _issue(rotated.signing_key or k1, now=NOW + 60)

    assert rotated.signing_key is k2
    assert verify(old_token, rotated, now=NOW + 899).kid == k1.kid
    assert verify(new_token, rotated, now=NOW + 899).kid == k2.kid


def test_t_rot_01_cached_tokens_of_a_still_published_key_stay_valid(keys: Keys) -> None:
    """T-ROT-01: swapping in the rotated key set (K1 kept) does not break K1's tokens."""
    k1, k2 = keys.es256, keys.eddsa
    token = _issue(k1)
    checker = verifier(KeySet.of(k1))
    checker.verify(token)

    checker.set_keys(KeySet.of(k1).with_signing_key(k2))

    assert checker.verify(token).kid == k1.kid


def test_t_rot_02_token_of_a_removed_key_is_rejected(keys: Keys) -> None:
    """T-ROT-02: once K1 leaves the key set, its unexpired tokens are refused."""
    k1, k2 = keys.es256, keys.eddsa
    token = _issue(k1)
    after = KeySet.of(k1).with_signing_key(k2).without(k1.kid)

    assert k1.kid not in after
    assert_rejected(token, after, TokenSignatureError)


def test_t_rot_02_cached_token_of_a_removed_key_is_rejected_after_set_keys(keys: Keys) -> None:
    """T-ROT-02: a verified-and-cached token dies with its key when the set is replaced."""
    k1, k2 = keys.es256, keys.eddsa
    token = _issue(k1)
    checker = verifier(KeySet.of(k1).with_signing_key(k2))
    checker.verify(token)
    assert checker.cache is not None
    assert len(checker.cache) == 1

    checker.set_keys(KeySet.of(k2))

    assert len(checker.cache) == 0
    with pytest.raises(TokenSignatureError):
        checker.verify(token)


def test_t_rot_02_cached_token_of_a_removed_key_is_rejected_without_set_keys(keys: Keys) -> None:
    """T-ROT-02: even if the lookup changes behind the verifier's back, the cache re-checks kid."""
    k1 = keys.es256
    lookup = MutableKeys(k1.verification_key, keys.eddsa.verification_key)
    token = _issue(k1)
    checker = verifier(lookup)
    checker.verify(token)

    del lookup.by_kid[k1.kid]

    with pytest.raises(TokenSignatureError):
        checker.verify(token)


def test_t_rot_02_emergency_removal_of_the_active_key_needs_a_successor(keys: Keys) -> None:
    """T-ROT-02: the active key cannot just be dropped; activate another, then remove it."""
    k1, k2 = keys.es256, keys.eddsa
    current = KeySet.of(k1)

    with pytest.raises(SigningKeyError):
        current.without(k1.kid)

    recovered = current.with_signing_key(k2).without(k1.kid)
    assert recovered.kids == {k2.kid}
    assert recovered.signing_key is k2


def test_t_rot_03_jwks_at_each_rotation_phase(keys: Keys) -> None:
    """T-ROT-03 (core half): the published kids are exactly right at every phase."""
    k1, k2 = keys.es256, keys.eddsa

    def published(key_set: KeySet) -> set[str]:
        return {jwk["kid"] for jwk in key_set.jwks()["keys"]}

    active = KeySet.of(k1)
    pending = KeySet.of(k1, k2.verification_key)  # K2 published before it signs
    switched = pending.with_signing_key(k2)  # K1 retiring, still published
    removed = switched.without(k1.kid)

    assert published(active) == {k1.kid}
    assert published(pending) == {k1.kid, k2.kid}
    assert pending.signing_key is k1
    assert published(switched) == {k1.kid, k2.kid}
    assert switched.signing_key is k2
    assert published(removed) == {k2.kid}


def test_t_rot_04_verifier_accepts_a_new_key_once_told_of_it(keys: Keys) -> None:
    """T-ROT-04 (core half): an unknown kid is refused until `set_keys` brings the new key."""
    k1, k2 = keys.es256, keys.eddsa
    token = _issue(k2)
    checker = verifier(KeySet.of(k1))

    with pytest.raises(TokenSignatureError):
        checker.verify(token)

    checker.set_keys(KeySet.of(k1).with_signing_key(k2))

    assert checker.verify(token).kid == k2.kid
