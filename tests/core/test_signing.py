"""Signing keys: generation, PEM and JWK round trips, algorithm binding, kids and key sets."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import get_default_algorithms

from keyturn.core.signing import (
    SUPPORTED_ALGORITHMS,
    KeySet,
    SigningKey,
    VerificationKey,
    jwk_thumbprint,
)
from keyturn.errors import SigningKeyError

MESSAGE = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJrZXk6azEifQ"
PASSWORD = b"correct horse battery staple"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
PUBLIC_MEMBERS = {
    "ES256": {"kty", "crv", "x", "y", "kid", "alg", "use"},
    "RS256": {"kty", "n", "e", "kid", "alg", "use"},
    "EdDSA": {"kty", "crv", "x", "kid", "alg", "use"},
}


@pytest.fixture(scope="module")
def rsa_1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 -- to refuse


def _thumbprint_members(jwk: dict[str, Any]) -> dict[str, Any]:
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    return {name: jwk[name] for name in required[jwk["kty"]]}


def _private_pem(private_key: Any, fmt: serialization.PrivateFormat) -> bytes:
    pem: bytes = private_key.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    )
    return pem


def _b64_int(value: int, length: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(length, "big")).rstrip(b"=").decode()


class TestGenerate:
    def test_es256_is_a_p256_key(self) -> None:
        key = SigningKey.generate("ES256")

        assert key.alg == "ES256"
        assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.private_key.curve, ec.SECP256R1)

    def test_default_algorithm_is_es256(self) -> None:
        assert SigningKey.generate().alg == "ES256"

    def test_rs256_is_a_3072_bit_key(self) -> None:
        key = SigningKey.generate("RS256")

        assert key.alg == "RS256"
        assert isinstance(key.private_key, rsa.RSAPrivateKey)
        assert key.private_key.key_size == 3072

    def test_eddsa_is_an_ed25519_key(self) -> None:
        key = SigningKey.generate("EdDSA")

        assert key.alg == "EdDSA"
        assert isinstance(key.private_key, ed25519.Ed25519PrivateKey)

    @pytest.mark.parametrize("alg", ["HS256", "none", "ES384", "PS256", "Ed25519", "es256", ""])
    def test_other_algorithms_are_refused(self, alg: str) -> None:
        with pytest.raises(SigningKeyError):
            SigningKey.generate(alg)

    def test_supported_algorithms(self) -> None:
        assert SUPPORTED_ALGORITHMS == ("ES256", "RS256", "EdDSA")

    def test_each_generated_key_is_new(self) -> None:
        assert SigningKey.generate("EdDSA").kid != SigningKey.generate("EdDSA").kid


def test_signature_verifies_with_the_verification_key(signing_key: SigningKey) -> None:
    signature = signing_key.sign(MESSAGE)

    assert signing_key.verification_key.verify(MESSAGE, signature) is True
    assert signing_key.verification_key.verify(MESSAGE + b".", signature) is False


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_deterministic_signatures_equal_pyjwts(
    alg: str, rs256_key: SigningKey, eddsa_key: SigningKey
) -> None:
    """RS256 and EdDSA signatures are byte for byte the ones PyJWT's algorithm objects make."""
    key = {"RS256": rs256_key, "EdDSA": eddsa_key}[alg]

    assert key.sign(MESSAGE) == get_default_algorithms()[alg].sign(MESSAGE, key.private_key)


def test_es256_signature_is_raw_r_and_s_that_pyjwt_accepts(es256_key: SigningKey) -> None:
    """RFC 7518 §3.4: 64 octets, R then S, each big-endian and left-padded to 32."""
    public_key = es256_key.private_key.public_key()
    es256 = get_default_algorithms()["ES256"]

    for index in range(200):  # about one in 128 has an R or S shorter than 32 octets
        message = MESSAGE + str(index).encode()
        signature = es256_key.sign(message)

        assert len(signature) == 64
        assert es256.verify(message, public_key, signature) is True
        r, s = (int.from_bytes(half, "big") for half in (signature[:32], signature[32:]))
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))


def test_kid_is_the_rfc_7638_thumbprint(signing_key: SigningKey) -> None:
    jwk = dict(signing_key.verification_key.to_jwk())

    assert signing_key.kid == jwk_thumbprint(_thumbprint_members(jwk))
    assert len(signing_key.kid) == 43  # base64url of a SHA-256 digest


def test_thumbprint_ignores_optional_members(signing_key: SigningKey) -> None:
    jwk = dict(signing_key.verification_key.to_jwk())
    decorated = {**jwk, "kid": "anything", "alg": "X", "use": "enc", "key_ops": ["verify"]}

    assert jwk_thumbprint(decorated) == jwk_thumbprint(_thumbprint_members(jwk))


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param({"crv": "P-256", "x": "AA", "y": "AA"}, id="no-kty"),
        pytest.param({"kty": "EC", "crv": "P-256", "x": "AA"}, id="EC-without-y"),
        pytest.param({"kty": "RSA", "n": "AA"}, id="RSA-without-e"),
        pytest.param({"kty": "oct", "k": "AA"}, id="oct"),
    ],
)
def test_thumbprint_needs_the_required_members(jwk: dict[str, Any]) -> None:
    with pytest.raises(SigningKeyError):
        jwk_thumbprint(jwk)


class TestPEM:
    def test_private_pem_round_trip(self, signing_key: SigningKey) -> None:
        loaded = SigningKey.from_pem(signing_key.private_pem())

        assert loaded.kid == signing_key.kid
        assert loaded.alg == signing_key.alg
        assert signing_key.verification_key.verify(MESSAGE, loaded.sign(MESSAGE))

    def test_private_pem_is_pkcs8(self, signing_key: SigningKey) -> None:
        assert signing_key.private_pem().startswith(b"-----BEGIN PRIVATE KEY-----\n")

    def test_pem_given_as_str_loads(self, signing_key: SigningKey) -> None:
        assert SigningKey.from_pem(signing_key.private_pem().decode()).kid == signing_key.kid

    def test_encrypted_pem_round_trip(self, signing_key: SigningKey) -> None:
        pem = signing_key.private_pem(password=PASSWORD)

        loaded = SigningKey.from_pem(pem, password=PASSWORD)

        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
        assert loaded.kid == signing_key.kid

    @pytest.mark.parametrize(
        "password",
        [pytest.param(None, id="no-password"), pytest.param(b"wrong", id="wrong-password")],
    )
    def test_encrypted_pem_needs_the_right_password(
        self, es256_key: SigningKey, password: bytes | None
    ) -> None:
        pem = es256_key.private_pem(password=PASSWORD)

        with pytest.raises(SigningKeyError) as exc_info:
            SigningKey.from_pem(pem, password=password)

        assert "BEGIN" not in str(exc_info.value)

    def test_error_never_contains_the_pem(self, es256_key: SigningKey) -> None:
        pem = es256_key.private_pem()
        broken = pem.replace(b"\n", b"\n\n", 3)[:-40]

        with pytest.raises(SigningKeyError) as exc_info:
            SigningKey.from_pem(broken)

        assert pem.decode().splitlines()[1] not in str(exc_info.value)

    @pytest.mark.parametrize(
        ("key_factory", "fmt"),
        [
            pytest.param(
                lambda: ec.generate_private_key(ec.SECP256R1()),
                serialization.PrivateFormat.TraditionalOpenSSL,
                id="EC-SEC1",
            ),
            pytest.param(
                lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
                serialization.PrivateFormat.TraditionalOpenSSL,
                id="RSA-PKCS1",
            ),
        ],
    )
    def test_traditional_pem_formats_load(self, key_factory: Any, fmt: Any) -> None:
        private_key = key_factory()

        loaded: Any = SigningKey.from_pem(_private_pem(private_key, fmt)).private_key

        assert loaded.private_numbers() == private_key.private_numbers()

    def test_public_pem_round_trip(self, signing_key: SigningKey) -> None:
        public_pem = signing_key.verification_key.public_pem()

        loaded = VerificationKey.from_pem(public_pem)

        assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
        assert loaded == signing_key.verification_key

    @pytest.mark.parametrize(
        "pem",
        [
            pytest.param(b"", id="empty"),
            pytest.param(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="junk"
            ),
        ],
    )
    def test_bad_public_pem_is_refused(self, pem: bytes) -> None:
        with pytest.raises(SigningKeyError):
            VerificationKey.from_pem(pem)

    def test_private_pem_is_not_a_public_key(self, es256_key: SigningKey) -> None:
        with pytest.raises(SigningKeyError):
            VerificationKey.from_pem(es256_key.private_pem())

    def test_public_pem_is_not_a_private_key(self, es256_key: SigningKey) -> None:
        with pytest.raises(SigningKeyError):
            SigningKey.from_pem(es256_key.verification_key.public_pem())


class TestJWK:
    def test_public_jwk_round_trip(self, signing_key: SigningKey) -> None:
        jwk = signing_key.verification_key.to_jwk()

        assert VerificationKey.from_jwk(jwk) == signing_key.verification_key

    def test_public_jwk_members(self, signing_key: SigningKey) -> None:
        jwk = signing_key.verification_key.to_jwk()

        assert set(jwk) == PUBLIC_MEMBERS[signing_key.alg]
        assert jwk["kid"] == signing_key.kid
        assert jwk["alg"] == signing_key.alg
        assert jwk["use"] == "sig"

    def test_private_jwk_round_trip(self, signing_key: SigningKey) -> None:
        jwk = signing_key.private_jwk()

        loaded = SigningKey.from_jwk(jwk)

        assert "d" in jwk
        assert loaded.kid == signing_key.kid
        assert signing_key.verification_key.verify(MESSAGE, loaded.sign(MESSAGE))

    def test_private_jwk_loads_as_its_public_half(self, signing_key: SigningKey) -> None:
        loaded = VerificationKey.from_jwk(signing_key.private_jwk())

        assert loaded == signing_key.verification_key
        assert not PRIVATE_MEMBERS & set(loaded.to_jwk())

    def test_public_jwk_cannot_sign(self, signing_key: SigningKey) -> None:
        with pytest.raises(SigningKeyError):
            SigningKey.from_jwk(signing_key.verification_key.to_jwk())

    def test_jwk_without_alg_is_bound_to_its_key_type(self, signing_key: SigningKey) -> None:
        jwk = {k: v for k, v in signing_key.verification_key.to_jwk().items() if k != "alg"}

        assert VerificationKey.from_jwk(jwk).alg == signing_key.alg

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"use": "enc"}, id="use-enc"),
            pytest.param({"kid": 7}, id="kid-not-a-string"),
            pytest.param({"x": "AAAA"}, id="bad-coordinate"),
            pytest.param({"kty": "oct"}, id="kty-oct"),
            pytest.param({"kty": 1}, id="kty-number"),
        ],
    )
    def test_bad_jwk_is_refused(self, es256_key: SigningKey, change: dict[str, Any]) -> None:
        jwk = {**es256_key.verification_key.to_jwk(), **change}

        with pytest.raises(SigningKeyError):
            VerificationKey.from_jwk(jwk)

    @pytest.mark.parametrize("jwk", [[], "jwk", None, {}])
    def test_non_jwk_is_refused(self, jwk: Any) -> None:
        with pytest.raises(SigningKeyError):
            VerificationKey.from_jwk(jwk)


class TestAlgorithmBinding:
    """RFC 8725 §3.1: each key is used with exactly one algorithm."""

    @pytest.mark.parametrize(
        ("alg", "claimed"),
        [
            pytest.param("ES256", "RS256", id="ES256-key-claims-RS256"),
            pytest.param("ES256", "ES384", id="ES256-key-claims-ES384"),
            pytest.param("ES256", "HS256", id="ES256-key-claims-HS256"),
            pytest.param("RS256", "PS256", id="RS256-key-claims-PS256"),
            pytest.param("RS256", "RS512", id="RS256-key-claims-RS512"),
            pytest.param("EdDSA", "ES256", id="EdDSA-key-claims-ES256"),
            pytest.param("EdDSA", "Ed25519", id="EdDSA-key-claims-Ed25519"),
            pytest.param("ES256", "none", id="ES256-key-claims-none"),
        ],
    )
    def test_jwk_whose_alg_disagrees_is_refused(
        self,
        alg: str,
        claimed: str,
        es256_key: SigningKey,
        rs256_key: SigningKey,
        eddsa_key: SigningKey,
    ) -> None:
        key = {"ES256": es256_key, "RS256": rs256_key, "EdDSA": eddsa_key}[alg]

        with pytest.raises(SigningKeyError):
            VerificationKey.from_jwk({**key.verification_key.to_jwk(), "alg": claimed})
        with pytest.raises(SigningKeyError):
            SigningKey.from_jwk({**key.private_jwk(), "alg": claimed})
        with pytest.raises(SigningKeyError):
            SigningKey.from_pem(key.private_pem(), alg=claimed)

    @pytest.mark.parametrize(
        "curve", [ec.SECP384R1(), ec.SECP521R1(), ec.SECP256K1()], ids=lambda c: c.name
    )
    def test_ec_keys_off_p256_are_refused(self, curve: ec.EllipticCurve) -> None:
        private_key = ec.generate_private_key(curve)
        pem = _private_pem(private_key, serialization.PrivateFormat.PKCS8)

        with pytest.raises(SigningKeyError, match="P-256"):
            SigningKey.from_private_key(private_key)
        with pytest.raises(SigningKeyError):
            SigningKey.from_pem(pem)
        with pytest.raises(SigningKeyError):
            VerificationKey.from_public_key(private_key.public_key())

    def test_p384_jwk_is_refused(self) -> None:
        private_key = ec.generate_private_key(ec.SECP384R1())
        numbers = private_key.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-384",
            "x": _b64_int(numbers.x, 48),
            "y": _b64_int(numbers.y, 48),
        }

        with pytest.raises(SigningKeyError):
            VerificationKey.from_jwk(jwk)

    def test_rsa_1024_is_refused(self, rsa_1024: rsa.RSAPrivateKey) -> None:
        pem = _private_pem(rsa_1024, serialization.PrivateFormat.PKCS8)
        public_jwk = {
            "kty": "RSA",
            "n": _b64_int(rsa_1024.public_key().public_numbers().n, 128),
            "e": "AQAB",
        }

        with pytest.raises(SigningKeyError, match="2048"):
            SigningKey.from_private_key(rsa_1024)
        with pytest.raises(SigningKeyError, match="2048"):
            SigningKey.from_pem(pem)
        with pytest.raises(SigningKeyError, match="2048"):
            VerificationKey.from_jwk(public_jwk)

    def test_rsa_2048_is_accepted(self, rs256_key: SigningKey) -> None:
        assert isinstance(rs256_key.private_key, rsa.RSAPrivateKey)
        assert rs256_key.private_key.key_size == 2048
        assert rs256_key.alg == "RS256"

    @pytest.mark.parametrize(
        "private_key",
        [
            pytest.param(ed448.Ed448PrivateKey.generate(), id="Ed448"),
            pytest.param(x25519.X25519PrivateKey.generate(), id="X25519"),
        ],
    )
    def test_unsupported_key_types_are_refused(self, private_key: Any) -> None:
        pem = _private_pem(private_key, serialization.PrivateFormat.PKCS8)

        with pytest.raises(SigningKeyError):
            SigningKey.from_pem(pem)


def test_repr_shows_no_key_material(es256_key: SigningKey) -> None:
    text = repr(es256_key) + repr(es256_key.verification_key) + repr(KeySet.of(es256_key))
    private_jwk = es256_key.private_jwk()

    assert es256_key.kid in text
    assert private_jwk["d"] not in text
    assert private_jwk["x"] not in text
    assert "PRIVATE KEY" not in text


class TestKeySet:
    def test_lookup_by_kid(self, es256_key: SigningKey, eddsa_key: SigningKey) -> None:
        key_set = KeySet.of(es256_key, eddsa_key.verification_key)

        assert key_set.get(es256_key.kid) == es256_key.verification_key
        assert key_set.get(eddsa_key.kid) == eddsa_key.verification_key
        assert key_set.get("unknown") is None
        assert es256_key.kid in key_set
        assert len(key_set) == 2
        assert key_set.kids == {es256_key.kid, eddsa_key.kid}
        assert key_set.signing_key is es256_key

    def test_the_same_key_twice_is_kept_once(self, es256_key: SigningKey) -> None:
        key_set = KeySet.of(es256_key, es256_key.verification_key, es256_key.verification_key)

        assert len(key_set) == 1
        assert key_set.verification_keys == (es256_key.verification_key,)

    def test_two_keys_with_one_kid_are_refused(
        self, es256_key: SigningKey, eddsa_key: SigningKey
    ) -> None:
        impostor = VerificationKey.from_public_key(
            eddsa_key.verification_key.public_key, kid=es256_key.kid
        )

        with pytest.raises(SigningKeyError, match="share the kid"):
            KeySet.of(es256_key, impostor)

    def test_without_drops_a_verification_key(
        self, es256_key: SigningKey, eddsa_key: SigningKey
    ) -> None:
        key_set = KeySet.of(es256_key, eddsa_key.verification_key)

        smaller = key_set.without(eddsa_key.kid)

        assert smaller.kids == {es256_key.kid}
        assert key_set.kids == {es256_key.kid, eddsa_key.kid}  # the original is unchanged
        assert smaller.without("unknown").kids == {es256_key.kid}

    def test_without_refuses_the_active_key(self, es256_key: SigningKey) -> None:
        with pytest.raises(SigningKeyError):
            KeySet.of(es256_key).without(es256_key.kid)

    def test_with_signing_key_keeps_the_old_key_for_verification(
        self, es256_key: SigningKey, eddsa_key: SigningKey
    ) -> None:
        rotated = KeySet.of(es256_key).with_signing_key(eddsa_key)

        assert rotated.signing_key is eddsa_key
        assert rotated.kids == {es256_key.kid, eddsa_key.kid}
        assert rotated.without(es256_key.kid).kids == {eddsa_key.kid}

    def test_verify_only_set(self, es256_key: SigningKey) -> None:
        key_set = KeySet.of(None, es256_key.verification_key)

        assert key_set.signing_key is None
        assert key_set.kids == {es256_key.kid}

    def test_from_jwks_round_trip(
        self, es256_key: SigningKey, rs256_key: SigningKey, eddsa_key: SigningKey
    ) -> None:
        original = KeySet.of(es256_key, rs256_key.verification_key, eddsa_key.verification_key)

        loaded = KeySet.from_jwks(original.jwks())

        assert loaded.signing_key is None
        assert loaded.verification_keys == original.verification_keys

    def test_from_jwks_skips_members_it_cannot_use(
        self, es256_key: SigningKey, eddsa_key: SigningKey, rsa_1024: rsa.RSAPrivateKey
    ) -> None:
        good = [es256_key.verification_key.to_jwk(), eddsa_key.verification_key.to_jwk()]
        unusable = [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**es256_key.verification_key.to_jwk(), "use": "enc", "kid": "enc"},
            {**es256_key.verification_key.to_jwk(), "alg": "ES384", "kid": "mismatch"},
            {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "off-curve"},
            {
                "kty": "RSA",
                "e": "AQAB",
                "n": _b64_int(rsa_1024.public_key().public_numbers().n, 128),
            },
            {"kty": "OKP", "crv": "Ed448", "x": "AAAA"},
            {"kty": "XYZ"},
            {"kid": "no-kty"},
            "not an object",
            None,
        ]

        loaded = KeySet.from_jwks({"keys": [unusable[0], good[0], *unusable[1:], good[1]]})

        assert loaded.kids == {es256_key.kid, eddsa_key.kid}

    @pytest.mark.parametrize(
        "document",
        [
            pytest.param({}, id="no-keys"),
            pytest.param({"keys": {}}, id="keys-not-a-list"),
            pytest.param([], id="not-an-object"),
            pytest.param(None, id="null"),
        ],
    )
    def test_from_jwks_needs_a_jwk_set(self, document: Any) -> None:
        with pytest.raises(SigningKeyError):
            KeySet.from_jwks(document)


def test_t_jwks_01_jwks_publishes_only_public_signature_keys(
    es256_key: SigningKey, rs256_key: SigningKey, eddsa_key: SigningKey
) -> None:
    """T-JWKS-01: no private members, kid/alg/use:"sig" on every key, no x5c or x5t."""
    key_set = KeySet.of(es256_key, rs256_key.verification_key, eddsa_key.verification_key)

    jwks = json.loads(json.dumps(key_set.jwks()))

    assert set(jwks) == {"keys"}
    assert [jwk["kid"] for jwk in jwks["keys"]] == [es256_key.kid, rs256_key.kid, eddsa_key.kid]
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert not {"x5c", "x5t", "x5t#S256", "x5u"} & set(jwk)
        assert jwk["use"] == "sig"
        assert set(jwk) == PUBLIC_MEMBERS[jwk["alg"]]
        assert jwk["kid"] == jwk_thumbprint(jwk)


def test_t_jwks_01_key_set_loaded_from_private_jwks_publishes_no_secrets(
    es256_key: SigningKey, rs256_key: SigningKey, eddsa_key: SigningKey
) -> None:
    """T-JWKS-01: loading private JWKs (as storage holds them) never leaks them into the JWKS."""
    private_jwks = {"keys": [key.private_jwk() for key in (es256_key, rs256_key, eddsa_key)]}

    jwks = KeySet.from_jwks(private_jwks).jwks()

    assert len(jwks["keys"]) == 3
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
