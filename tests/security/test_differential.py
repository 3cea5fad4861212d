"""Differential test: Keyturn never accepts a token that PyJWT, the oracle, rejects.

PyJWT is configured as security.md §5.3 prescribes (``algorithms=[key.alg]``, audience,
issuer, leeway, required claims) and given the key Keyturn itself chose by ``kid``. PyJWT
reads the wall clock, so its ``datetime`` is frozen at the same ``now`` Keyturn is given.
The converse does not hold and is not wanted: Keyturn is stricter (header allowlist,
``typ``, canonical base64url, integer dates, lifetime cap).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import Any
from unittest import mock

import jwt
import jwt.api_jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyturn.core.signing import KeySet
from keyturn.core.tokens import VerifiedToken
from keyturn.errors import InvalidTokenError
from tests.security.conftest import Keys
from tests.security.forge import (
    AUDIENCE,
    DROP,
    ISSUER,
    LEEWAY,
    NOW,
    claims_at,
    encode_segment,
    forge,
    header_for,
    signed,
    signed_raw,
    verify,
    with_signature,
)
from tests.security.test_claims_time import AUD_ATTACKS, TIME_ATTACKS
from tests.security.test_jws_format import ALL_ATTACKS
from tests.security.test_properties import claim_sets, single_byte_changes

REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti"]
ORACLE_EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@contextmanager
def pyjwt_clock(now: float) -> Iterator[None]:
    """Make PyJWT's claim checks see ``now`` instead of the wall clock."""

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(now, tz)

    with mock.patch.object(jwt.api_jwt, "datetime", FrozenDatetime):
        yield


def pyjwt_accepts(token: Any, keys: KeySet, kid: str, *, now: float = NOW) -> bool:
    """Ask PyJWT, with the key Keyturn picked, whether ``token`` is valid at ``now``."""
    key = keys.get(kid)
    assert key is not None
    with pyjwt_clock(now):
        try:
            jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY,
                options={"require": REQUIRED},
            )
        except Exception:  # any refusal, typed or not, is a rejection
            return False
    return True


def keyturn_outcome(token: Any, keys: KeySet, *, now: float = NOW) -> VerifiedToken | None:
    try:
        return verify(token, keys, now=now)
    except InvalidTokenError:
        return None


def assert_oracle_agrees(token: Any, keys: KeySet, *, now: float = NOW) -> bool:
    """If Keyturn accepts ``token``, PyJWT must too; returns whether Keyturn accepted."""
    verified = keyturn_outcome(token, keys, now=now)
    if verified is None:
        return False
    assert pyjwt_accepts(token, keys, verified.kid, now=now), "Keyturn accepted what PyJWT refuses"
    return True


CORPUS = [*ALL_ATTACKS, *TIME_ATTACKS, *AUD_ATTACKS]


@pytest.mark.parametrize(("build", "expected"), CORPUS)
def test_forged_tokens(build: Any, expected: Any, keys: Keys, trusted: KeySet) -> None:
    """Every catalogue forgery is refused, so PyJWT is never overruled (it is not even asked)."""
    assert assert_oracle_agrees(build(keys), trusted) is False


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="valid"),
        pytest.param({"exp": NOW - (LEEWAY - 1)}, id="T-TIME-02-exp-within-leeway"),
        pytest.param({"nbf": NOW + LEEWAY}, id="T-TIME-04-nbf-at-leeway"),
        pytest.param({"iat": NOW + LEEWAY}, id="T-TIME-05-iat-at-leeway"),
        pytest.param({"aud": ["other", AUDIENCE]}, id="T-AUD-02-list-containing-api"),
        pytest.param({"scope": ""}, id="empty-scope"),
        pytest.param({"scope": DROP}, id="no-scope"),
    ],
)
def test_accepted_tokens_are_accepted_by_the_oracle_too(
    overrides: dict[str, Any], alg: str, keys: Keys, trusted: KeySet
) -> None:
    token = signed(keys.trusted(alg), **overrides)

    assert assert_oracle_agrees(token, trusted) is True


def test_oracle_uses_the_injected_clock(keys: Keys, trusted: KeySet) -> None:
    """Control: the frozen clock works both ways, so the oracle's verdicts are about ``now``."""
    token = signed(keys.es256)

    assert pyjwt_accepts(token, trusted, keys.es256.kid, now=NOW)
    assert not pyjwt_accepts(token, trusted, keys.es256.kid, now=NOW + 900 + LEEWAY)
    assert not pyjwt_accepts(token, trusted, keys.es256.kid, now=NOW - 3600)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda k: signed(k.es256) + "==", id="T-FMT-03-padded-signature"),
        pytest.param(lambda k: signed(k.es256, header={"typ": DROP}), id="T-TYP-01-missing"),
        pytest.param(lambda k: signed(k.es256, header={"foo": 1}), id="T-HDR-01-unknown"),
        pytest.param(
            lambda k: signed_raw(
                k.es256, json.dumps({**claims_at(), "exp": str(NOW + 900)}).encode()
            ),
            id="T-TIME-07-numeric-string",
        ),
        pytest.param(
            lambda k: signed_raw(
                k.es256, json.dumps(claims_at()).replace(str(NOW + 900), "1e300").encode()
            ),
            id="T-TIME-08-exp-1e300",
        ),
        pytest.param(lambda k: signed(k.es256, client_id=DROP), id="RFC9068-2.2-client_id-missing"),
    ],
)
def test_gaps_the_wrapper_closes(build: Any, keys: Keys, trusted: KeySet) -> None:
    """security.md Appendix A: PyJWT alone accepts these; Keyturn refuses them.

    If a PyJWT upgrade starts refusing one, the gap has closed upstream: drop the row.
    """
    token = build(keys)

    assert pyjwt_accepts(token, trusted, keys.es256.kid)
    assert keyturn_outcome(token, trusted) is None


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
@ORACLE_EXAMPLES
@given(data=st.data())
def test_mutated_tokens(alg: str, data: st.DataObject, keys: Keys, trusted: KeySet) -> None:
    token = signed(keys.trusted(alg))
    changed = data.draw(single_byte_changes(token))

    assert_oracle_agrees(changed, trusted)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
@ORACLE_EXAMPLES
@given(claims=claim_sets(), now=st.integers(min_value=NOW - 60, max_value=NOW + 1000))
def test_signed_claim_sets(
    alg: str, claims: dict[str, Any], now: int, keys: Keys, trusted: KeySet
) -> None:
    """Validly signed, near-valid claims at a moving ``now``: where most disagreements hide."""
    token = signed_raw(keys.trusted(alg), json.dumps(claims).encode())

    assert_oracle_agrees(token, trusted, now=now)


@ORACLE_EXAMPLES
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "typ", "crit", "jwk", "cty"]),
        st.sampled_from(["ES256", "RS256", "none", "at+jwt", "JWT", None, [], ["exp"], 1]),
        max_size=3,
    ),
    signature=st.sampled_from(["real", "empty-ish", "other"]),
)
def test_signed_headers(
    header: dict[str, Any], signature: str, keys: Keys, trusted: KeySet
) -> None:
    key = keys.es256
    merged = {**header_for(key), **header}
    token = forge(encode_segment(merged), claims_at(), key=key)
    if signature == "empty-ish":
        token = with_signature(token, b"\x00")
    elif signature == "other":
        token = with_signature(token, keys.attacker_es256.sign(token.rsplit(".", 1)[0].encode()))

    assert_oracle_agrees(token, trusted)


def test_the_differential_corpus_contains_accepted_tokens(keys: Keys, trusted: KeySet) -> None:
    """Control: the generated claim sets do include tokens both sides accept."""
    accepted = 0
    for alg in ("ES256", "RS256", "EdDSA"):
        for overrides in ({}, {"aud": [AUDIENCE]}, {"exp": NOW + 1}):
            accepted += assert_oracle_agrees(signed(keys.trusted(alg), **overrides), trusted)

    assert accepted == 9
