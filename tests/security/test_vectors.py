"""Known-answer tests: the published examples of RFC 7515, RFC 8037 and RFC 7638.

Values are copied from the RFCs (RFC 7515 Appendix A.3, RFC 8037 Appendices A.1-A.4,
RFC 7638 §3.1). ECDSA signatures are randomised, so RFC 7515's ES256 example can only be
verified; Ed25519 is deterministic, so RFC 8037's signature must be reproduced exactly.
"""

from __future__ import annotations

import base64

import pytest

from keyturn.core.signing import KeySet, SigningKey, VerificationKey, jwk_thumbprint
from keyturn.errors import TokenClaimsError
from tests.security.forge import verify


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# RFC 7515 Appendix A.3: "Example JWS Using ECDSA P-256 SHA-256".
RFC_7515_A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",
}
RFC_7515_A3_JWS = (
    "eyJhbGciOiJFUzI1NiJ9"
    "."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
    "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    "."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSA"
    "pmWQxfKTUJqPP3-Kg6NU1Q"
)

# RFC 8037 Appendix A.1 (private key), A.2 (public key), A.3 (thumbprint), A.4 (signature).
RFC_8037_PRIVATE_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}
RFC_8037_PUBLIC_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}
RFC_8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC_8037_SIGNING_INPUT = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC_8037_SIGNATURE = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC_7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC_7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc_7515_a3_es256_signature_verifies() -> None:
    public = {name: RFC_7515_A3_JWK[name] for name in ("kty", "crv", "x", "y")}
    signing_input, signature = RFC_7515_A3_JWS.rsplit(".", 1)

    key = VerificationKey.from_jwk(public)

    assert key.alg == "ES256"
    assert key.verify(signing_input.encode("ascii"), _b64decode(signature)) is True


def test_rfc_7515_a3_payload_is_the_published_claims() -> None:
    """The vector is copied exactly: its payload decodes to the RFC's CRLF-separated JSON."""
    payload = _b64decode(RFC_7515_A3_JWS.split(".")[1])

    assert payload == b'{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}'


def test_rfc_7515_a3_private_jwk_loads_and_its_public_half_verifies() -> None:
    signing_input, signature = RFC_7515_A3_JWS.rsplit(".", 1)

    key = SigningKey.from_jwk(RFC_7515_A3_JWK)

    assert key.verification_key.verify(signing_input.encode("ascii"), _b64decode(signature))
    assert key.verification_key == VerificationKey.from_jwk(RFC_7515_A3_JWK)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda data, sig: (data + b" ", sig), id="signing-input-extended"),
        pytest.param(lambda data, sig: (data.replace(b"J9", b"J8"), sig), id="header-changed"),
        pytest.param(lambda data, sig: (data, sig[:32] + bytes(32)), id="s-zeroed"),
        pytest.param(lambda data, sig: (data, sig[32:] + sig[:32]), id="r-and-s-swapped"),
    ],
)
def test_rfc_7515_a3_signature_fails_once_changed(change: object) -> None:
    """Control for the known answer: the same key refuses any change to input or signature."""
    signing_input, signature = RFC_7515_A3_JWS.rsplit(".", 1)
    key = VerificationKey.from_jwk(RFC_7515_A3_JWK)
    assert callable(change)

    data, sig = change(signing_input.encode("ascii"), _b64decode(signature))

    assert key.verify(data, sig) is False


def test_rfc_7515_a3_is_a_valid_jws_but_not_a_keyturn_access_token() -> None:
    """It has no kid and no at+jwt typ, so the token verifier refuses it all the same."""
    key_set = KeySet.of(None, VerificationKey.from_jwk(RFC_7515_A3_JWK))

    with pytest.raises(TokenClaimsError, match="typ"):
        verify(RFC_7515_A3_JWS, key_set, now=1_300_819_000)


def test_rfc_8037_a4_ed25519_signature_is_reproduced_byte_for_byte() -> None:
    key = SigningKey.from_jwk(RFC_8037_PRIVATE_JWK)

    signature = key.sign(RFC_8037_SIGNING_INPUT)

    assert key.alg == "EdDSA"
    assert signature == _b64decode(RFC_8037_SIGNATURE)
    assert key.verification_key.verify(RFC_8037_SIGNING_INPUT, signature) is True


def test_rfc_8037_a4_signature_verifies_with_the_public_jwk() -> None:
    key = VerificationKey.from_jwk(RFC_8037_PUBLIC_JWK)

    assert key.verify(RFC_8037_SIGNING_INPUT, _b64decode(RFC_8037_SIGNATURE)) is True
    assert key.verify(RFC_8037_SIGNING_INPUT + b"x", _b64decode(RFC_8037_SIGNATURE)) is False


def test_rfc_8037_a4_payload_is_the_published_text() -> None:
    header, payload = RFC_8037_SIGNING_INPUT.decode().split(".")

    assert _b64decode(header) == b'{"alg":"EdDSA"}'
    assert _b64decode(payload) == b"Example of Ed25519 signing"


def test_rfc_8037_a3_thumbprint_is_the_kid() -> None:
    assert jwk_thumbprint(RFC_8037_PUBLIC_JWK) == RFC_8037_THUMBPRINT
    assert VerificationKey.from_jwk(RFC_8037_PUBLIC_JWK).kid == RFC_8037_THUMBPRINT
    assert SigningKey.from_jwk(RFC_8037_PRIVATE_JWK).kid == RFC_8037_THUMBPRINT


def test_rfc_8037_private_jwk_exports_back_unchanged() -> None:
    exported = SigningKey.from_jwk(RFC_8037_PRIVATE_JWK).private_jwk()

    assert {name: exported[name] for name in RFC_8037_PRIVATE_JWK} == RFC_8037_PRIVATE_JWK


def test_rfc_7638_3_1_thumbprint() -> None:
    assert jwk_thumbprint(RFC_7638_JWK) == RFC_7638_THUMBPRINT


def test_rfc_7638_3_1_thumbprint_is_the_default_kid() -> None:
    """Loaded without its own kid, the RFC's key gets the RFC's thumbprint as its kid."""
    without_kid = {name: value for name, value in RFC_7638_JWK.items() if name != "kid"}

    assert VerificationKey.from_jwk(without_kid).kid == RFC_7638_THUMBPRINT
    assert VerificationKey.from_jwk(RFC_7638_JWK).kid == "2011-04-29"  # an explicit kid is kept


def test_rfc_7638_3_1_thumbprint_ignores_optional_members_and_order() -> None:
    reordered = {
        "use": "sig",
        "e": RFC_7638_JWK["e"],
        "kid": "other",
        "n": RFC_7638_JWK["n"],
        "kty": "RSA",
    }

    assert jwk_thumbprint(reordered) == RFC_7638_THUMBPRINT


def test_rfc_7515_a3_key_gets_its_thumbprint_as_kid() -> None:
    key = VerificationKey.from_jwk(RFC_7515_A3_JWK)

    assert key.kid == jwk_thumbprint(RFC_7515_A3_JWK)
    assert key.to_jwk() == {
        "kty": "EC",
        "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        "kid": key.kid,
        "alg": "ES256",
        "use": "sig",
    }
