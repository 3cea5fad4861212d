"""private_key_jwt assertions (RFC 7523 §2.2 / §3) and client public keys: the pure rules.

Each test names the rule it checks; the attacks (alg ``none``, HS256 with the public key
as the HMAC secret, another client's assertion, a private key offered for registration)
are here too. The replay rule (``jti`` single use) needs storage: tests/server.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

import pytest

from keyturn.core.assertions import (
    MAX_ASSERTION_LIFETIME,
    assertion_client_id,
    load_client_public_key,
    verify_client_assertion,
)
from keyturn.core.signing import SigningKey
from keyturn.errors import InvalidClientError, SigningKeyError
from tests.security.forge import DROP, b64, forge

NOW: Final = 1_800_000_000
LEEWAY: Final = 30
CLIENT: Final = "AbCdEfGh01234567"
OTHER: Final = "ZyXwVuTs76543210"
ISSUER: Final = "https://kt.example"
TOKEN_ENDPOINT: Final = "https://kt.example/v1/token"
DEVICE: Final = SigningKey.generate("ES256")
ED_DEVICE: Final = SigningKey.generate("EdDSA")


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": ISSUER,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "a1b2c3",
    }
    merged = {**base, **overrides}
    return {k: v for k, v in merged.items() if v is not DROP}


def sign(payload: dict[str, Any], key: SigningKey = DEVICE, **header: Any) -> str:
    head = {k: v for k, v in {"alg": key.alg, "typ": "JWT", **header}.items() if v is not DROP}
    return forge(head, payload, key=key)


def check(assertion: str, *, keys: list[SigningKey] | None = None, client: str = CLIENT) -> Any:
    return verify_client_assertion(
        assertion,
        client_id=client,
        keys=[k.verification_key for k in keys or [DEVICE]],
        audiences=(ISSUER, TOKEN_ENDPOINT),
        now=NOW,
        leeway=LEEWAY,
    )


def test_rfc7523_3_a_valid_assertion_passes_and_names_its_jti_and_key() -> None:
    verified = check(sign(claims()))
    assert (verified.client_id, verified.jti, verified.expires_at) == (CLIENT, "a1b2c3", NOW + 60)
    assert verified.kid == DEVICE.kid
    # The replay id depends on client and jti, so one client cannot burn another's jti.
    other = check(sign(claims(iss=OTHER, sub=OTHER)), client=OTHER)
    assert verified.replay_id != other.replay_id


def test_rfc7523_3_eddsa_keys_work_too() -> None:
    assert check(sign(claims(), key=ED_DEVICE), keys=[DEVICE, ED_DEVICE]).kid == ED_DEVICE.kid


@pytest.mark.parametrize("aud", [ISSUER, TOKEN_ENDPOINT, [TOKEN_ENDPOINT, "x"]])
def test_rfc7523_3_aud_the_issuer_or_the_token_endpoint(aud: Any) -> None:
    check(sign(claims(aud=aud)))


@pytest.mark.parametrize("aud", ["https://evil.example", [], ["x"], DROP, 5])
def test_rfc7523_3_wrong_aud_is_refused(aud: Any) -> None:
    with pytest.raises(InvalidClientError, match="aud"):
        check(sign(claims(aud=aud)))


@pytest.mark.parametrize(
    "changes",
    [{"iss": OTHER}, {"sub": OTHER}, {"iss": DROP}, {"sub": DROP}],
    ids=["iss", "sub", "no-iss", "no-sub"],
)
def test_rfc7523_3_iss_and_sub_must_be_the_client_id(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidClientError, match="iss and sub"):
        check(sign(claims(**changes)))


def test_rfc7523_3_an_assertion_for_another_client_is_refused() -> None:
    # Signed by the device of CLIENT, presented as OTHER's: OTHER's keys do not verify it.
    assertion = sign(claims(iss=OTHER, sub=OTHER))
    other_device = SigningKey.generate("ES256")
    with pytest.raises(InvalidClientError, match="invalid"):
        check(assertion, keys=[other_device], client=OTHER)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exp": DROP}, "numeric 'exp'"),
        ({"exp": "soon"}, "numeric 'exp'"),
        ({"exp": NOW - LEEWAY}, "expired"),
        ({"exp": NOW + MAX_ASSERTION_LIFETIME + LEEWAY + 1}, "ahead"),
        ({"iat": NOW + LEEWAY + 1}, "iat is in the future"),
        ({"nbf": NOW + LEEWAY + 1}, "nbf is in the future"),
        ({"jti": DROP}, "jti"),
        ({"jti": ""}, "jti"),
        ({"jti": "x" * 257}, "jti"),
    ],
    ids=["no-exp", "exp-string", "expired", "exp-far", "iat-future", "nbf-future", "no-jti",
         "empty-jti", "long-jti"],
)  # fmt: skip
def test_rfc7523_3_time_claims_and_jti(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidClientError, match=message):
        check(sign(claims(**changes)))


def test_rfc7523_3_exp_within_leeway_and_limit_passes() -> None:
    check(sign(claims(exp=NOW - LEEWAY + 1, iat=NOW - 60)))
    check(sign(claims(exp=NOW + MAX_ASSERTION_LIFETIME, iat=NOW + LEEWAY)))


def test_attack_alg_none_is_refused() -> None:
    unsigned = forge({"alg": "none", "typ": "JWT"}, claims(), b"")
    with pytest.raises(InvalidClientError, match="invalid"):
        check(unsigned)


def test_attack_hs256_with_the_public_key_as_secret_is_refused() -> None:
    header, payload = b64(b'{"alg":"HS256","typ":"JWT"}'), forge({}, claims()).split(".")[1]
    for secret in (DEVICE.verification_key.public_pem(), str(DEVICE.verification_key.to_jwk())):
        raw = secret if isinstance(secret, bytes) else secret.encode()
        mac = hmac.new(raw, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidClientError, match="invalid"):
            check(f"{header}.{payload}.{b64(mac)}")


def test_rfc8725_3_1_the_algorithm_is_the_keys_not_the_headers() -> None:
    # A valid ES256 signature under a header that names another algorithm is refused.
    with pytest.raises(InvalidClientError, match="invalid"):
        check(sign(claims(), alg="EdDSA"))


@pytest.mark.parametrize("typ", ["at+jwt", "dpop+jwt"])
def test_rfc8725_3_11_other_jwt_types_are_not_assertions(typ: str) -> None:
    with pytest.raises(InvalidClientError, match="invalid"):
        check(sign(claims(), typ=typ))


def test_a_header_with_unknown_members_is_refused() -> None:
    with pytest.raises(InvalidClientError, match="invalid"):
        check(sign(claims(), jku="https://evil.example/jwks"))


def test_a_kid_selects_the_key_and_an_unknown_kid_tries_them_all() -> None:
    assert check(sign(claims(), kid=DEVICE.kid), keys=[ED_DEVICE, DEVICE]).kid == DEVICE.kid
    assert check(sign(claims(), kid="device-1")).kid == DEVICE.kid


@pytest.mark.parametrize("assertion", ["", "a.b", "a.b.c.d", "not a jwt", "x" * 9000, "e30.e30.AA"])
def test_malformed_assertions_are_refused_alike(assertion: str) -> None:
    with pytest.raises(InvalidClientError, match="the client assertion is invalid"):
        check(assertion)


def test_the_client_id_is_read_from_sub() -> None:
    assert assertion_client_id(sign(claims())) == CLIENT
    with pytest.raises(InvalidClientError):
        assertion_client_id(sign(claims(sub=DROP)))


# -- registering public keys ------------------------------------------------------------


def test_public_keys_load_from_pem_and_jwk_with_the_thumbprint_as_kid() -> None:
    pem = DEVICE.verification_key.public_pem()
    assert load_client_public_key(pem).kid == DEVICE.kid
    jwk = {**DEVICE.verification_key.to_jwk(), "kid": "my-device"}
    loaded = load_client_public_key(dict(jwk))
    assert (loaded.kid, loaded.alg) == (DEVICE.kid, "ES256")
    assert load_client_public_key(str(jwk).replace("'", '"')).kid == DEVICE.kid


def test_a_private_key_is_never_accepted() -> None:
    with pytest.raises(SigningKeyError, match="private"):
        load_client_public_key(DEVICE.private_pem())
    with pytest.raises(SigningKeyError, match="private"):
        load_client_public_key(DEVICE.private_jwk())
    with pytest.raises(SigningKeyError, match="private or symmetric"):
        load_client_public_key({"kty": "oct", "k": "c2VjcmV0"})


def test_weak_or_unsupported_public_keys_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    weak = weak.public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    for key in (weak, p384):
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(SigningKeyError):
            load_client_public_key(pem)
    with pytest.raises(SigningKeyError):
        load_client_public_key(b"not a key")
    with pytest.raises(SigningKeyError):
        load_client_public_key({**DEVICE.verification_key.to_jwk(), "alg": "RS256"})


def test_create_client_assertion_makes_what_verify_accepts() -> None:
    from keyturn.core.assertions import create_client_assertion

    assertion = create_client_assertion(DEVICE, client_id=CLIENT, audience=ISSUER, now=NOW)
    verified = check(assertion)
    assert (verified.client_id, verified.expires_at, verified.kid) == (CLIENT, NOW + 60, DEVICE.kid)
    again = create_client_assertion(DEVICE, client_id=CLIENT, audience=ISSUER, now=NOW)
    assert check(again).jti != verified.jti  # a fresh jti each time
