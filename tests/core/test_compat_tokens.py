"""The api-jwt token profile: PyJWT's wire format, checked as strictly as it allows."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keyturn.core.compat_tokens import LEGACY_HEADER, issue_legacy_token, verify_legacy_token
from keyturn.core.signing import SigningKey, VerificationKey
from keyturn.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    MalformedTokenError,
    SigningKeyError,
    TokenClaimsError,
    TokenSignatureError,
)

NOW = 1_700_000_000
CLAIMS = {"iss": "auth_user", "sub": "user@domain.com", "exp": NOW + 60, "level": "1.0"}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY = SigningKey.from_private_key(RSA_KEY)
OTHER = SigningKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
ES256 = SigningKey.generate("ES256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: bytes, payload: bytes) -> str:
    """A token signed by hand with the trusted key, for what PyJWT will not write."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    return f"{signing_input}.{b64(KEY.sign(signing_input.encode()))}"


def pyjwt_token(claims: dict[str, Any] | None = None, **headers: Any) -> str:
    """A token signed by PyJWT, as api-jwt makes them, with extra header members."""
    return jwt.encode(
        CLAIMS if claims is None else claims, RSA_KEY, algorithm="RS256", headers=headers or None
    )


def verify(token: str, **options: Any) -> Any:
    options.setdefault("keys", [KEY.verification_key])
    options.setdefault("now", NOW)
    return verify_legacy_token(token, **options)


def test_issued_token_is_the_one_pyjwt_makes() -> None:
    token = issue_legacy_token(KEY, CLAIMS | {"name": "Åse"})

    assert token == jwt.encode(CLAIMS | {"name": "Åse"}, RSA_KEY, algorithm="RS256")
    assert base64.urlsafe_b64decode(token.split(".")[0] + "=") == LEGACY_HEADER


def test_verified_token_reports_subject_expiry_key_and_claims() -> None:
    verified = verify(pyjwt_token())

    assert (verified.subject, verified.expires_at, verified.kid) == (
        "user@domain.com",
        NOW + 60,
        KEY.kid,
    )
    assert verified.claims == CLAIMS


def test_each_configured_key_is_tried() -> None:
    keys = [OTHER.verification_key, ES256.verification_key, KEY.verification_key]

    assert verify(pyjwt_token(), keys=keys).kid == KEY.kid


def test_a_kid_selects_the_one_key_to_try() -> None:
    assert verify(pyjwt_token(kid=KEY.kid)).kid == KEY.kid
    with pytest.raises(TokenSignatureError):
        verify(pyjwt_token(kid="someone-else"))


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        pytest.param({"jku": "https://attacker.example/jwks"}, MalformedTokenError, id="jku"),
        pytest.param({"crit": ["exp"]}, MalformedTokenError, id="crit"),
        pytest.param({"x5u": "https://attacker.example/cert"}, MalformedTokenError, id="x5u"),
        pytest.param({"typ": "at+jwt"}, TokenClaimsError, id="typ-at-jwt"),
        pytest.param({"typ": 1}, TokenClaimsError, id="typ-not-a-string"),
    ],
)
def test_header_outside_the_allowlist_is_refused(
    headers: dict[str, Any], error: type[Exception]
) -> None:
    """Each token is correctly signed: only the header check can refuse it."""
    with pytest.raises(error):
        verify(pyjwt_token(**headers))


def test_non_string_kid_is_refused() -> None:
    """PyJWT will not write this header, so the token is signed by hand."""
    token = signed(b'{"alg":"RS256","typ":"JWT","kid":7}', json.dumps(CLAIMS).encode())

    with pytest.raises(MalformedTokenError, match="kid"):
        verify(token)


def test_typ_may_be_absent_or_any_case_of_jwt() -> None:
    no_typ = jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256", headers={"typ": None})

    assert verify(no_typ).subject == "user@domain.com"
    assert verify(pyjwt_token(typ="jwt")).subject == "user@domain.com"


def test_only_rs256_is_accepted() -> None:
    es256 = jwt.encode(CLAIMS, ES256.private_key, algorithm="ES256")

    with pytest.raises(TokenSignatureError):
        verify(es256, keys=[ES256.verification_key])


def test_an_untrusted_key_is_refused() -> None:
    with pytest.raises(TokenSignatureError):
        verify(issue_legacy_token(OTHER, CLAIMS))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"exp": NOW}, ExpiredTokenError, id="exp-now"),
        pytest.param({"exp": None}, TokenClaimsError, id="exp-null"),
        pytest.param({"exp": NOW + 60.0}, TokenClaimsError, id="exp-float"),
        pytest.param({"exp": True}, TokenClaimsError, id="exp-bool"),
        pytest.param({"nbf": NOW + 1}, ImmatureTokenError, id="nbf-future"),
        pytest.param({"iat": NOW + 1}, ImmatureTokenError, id="iat-future"),
        pytest.param({"iat": "0"}, TokenClaimsError, id="iat-string"),
        pytest.param({"sub": None}, TokenClaimsError, id="sub-null"),
        pytest.param({"sub": "x" * 256}, TokenClaimsError, id="sub-too-long"),
        pytest.param({"iss": 1}, TokenClaimsError, id="iss-number"),
        pytest.param({"aud": "api"}, TokenClaimsError, id="unexpected-aud"),
    ],
)
def test_claims_are_checked(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        verify(issue_legacy_token(KEY, CLAIMS | changes))


def test_missing_exp_is_refused() -> None:
    claims = {name: value for name, value in CLAIMS.items() if name != "exp"}

    with pytest.raises(TokenClaimsError, match="exp"):
        verify(issue_legacy_token(KEY, claims))


def test_leeway_extends_exp() -> None:
    token = issue_legacy_token(KEY, CLAIMS)

    assert verify(token, now=NOW + 60, leeway=1).subject == "user@domain.com"
    with pytest.raises(ValueError, match="leeway"):
        verify(token, leeway=301)


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        pytest.param("aud", True, id="string"),
        pytest.param(["other", "aud"], True, id="in-list"),
        pytest.param("other", False, id="other"),
        pytest.param(None, False, id="absent"),
    ],
)
def test_configured_audience_is_required(aud: Any, accepted: bool) -> None:
    claims = CLAIMS if aud is None else CLAIMS | {"aud": aud}
    token = issue_legacy_token(KEY, claims)

    if accepted:
        assert verify(token, audience="aud").claims["aud"] == aud
    else:
        with pytest.raises(TokenClaimsError):
            verify(token, audience="aud")


def test_duplicate_claims_are_refused() -> None:
    """RFC 7519 §4: a JWT with duplicate claim names may be rejected; Keyturn does."""
    token = signed(LEGACY_HEADER, b'{"sub":"a","sub":"b","exp":1800000000}')

    with pytest.raises(MalformedTokenError):
        verify(token)


def test_only_rsa_keys_issue_legacy_tokens() -> None:
    with pytest.raises(SigningKeyError):
        issue_legacy_token(ES256, CLAIMS)


def test_non_json_claims_are_refused() -> None:
    with pytest.raises(ValueError, match="JSON"):
        issue_legacy_token(KEY, CLAIMS | {"level": float("nan")})
    with pytest.raises(ValueError, match="JSON"):
        issue_legacy_token(KEY, CLAIMS | {"level": {1, 2}})


def test_verification_keys_from_pem_work() -> None:
    key = VerificationKey.from_pem(KEY.verification_key.public_pem())

    assert json.loads(json.dumps(dict(verify(pyjwt_token(), keys=[key]).claims))) == CLAIMS
