"""DPoP proofs (RFC 9449 §4.3): every check of `keyturn.core.dpop.verify_dpop_proof`.

The RFC's own example proof (§4.1, the token request) is the interoperability vector;
the rest are hand-built proofs and the attacks: a proof carrying a private key, ``alg``
``none`` and HS256, another key's signature, wrong ``htm``/``htu``, stale or future
``iat``, a missing or wrong ``ath`` and ``nonce``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

import pytest

from keyturn.core.dpop import (
    DPoPProof,
    InvalidDPoPProofError,
    UseDPoPNonceError,
    access_token_hash,
    normalize_htu,
    verify_dpop_proof,
)
from keyturn.core.signing import SigningKey
from tests.security.forge import DROP, b64, encode_segment, forge

# RFC 9449 §4.1, the example proof of a token request, and its key's RFC 7638 thumbprint
# (the jkt of the §6.1 example).
RFC_PROOF: Final = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMz"
    "R0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFq"
    "SG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwia"
    "HRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjY"
    "yNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37"
    "xRZT3Lg"
)
RFC_JKT: Final = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
RFC_IAT: Final = 1562262616

NOW: Final = 1_800_000_000
LEEWAY: Final = 5
URL: Final = "https://kt.example/v1/token"
DEVICE: Final = SigningKey.generate("ES256")
OTHER: Final = SigningKey.generate("ES256")


def header(key: SigningKey = DEVICE, **changes: Any) -> dict[str, Any]:
    jwk = {k: v for k, v in key.verification_key.to_jwk().items() if k not in ("kid", "use")}
    base = {"typ": "dpop+jwt", "alg": key.alg, "jwk": jwk, **changes}
    return {k: v for k, v in base.items() if v is not DROP}


def claims(**changes: Any) -> dict[str, Any]:
    base = {"jti": "p-1", "htm": "POST", "htu": URL, "iat": NOW, **changes}
    return {k: v for k, v in base.items() if v is not DROP}


def proof(head: dict[str, Any] | None = None, body: dict[str, Any] | None = None, *,
          key: SigningKey = DEVICE) -> str:  # fmt: skip
    return forge(head or header(key), body or claims(), key=key)


def check(value: str, **kwargs: Any) -> DPoPProof:
    options: dict[str, Any] = {"method": "POST", "url": URL, "now": NOW, "leeway": LEEWAY}
    return verify_dpop_proof(value, **{**options, **kwargs})


def test_rfc9449_4_1_the_rfcs_example_proof_verifies_with_its_thumbprint() -> None:
    verified = check(RFC_PROOF, url="https://server.example.com/token", now=RFC_IAT, leeway=LEEWAY)
    assert (verified.jkt, verified.jti, verified.iat) == (RFC_JKT, "-BwC3ESc6acc2lTc", RFC_IAT)


def test_rfc9449_4_2_ath_is_the_base64url_sha256_of_the_token() -> None:
    # RFC 9449 §7.1 example: this access token and the ath its proof carries.
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_rfc9449_4_3_a_valid_proof_names_its_key() -> None:
    verified = check(proof())
    assert verified.jkt == DEVICE.kid  # Keyturn's kid is the RFC 7638 thumbprint
    assert verified.replay_id != check(proof(key=OTHER)).replay_id


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", DROP])
def test_rfc9449_4_3_check_4_typ_must_be_dpop_jwt(typ: Any) -> None:
    with pytest.raises(InvalidDPoPProofError, match="typ"):
        check(proof(header(typ=typ)))


def test_rfc9449_4_3_check_5_alg_none_is_refused() -> None:
    for signature in (b"", b"\0"):  # empty (as alg none has it) or not
        with pytest.raises(InvalidDPoPProofError):
            check(forge(header(alg="none"), claims(), signature))
    with pytest.raises(InvalidDPoPProofError, match="alg"):
        check(forge(header(alg="none"), claims(), b"\0"))


def test_rfc9449_4_3_check_5_hs256_with_the_public_key_as_secret_is_refused() -> None:
    head, body = encode_segment(header(alg="HS256")), encode_segment(claims())
    secret = DEVICE.verification_key.public_pem()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidDPoPProofError, match="alg"):
        check(f"{head}.{body}.{b64(mac)}")


def test_rfc9449_4_3_check_6_a_signature_by_another_key_is_refused() -> None:
    # The header names DEVICE's public key; OTHER signed.
    forged = forge(header(DEVICE), claims(), key=OTHER)
    with pytest.raises(InvalidDPoPProofError, match="signature"):
        check(forged)


def test_rfc9449_4_3_check_7_a_proof_carrying_a_private_key_is_refused() -> None:
    private = {k: v for k, v in DEVICE.private_jwk().items() if k not in ("kid", "use")}
    with pytest.raises(InvalidDPoPProofError, match="private"):
        check(proof(header(jwk=private)))
    with pytest.raises(InvalidDPoPProofError, match="private"):
        check(proof(header(jwk={"kty": "oct", "k": "c2VjcmV0"})))


def test_rfc8725_3_1_the_jwk_is_bound_to_the_headers_alg() -> None:
    with pytest.raises(InvalidDPoPProofError):
        check(proof(header(alg="EdDSA")))


@pytest.mark.parametrize("htm", ["GET", "post", DROP])
def test_rfc9449_4_3_check_8_htm_must_be_the_method(htm: Any) -> None:
    with pytest.raises(InvalidDPoPProofError, match="htm"):
        check(proof(body=claims(htm=htm)))


@pytest.mark.parametrize(
    "htu",
    ["https://kt.example/v1/revoke", "http://kt.example/v1/token", "https://evil/v1/token",
     "https://kt.example:8443/v1/token", "/v1/token", DROP],
)  # fmt: skip
def test_rfc9449_4_3_check_9_htu_must_be_the_url(htu: Any) -> None:
    with pytest.raises(InvalidDPoPProofError, match="htu"):
        check(proof(body=claims(htu=htu)))


@pytest.mark.parametrize(
    "htu",
    ["HTTPS://KT.EXAMPLE/v1/token", "https://kt.example:443/v1/token",
     "https://kt.example/v1/token?x=1", "https://kt.example/v1/token#f"],
)  # fmt: skip
def test_rfc9449_4_3_check_9_htu_is_compared_normalised_without_query(htu: str) -> None:
    check(proof(body=claims(htu=htu)))


def test_normalize_htu() -> None:
    assert normalize_htu("HTTP://Host:80") == "http://host/"
    assert normalize_htu("https://[::1]:8443/a?b#c") == "https://[::1]:8443/a"
    with pytest.raises(ValueError, match="absolute"):
        normalize_htu("ftp://host/")


@pytest.mark.parametrize(
    ("iat", "message"),
    [(NOW + LEEWAY + 1, "future"), (NOW - 60 - LEEWAY - 1, "too old"), ("now", "numeric"),
     (DROP, "numeric")],
    ids=["future", "stale", "string", "missing"],
)  # fmt: skip
def test_rfc9449_4_3_check_11_iat_within_the_window(iat: Any, message: str) -> None:
    with pytest.raises(InvalidDPoPProofError, match=message):
        check(proof(body=claims(iat=iat)))


def test_rfc9449_4_3_check_11_iat_at_the_window_edges_passes() -> None:
    check(proof(body=claims(iat=NOW + LEEWAY)))
    check(proof(body=claims(iat=NOW - 60 - LEEWAY)))


@pytest.mark.parametrize("jti", [DROP, "", 7])
def test_rfc9449_4_3_the_proof_needs_a_jti(jti: Any) -> None:
    with pytest.raises(InvalidDPoPProofError, match="jti"):
        check(proof(body=claims(jti=jti)))


def test_rfc9449_4_3_check_12_ath_must_match_the_presented_token() -> None:
    token = "an-access-token"
    check(proof(body=claims(ath=access_token_hash(token))), access_token=token)
    for ath in (DROP, access_token_hash("another-token")):
        with pytest.raises(InvalidDPoPProofError, match="ath"):
            check(proof(body=claims(ath=ath)), access_token=token)


def test_rfc9449_8_a_required_nonce_must_be_carried() -> None:
    check(proof(body=claims(nonce="n-1")), nonce="n-1")
    for nonce in (DROP, "n-0"):
        with pytest.raises(UseDPoPNonceError) as caught:
            check(proof(body=claims(nonce=nonce)), nonce="n-1")
        assert caught.value.error_code == "use_dpop_nonce"


@pytest.mark.parametrize("value", ["", "a.b", "x" * 9000, "e30.e30.AA", "!.!.!"])
def test_malformed_proofs_are_refused(value: str) -> None:
    with pytest.raises(InvalidDPoPProofError) as caught:
        check(value)
    assert caught.value.error_code == "invalid_dpop_proof"


def test_unknown_header_members_are_refused() -> None:
    with pytest.raises(InvalidDPoPProofError, match="header"):
        check(proof(header(jku="https://evil.example/jwks")))


def test_rfc9449_4_2_create_dpop_proof_makes_what_verify_accepts() -> None:
    from keyturn.core.dpop import create_dpop_proof

    made = create_dpop_proof(
        DEVICE, method="post", url=URL + "?x=1#f", now=NOW, access_token="tok", nonce="n1"
    )
    checked = verify_dpop_proof(
        made, method="POST", url=URL, now=NOW, leeway=LEEWAY, access_token="tok", nonce="n1"
    )
    assert checked.jkt == DEVICE.kid  # the RFC 7638 thumbprint of the proof's jwk
    with pytest.raises(InvalidDPoPProofError):
        verify_dpop_proof(made, method="GET", url=URL, now=NOW, leeway=LEEWAY)
    other = create_dpop_proof(DEVICE, method="POST", url=URL, now=NOW)
    assert (
        verify_dpop_proof(other, method="POST", url=URL, now=NOW, leeway=LEEWAY).jti != checked.jti
    )
