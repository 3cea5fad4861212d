"""Time claims and audience/issuer binding: T-TIME and T-AUD (security.md §2.2, §2.3).

Every token is really signed by a trusted key, so the claim under test is the only flaw.
Time moves by passing ``now``; the leeway is 30 s unless a test says otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from keyturn.core.signing import KeySet, SigningKey
from keyturn.core.tokens import issue_access_token
from keyturn.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidTokenError,
    PolicyViolation,
    TokenClaimsError,
    TokenSignatureError,
)
from tests.security.conftest import Keys
from tests.security.forge import (
    AUDIENCE,
    DROP,
    ISSUER,
    LEEWAY,
    NOW,
    assert_rejected,
    claims_at,
    signed,
    signed_raw,
    verify,
)

Build = Callable[[Keys], Any]
TEN_YEARS = 10 * 365 * 86_400


def _raw_claim(name: str, literal: str) -> Build:
    """A signed token whose claim ``name`` is the raw JSON text ``literal``."""

    def build(keys: Keys) -> str:
        text = json.dumps(claims_at(**{name: "@@"})).replace('"@@"', literal)
        return signed_raw(keys.es256, text.encode())

    return build


def _claims(**overrides: Any) -> Build:
    return lambda keys: signed(keys.es256, **overrides)


TIME_ATTACKS = [
    pytest.param(
        _claims(exp=NOW - LEEWAY - 1), ExpiredTokenError, id="T-TIME-01-exp-past-beyond-leeway"
    ),
    pytest.param(_claims(exp=NOW - LEEWAY), ExpiredTokenError, id="T-TIME-02-exp-now-minus-leeway"),
    pytest.param(
        _claims(exp=NOW - (LEEWAY + 1)),
        ExpiredTokenError,
        id="T-TIME-02-exp-now-minus-leeway-plus-1",
    ),
    pytest.param(_claims(nbf=NOW + 3600), ImmatureTokenError, id="T-TIME-04-nbf-in-an-hour"),
    pytest.param(
        _claims(nbf=NOW + LEEWAY + 1), ImmatureTokenError, id="T-TIME-04-nbf-leeway-plus-1"
    ),
    pytest.param(
        _claims(iat=NOW + 3600, exp=NOW + 4000), ImmatureTokenError, id="T-TIME-05-iat-in-an-hour"
    ),
    pytest.param(
        _claims(iat=NOW + LEEWAY + 1), ImmatureTokenError, id="T-TIME-05-iat-leeway-plus-1"
    ),
    *[
        pytest.param(_raw_claim(name, literal), expected, id=f"T-TIME-07-{name}-{label}")
        for name in ["exp", "nbf", "iat"]
        for literal, label, expected in [
            ('"9999999999"', "numeric-string", TokenClaimsError),
            ("true", "true", TokenClaimsError),
            ("false", "false", TokenClaimsError),
            ("null", "null", TokenClaimsError),
            ("[]", "array", TokenClaimsError),
            ("{}", "object", TokenClaimsError),
            ("1700000900.5", "fraction", TokenClaimsError),
            ("1.7e9", "exponent", TokenClaimsError),
            ("1e400", "1e400", TokenClaimsError),
            ("NaN", "NaN", InvalidTokenError),
            ("Infinity", "Infinity", InvalidTokenError),
            ("-Infinity", "minus-Infinity", InvalidTokenError),
            ("1" * 5000, "5000-digits", InvalidTokenError),
        ]
    ],
    pytest.param(_raw_claim("exp", "1e300"), TokenClaimsError, id="T-TIME-08-exp-1e300"),
    pytest.param(_claims(exp=NOW + TEN_YEARS), TokenClaimsError, id="T-TIME-08-exp-in-ten-years"),
    pytest.param(_claims(exp=10**30), TokenClaimsError, id="T-TIME-08-exp-10-to-the-30"),
    pytest.param(_claims(iat=NOW - TEN_YEARS), TokenClaimsError, id="T-TIME-08-iat-ten-years-ago"),
]

AUD_ATTACKS = [
    pytest.param(_claims(aud="other-api"), TokenClaimsError, id="T-AUD-01-another-audience"),
    pytest.param(_claims(aud=["other-api"]), TokenClaimsError, id="T-AUD-01-another-audience-list"),
    pytest.param(_claims(aud=DROP), TokenClaimsError, id="T-AUD-02-missing"),
    pytest.param(_claims(aud=[]), TokenClaimsError, id="T-AUD-02-empty-list"),
    pytest.param(_claims(aud=123), TokenClaimsError, id="T-AUD-02-number"),
    pytest.param(_claims(aud=None), TokenClaimsError, id="T-AUD-02-null"),
    pytest.param(_claims(aud=[["api"]]), TokenClaimsError, id="T-AUD-02-nested-list"),
    pytest.param(_claims(aud={"api": True}), TokenClaimsError, id="T-AUD-02-object"),
    pytest.param(_claims(aud="API"), TokenClaimsError, id="T-AUD-02-other-case"),
    pytest.param(_claims(aud="api "), TokenClaimsError, id="T-AUD-02-trailing-space"),
    pytest.param(_claims(aud="ap"), TokenClaimsError, id="T-AUD-02-substring"),
    pytest.param(_claims(aud=["api", 1]), TokenClaimsError, id="T-AUD-02-list-with-a-number"),
    *[
        pytest.param(_claims(iss=iss), TokenClaimsError, id=f"T-AUD-03-iss-{label}")
        for iss, label in [
            ("https://kt.example.evil", "suffix-domain"),
            ("https://kt.evil", "other-domain"),
            ("https://kt.example/", "trailing-slash"),
            ("HTTPS://KT.EXAMPLE", "upper-case"),
            ("https://kt.exampl", "substring"),
            ("https://kt.example ", "trailing-space"),
            ("https://\uff4bt.example", "fullwidth-k"),
            (["https://kt.example"], "list"),
            (None, "null"),
            (DROP, "missing"),
        ]
    ],
]


@pytest.mark.parametrize(("build", "expected"), TIME_ATTACKS)
def test_time_claim_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    token = build(keys)
    if expected is InvalidTokenError:  # refused by the JSON parser or the type check
        with pytest.raises(InvalidTokenError):
            verify(token, trusted)
    else:
        assert_rejected(token, trusted, expected)


@pytest.mark.parametrize(("build", "expected"), AUD_ATTACKS)
def test_audience_and_issuer_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    assert_rejected(build(keys), trusted, expected)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": NOW - (LEEWAY - 1)}, id="T-TIME-02-exp-within-leeway"),
        pytest.param({"exp": NOW}, id="T-TIME-03-exp-now-within-leeway"),
        pytest.param({"nbf": NOW + LEEWAY}, id="T-TIME-04-nbf-at-leeway"),
        pytest.param({"nbf": NOW - 1}, id="T-TIME-04-nbf-past"),
        pytest.param({"iat": NOW + LEEWAY}, id="T-TIME-05-iat-at-leeway"),
        pytest.param({"aud": ["other", "api"]}, id="T-AUD-02-list-containing-api"),
        pytest.param({"aud": ["api"]}, id="T-AUD-02-one-element-list"),
    ],
)
def test_boundary_cases_are_accepted(
    overrides: dict[str, Any], keys: Keys, trusted: KeySet
) -> None:
    verified = verify(signed(keys.es256, **overrides), trusted)

    assert verified.subject == "key:k1"


def test_t_time_01_expired_one_second_ago_without_leeway(keys: Keys, trusted: KeySet) -> None:
    """T-TIME-01: with no leeway configured, ``exp = now - 1`` is expired."""
    token = signed(keys.es256, exp=NOW - 1)

    with pytest.raises(ExpiredTokenError):
        verify(token, trusted, leeway=0)


def test_t_time_03_exp_equal_to_now_is_rejected_without_leeway(keys: Keys, trusted: KeySet) -> None:
    """T-TIME-03: RFC 7519 §4.1.4 says now must be *before* exp, so exp == now fails."""
    token = signed(keys.es256, iat=NOW - 60, exp=NOW)

    with pytest.raises(ExpiredTokenError):
        verify(token, trusted, leeway=0)
    assert verify(token, trusted, now=NOW - 1, leeway=0).expires_at == NOW


@pytest.mark.parametrize(
    ("issuer_offset", "accepted"),
    [
        pytest.param(LEEWAY - 1, True, id="T-TIME-06-issuer-ahead-within-leeway"),
        pytest.param(LEEWAY, True, id="T-TIME-06-issuer-ahead-by-leeway"),
        pytest.param(LEEWAY + 1, False, id="T-TIME-06-issuer-ahead-beyond-leeway"),
    ],
)
def test_issuer_clock_ahead_of_verifier(
    issuer_offset: int, accepted: bool, keys: Keys, trusted: KeySet
) -> None:
    """T-TIME-06 (core half): a token from an instance whose clock runs ahead by the offset."""
    issued = issue_access_token(
        keys.es256,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="key:k1",
        client_id="k1",
        now=NOW + issuer_offset,
        lifetime=900,
    )

    if accepted:
        assert verify(issued.token, trusted, now=NOW).jti == issued.jti
    else:
        with pytest.raises(ImmatureTokenError):
            verify(issued.token, trusted, now=NOW)


@pytest.mark.parametrize(
    ("verifier_offset", "accepted"),
    [
        pytest.param(900 + LEEWAY - 1, True, id="T-TIME-06-verifier-ahead-within-leeway"),
        pytest.param(900 + LEEWAY, False, id="T-TIME-06-verifier-ahead-by-leeway"),
    ],
)
def test_verifier_clock_ahead_of_issuer(
    verifier_offset: int, accepted: bool, keys: Keys, trusted: KeySet
) -> None:
    """T-TIME-06 (core half): a 900 s token checked by a verifier whose clock runs ahead."""
    token = signed(keys.es256)

    if accepted:
        assert verify(token, trusted, now=NOW + verifier_offset).subject == "key:k1"
    else:
        with pytest.raises(ExpiredTokenError):
            verify(token, trusted, now=NOW + verifier_offset)


@pytest.mark.parametrize(
    ("lifetime", "accepted"),
    [
        pytest.param(172_800, True, id="T-TIME-08-lifetime-at-maximum"),
        pytest.param(172_801, False, id="T-TIME-08-lifetime-over-maximum"),
    ],
)
def test_lifetime_limit(lifetime: int, accepted: bool, keys: Keys, trusted: KeySet) -> None:
    """T-TIME-08: ``exp - iat`` may not exceed the verifier's maximum (default two days,
    what a server may issue)."""
    token = signed(keys.es256, exp=NOW + lifetime)

    if accepted:
        assert verify(token, trusted).expires_at == NOW + lifetime
    else:
        with pytest.raises(TokenClaimsError):
            verify(token, trusted)


@pytest.mark.parametrize(
    "lifetime",
    [
        pytest.param(0, id="T-TIME-09-zero"),
        pytest.param(-1, id="T-TIME-09-negative"),
        pytest.param(900.0, id="T-TIME-09-float"),
        pytest.param(1e20, id="T-TIME-09-1e20"),
        pytest.param(math.nan, id="T-TIME-09-NaN"),
        pytest.param(math.inf, id="T-TIME-09-infinity"),
        pytest.param(True, id="T-TIME-09-bool"),
        pytest.param("900", id="T-TIME-09-string"),
    ],
)
def test_issuing_with_an_unusable_lifetime_is_refused(lifetime: Any, keys: Keys) -> None:
    """T-TIME-09 (core half): a bad TTL is a PolicyViolation, never an OverflowError."""
    with pytest.raises(PolicyViolation) as exc_info:
        issue_access_token(
            keys.es256,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject="key:k1",
            client_id="k1",
            now=NOW,
            lifetime=lifetime,
        )

    assert exc_info.value.claim == "exp"


def test_t_aud_04_token_from_another_deployment_is_rejected(keys: Keys, trusted: KeySet) -> None:
    """T-AUD-04: same claims and kid format, but signed by a key this verifier never trusted."""
    other_deployment = SigningKey.generate("ES256")

    assert_rejected(signed(other_deployment), trusted, TokenSignatureError)


def test_t_aud_04_same_key_but_another_issuer_is_rejected(keys: Keys, trusted: KeySet) -> None:
    """T-AUD-04: the key set is bound to one issuer; a token naming another is refused."""
    token = signed(keys.es256, iss="https://kt-staging.example")

    assert_rejected(token, trusted, TokenClaimsError)
    assert verify(token, trusted, issuer="https://kt-staging.example").subject == "key:k1"
