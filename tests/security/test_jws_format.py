"""The JWS layer of the attack catalogue: T-ALG, T-SIG, T-FMT, T-HDR, T-TYP (security.md §2.1).

Each row builds one hostile token from the session's keys and names the exact
`InvalidTokenError` subclass the verifier must raise. `assert_rejected` runs the token
through `verify_access_token` and a caching `TokenVerifier` alike.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAPSSAlgorithm

from keyturn.core import jws, tokens
from keyturn.core.revocation import RevocationList
from keyturn.core.secrets import SecretKind, generate_secret, parse_secret
from keyturn.core.signing import KeySet, PrivateKey, SigningKey
from keyturn.errors import (
    InvalidTokenError,
    MalformedSecretError,
    MalformedTokenError,
    RevokedTokenError,
    TokenClaimsError,
    TokenSignatureError,
)
from tests.security.conftest import Keys
from tests.security.forge import (
    DROP,
    NOW,
    P256_ORDER,
    assert_rejected,
    b64,
    claims_at,
    encode_segment,
    es256_rs,
    es256_signature,
    flip_bit,
    forge,
    header_for,
    hmac_sha256,
    malleate,
    recording_server,
    signed,
    signed_raw,
    split,
    unb64,
    verifier,
    verify,
    with_signature,
)

Build = Callable[[Keys], Any]
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493  # RFC 8032 §5.1 "L"


def _self_signed_certificate(private_key: PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyturn-test")])
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2023, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2033, 1, 1, tzinfo=UTC))
        .sign(private_key, algorithm)
    )


def _public_key_encodings(key: SigningKey) -> dict[str, bytes]:
    """Every spelling of ``key``'s public half an HS256 forger might use as the secret."""
    public = key.verification_key.public_key
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = public.public_bytes(serialization.Encoding.PEM, spki)
    encodings = {
        "spki-pem": pem,
        "spki-pem-no-newline": pem.rstrip(b"\n"),
        "spki-pem-bom": b"\xef\xbb\xbf" + pem,
        "spki-der": public.public_bytes(serialization.Encoding.DER, spki),
        "x509-pem": _self_signed_certificate(key.private_key).public_bytes(
            serialization.Encoding.PEM
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk-json": json.dumps(key.verification_key.to_jwk()).encode(),
        "jwks-json": json.dumps(KeySet.of(key).jwks()).encode(),
    }
    if key.alg == "RS256":
        encodings["pkcs1-pem"] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
    return encodings


def _confusion(alg: str, encoding: str) -> Build:
    def build(keys: Keys) -> str:
        key = keys.trusted(alg)
        secret = _public_key_encodings(key)[encoding]
        return hmac_sha256(header_for(key, alg="HS256"), claims_at(), secret)

    return build


PUBLIC_KEY_SPELLINGS = [
    "spki-pem",
    "spki-pem-no-newline",
    "spki-pem-bom",
    "spki-der",
    "x509-pem",
    "openssh",
    "jwk-json",
    "jwks-json",
]
ALG_CONFUSION = [
    pytest.param(_confusion(alg, encoding), TokenSignatureError, id=f"T-ALG-02-{alg}-{encoding}")
    for alg in ["ES256", "RS256", "EdDSA"]
    for encoding in [*PUBLIC_KEY_SPELLINGS, *(["pkcs1-pem"] if alg == "RS256" else [])]
]


def _sign_foreign(header: dict[str, object], signer: Callable[[bytes], bytes]) -> str:
    """A token whose signature comes from an algorithm Keyturn's keys are not bound to."""
    signing_input = f"{encode_segment(header)}.{encode_segment(claims_at())}"
    return f"{signing_input}.{b64(signer(signing_input.encode('ascii')))}"


def _es384_with_es256_kid(keys: Keys) -> str:
    es384 = ECAlgorithm(ECAlgorithm.SHA384)
    return _sign_foreign(
        header_for(keys.es256, alg="ES384"), lambda data: es384.sign(data, keys.attacker_p384)
    )


def _ps256_with_the_real_rsa_key(keys: Keys) -> str:
    ps256 = RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256)
    rsa_key = keys.rs256.private_key
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    return _sign_foreign(
        header_for(keys.rs256, alg="PS256"), lambda data: ps256.sign(data, rsa_key)
    )


def _other_alg_with_kid(attacker_alg: str, victim_alg: str) -> Build:
    def build(keys: Keys) -> str:
        victim = keys.trusted(victim_alg)
        attacker = keys.attacker(attacker_alg)
        return forge(header_for(victim, alg=attacker_alg), claims_at(), key=attacker)

    return build


ALG_ATTACKS = [
    pytest.param(
        lambda k: forge(header_for(k.es256, alg="none"), claims_at(), b""),
        MalformedTokenError,
        id="T-ALG-01-none-lowercase-empty-signature",
    ),
    *[
        pytest.param(
            lambda k, spelling=spelling: forge(
                header_for(k.es256, alg=spelling), claims_at(), b"anything"
            ),
            TokenSignatureError,
            id=f"T-ALG-01-{spelling}-arbitrary-signature",
        )
        for spelling in ["none", "None", "NONE", "nOnE"]
    ],
    pytest.param(
        lambda k: forge({"alg": "none", "typ": "at+jwt"}, claims_at(), b"x"),
        MalformedTokenError,
        id="T-ALG-01-none-without-kid",
    ),
    pytest.param(
        lambda k: forge(header_for(k.es256, alg="none"), claims_at(), key=k.es256),
        TokenSignatureError,
        id="T-ALG-01-none-with-a-real-signature",
    ),
    *ALG_CONFUSION,
    pytest.param(
        lambda k: hmac_sha256(
            header_for(k.es256, alg="HS256", kid=DROP),
            claims_at(),
            k.es256.verification_key.public_pem(),
        ),
        MalformedTokenError,
        id="T-ALG-02-ES256-spki-pem-without-kid",
    ),
    pytest.param(_es384_with_es256_kid, TokenSignatureError, id="T-ALG-03-ES384-on-ES256-key"),
    pytest.param(
        _other_alg_with_kid("RS256", "ES256"), TokenSignatureError, id="T-ALG-03-RS256-on-ES256-key"
    ),
    pytest.param(
        _other_alg_with_kid("EdDSA", "ES256"), TokenSignatureError, id="T-ALG-03-EdDSA-on-ES256-key"
    ),
    pytest.param(
        _other_alg_with_kid("ES256", "RS256"), TokenSignatureError, id="T-ALG-03-ES256-on-RS256-key"
    ),
    pytest.param(
        _other_alg_with_kid("ES256", "EdDSA"), TokenSignatureError, id="T-ALG-03-ES256-on-EdDSA-key"
    ),
    pytest.param(
        _ps256_with_the_real_rsa_key, TokenSignatureError, id="T-ALG-03-PS256-by-the-real-RS256-key"
    ),
    *[
        pytest.param(
            lambda k, alg=alg: signed(k.attacker(alg), header={"kid": k.trusted(alg).kid}),
            TokenSignatureError,
            id=f"T-ALG-04-resigned-by-attacker-{alg}",
        )
        for alg in ["ES256", "RS256", "EdDSA"]
    ],
    pytest.param(
        lambda k: signed(k.es256, header={"alg": DROP}), MalformedTokenError, id="T-ALG-05-missing"
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"alg": ""}), MalformedTokenError, id="T-ALG-05-empty"
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"alg": 123}), MalformedTokenError, id="T-ALG-05-number"
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"alg": ["ES256"]}),
        MalformedTokenError,
        id="T-ALG-05-list",
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"alg": None}), MalformedTokenError, id="T-ALG-05-null"
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"alg": "es256"}),
        TokenSignatureError,
        id="T-ALG-05-lowercase-es256",
    ),
]


def _another_tokens_signature(alg: str) -> Build:
    def build(keys: Keys) -> str:
        key = keys.trusted(alg)
        victim = signed(key, sub="key:victim")
        other = signed(key, sub="key:attacker", scope="admin")
        return with_signature(other, split(victim)[2])

    return build


def _es256_rs(r: Callable[[int], int], s: Callable[[int], int]) -> Build:
    """An ES256 token whose ``(r, s)`` is derived from a valid pair."""

    def build(keys: Keys) -> str:
        token = signed(keys.es256)
        valid_r, valid_s = es256_rs(token)
        return with_signature(token, es256_signature(r(valid_r), s(valid_s)))

    return build


def _resized_signature(alg: str, change: Callable[[bytes], bytes]) -> Build:
    def build(keys: Keys) -> str:
        token = signed(keys.trusted(alg))
        return with_signature(token, change(unb64(split(token)[2])))

    return build


def _der_signature(keys: Keys) -> str:
    token = signed(keys.es256)
    return with_signature(token, encode_dss_signature(*es256_rs(token)))


def _eddsa_s_plus_order(keys: Keys) -> str:
    token = signed(keys.eddsa)
    signature = unb64(split(token)[2])
    s = int.from_bytes(signature[32:], "little") + ED25519_ORDER
    return with_signature(token, signature[:32] + s.to_bytes(32, "little"))


SIG_ATTACKS = [
    pytest.param(
        lambda k: with_signature(signed(k.es256), ""), MalformedTokenError, id="T-SIG-01-h.p."
    ),
    pytest.param(
        lambda k: signed(k.es256).rsplit(".", 1)[0], MalformedTokenError, id="T-SIG-01-h.p"
    ),
    pytest.param(
        lambda k: with_signature(signed(k.es256), "") + ".",
        MalformedTokenError,
        id="T-SIG-01-h.p..",
    ),
    *[
        pytest.param(
            _another_tokens_signature(alg),
            TokenSignatureError,
            id=f"T-SIG-02-{alg}-signature-of-another-token",
        )
        for alg in ["ES256", "RS256", "EdDSA"]
    ],
    *[
        pytest.param(
            lambda k, alg=alg, segment=segment, bit=bit: flip_bit(
                signed(k.trusted(alg)), segment, bit
            ),
            expected,
            id=f"T-SIG-02-{alg}-flip-{name}-bit-{bit}",
        )
        for alg in ["ES256", "RS256", "EdDSA"]
        for segment, name, expected in [
            (0, "header", InvalidTokenError),
            (1, "payload", TokenSignatureError),
            (2, "signature", TokenSignatureError),
        ]
        for bit in [0, 101, 263, -1]
    ],
    pytest.param(_es256_rs(lambda r: 0, lambda s: 0), TokenSignatureError, id="T-SIG-03-r0-s0"),
    pytest.param(_es256_rs(lambda r: 0, lambda s: s), TokenSignatureError, id="T-SIG-03-r0"),
    pytest.param(_es256_rs(lambda r: r, lambda s: 0), TokenSignatureError, id="T-SIG-03-s0"),
    pytest.param(
        _es256_rs(lambda r: P256_ORDER, lambda s: s), TokenSignatureError, id="T-SIG-03-r-is-n"
    ),
    pytest.param(
        _es256_rs(lambda r: r, lambda s: P256_ORDER), TokenSignatureError, id="T-SIG-03-s-is-n"
    ),
    pytest.param(
        _es256_rs(lambda r: P256_ORDER, lambda s: P256_ORDER),
        TokenSignatureError,
        id="T-SIG-03-r-is-n-s-is-n",
    ),
    pytest.param(
        _es256_rs(lambda r: 2**256 - 1, lambda s: s),
        TokenSignatureError,
        id="T-SIG-03-r-all-ones",
    ),
    *[
        pytest.param(
            _resized_signature(alg, change), TokenSignatureError, id=f"T-SIG-03-{alg}-{name}"
        )
        for alg in ["ES256", "RS256", "EdDSA"]
        for name, change in [
            ("all-zeros", lambda sig: bytes(len(sig))),
            ("truncated", lambda sig: sig[:-1]),
            ("trailing-zero", lambda sig: sig + b"\x00"),
            ("leading-zero", lambda sig: b"\x00" + sig),
            ("doubled", lambda sig: sig + sig),
            ("one-byte", lambda sig: sig[:1]),
        ]
    ],
    pytest.param(_eddsa_s_plus_order, TokenSignatureError, id="T-SIG-03-EdDSA-s-plus-L"),
    pytest.param(_der_signature, TokenSignatureError, id="T-SIG-04-ES256-DER-signature"),
]


def _json_serialization(flattened: bool) -> Build:
    def build(keys: Keys) -> str:
        header, payload, signature = split(signed(keys.es256))
        if flattened:
            return json.dumps({"protected": header, "payload": payload, "signature": signature})
        return json.dumps(
            {"payload": payload, "signatures": [{"protected": header, "signature": signature}]}
        )

    return build


def _segments(change: Callable[[str, str, str], str]) -> Build:
    def build(keys: Keys) -> str:
        return change(*split(signed(keys.es256)))

    return build


def _pad(segment: int, pad: str) -> Build:
    def build(keys: Keys) -> str:
        parts = list(split(signed(keys.es256)))
        parts[segment] += pad
        return ".".join(parts)

    return build


def _insert(segment: int, text: str, *, at: int = 5) -> Build:
    def build(keys: Keys) -> str:
        parts = list(split(signed(keys.es256)))
        parts[segment] = parts[segment][:at] + text + parts[segment][at:]
        return ".".join(parts)

    return build


FMT_ATTACKS = [
    pytest.param(_json_serialization(True), MalformedTokenError, id="T-FMT-01-flattened-json"),
    pytest.param(_json_serialization(False), MalformedTokenError, id="T-FMT-01-general-json"),
    pytest.param(
        lambda k: _json_serialization(True)(k).encode(),
        MalformedTokenError,
        id="T-FMT-01-flattened-json-bytes",
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}.{p}"), MalformedTokenError, id="T-FMT-02-2-segments"
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}.{p}.{s}.{s}"), MalformedTokenError, id="T-FMT-02-4-segments"
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}.{p}.{s}.{h}.{p}"),
        MalformedTokenError,
        id="T-FMT-02-5-segments",
    ),
    pytest.param(
        _segments(lambda h, p, s: f".{p}.{s}"), MalformedTokenError, id="T-FMT-02-empty-header"
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}..{s}"), MalformedTokenError, id="T-FMT-02-empty-payload"
    ),
    pytest.param(
        _segments(lambda h, p, s: f".{h}.{p}.{s}"), MalformedTokenError, id="T-FMT-02-leading-dot"
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}.{p}.{s}."), MalformedTokenError, id="T-FMT-02-trailing-dot"
    ),
    pytest.param(lambda k: "..", MalformedTokenError, id="T-FMT-02-only-dots"),
    pytest.param(lambda k: "", MalformedTokenError, id="T-FMT-02-empty-string"),
    *[
        pytest.param(
            _pad(index, pad),
            MalformedTokenError,
            id=f"T-FMT-03-{name}-padded-{pad}",
        )
        for index, name in enumerate(["header", "payload", "signature"])
        for pad in ["=", "=="]
    ],
    *[
        pytest.param(_insert(index, "="), MalformedTokenError, id=f"T-FMT-03-{name}-inner-equals")
        for index, name in enumerate(["header", "payload", "signature"])
    ],
    *[
        pytest.param(_insert(index, text), MalformedTokenError, id=f"T-FMT-04-{name}-{label}")
        for index, name in enumerate(["header", "payload", "signature"])
        for text, label in [
            ("+", "plus"),
            ("/", "slash"),
            (" ", "space"),
            ("?", "question-mark"),
            ("{", "brace"),
            ('"', "quote"),
            ("\x00", "nul"),
            ("\u00e9", "e-acute"),
            ("\u202e", "rtl-override"),
            ("\u200b", "zero-width-space"),
        ]
    ],
    pytest.param(
        _segments(lambda h, p, s: f"{h}%2E{p}.{s}"), MalformedTokenError, id="T-FMT-04-percent-2E"
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}\uff0e{p}.{s}"),
        MalformedTokenError,
        id="T-FMT-04-fullwidth-dot",
    ),
    pytest.param(
        _segments(lambda h, p, s: f"{h}.{p}.{s}\n"), MalformedTokenError, id="T-FMT-04-trailing-lf"
    ),
    pytest.param(
        _segments(lambda h, p, s: f" {h}.{p}.{s}"), MalformedTokenError, id="T-FMT-04-leading-space"
    ),
    pytest.param(
        _segments(lambda h, p, s: f"Bearer {h}.{p}.{s}"),
        MalformedTokenError,
        id="T-FMT-04-bearer-prefix",
    ),
    pytest.param(
        lambda k: signed(k.es256).encode() + b"\xff",
        MalformedTokenError,
        id="T-FMT-04-bytes-not-ascii",
    ),
    pytest.param(
        lambda k: signed(k.es256, padding="x" * 8192), MalformedTokenError, id="T-FMT-05-over-8-KiB"
    ),
    pytest.param(
        lambda k: "A" * 100_000_000 + ".e30.AAAA", MalformedTokenError, id="T-FMT-05-100-MB-header"
    ),
    pytest.param(lambda k: None, MalformedTokenError, id="T-FMT-05-not-a-string-None"),
    pytest.param(lambda k: 12345, MalformedTokenError, id="T-FMT-05-not-a-string-int"),
    pytest.param(
        lambda k: bytearray(signed(k.es256).encode()),
        MalformedTokenError,
        id="T-FMT-05-not-a-string-bytearray",
    ),
]

# Header or payload bytes that are valid base64url of something that is not a JSON object.
NOT_A_JSON_OBJECT = [
    (b"not json", "not-json"),
    (b"[]", "array"),
    (b'"at+jwt"', "string"),
    (b"null", "null"),
    (b"1", "number"),
    (b'{"a":1}ABCD', "trailing-garbage"),
    ('{"a":1}'.encode("utf-16"), "utf-16"),
    (b'\xef\xbb\xbf{"a":1}', "bom"),
    (b"\xff\xfe{}", "invalid-utf-8"),
    (b'{"a":NaN}', "nan"),
    (b'{"a":Infinity}', "infinity"),
    (b"[" * 100_000 + b"]" * 100_000, "deep-nesting"),
]


def _header_bytes(data: bytes) -> Build:
    return lambda keys: forge(data, claims_at(), key=keys.es256)


def _payload_bytes(data: bytes) -> Build:
    return lambda keys: signed_raw(keys.es256, data)


def _duplicate_header_member(keys: Keys) -> str:
    header = encode_segment(header_for(keys.es256))
    duplicated = unb64(header)[:-1] + b',"alg":"none"}'
    return forge(duplicated, claims_at(), key=keys.es256)


def _duplicate_claim(keys: Keys) -> str:
    payload = json.dumps(claims_at()).encode()[:-1] + b', "exp": 1}'
    return signed_raw(keys.es256, payload)


FMT_JSON_ATTACKS = [
    *[
        pytest.param(_header_bytes(data), MalformedTokenError, id=f"T-FMT-06-header-{name}")
        for data, name in NOT_A_JSON_OBJECT
    ],
    *[
        pytest.param(_payload_bytes(data), MalformedTokenError, id=f"T-FMT-06-payload-{name}")
        for data, name in NOT_A_JSON_OBJECT
    ],
    pytest.param(_duplicate_header_member, MalformedTokenError, id="T-FMT-06-header-duplicate-alg"),
    pytest.param(_duplicate_claim, MalformedTokenError, id="T-FMT-06-payload-duplicate-exp"),
    pytest.param(
        lambda k: forge(
            json.dumps(header_for(k.es256, typ="at+jwt\udfff")).encode(), claims_at(), key=k.es256
        ),
        MalformedTokenError,
        id="T-FMT-06-header-lone-surrogate",
    ),
    pytest.param(
        lambda k: signed_raw(k.es256, json.dumps(claims_at(sub="key:\ud800")).encode()),
        MalformedTokenError,
        id="T-FMT-06-payload-lone-surrogate",
    ),
]


def _embedded_jwk(keep_kid: bool) -> Build:
    def build(keys: Keys) -> str:
        attacker = keys.attacker_es256
        header = header_for(
            attacker,
            kid=keys.es256.kid if keep_kid else DROP,
            jwk=attacker.verification_key.to_jwk(),
        )
        return forge(header, claims_at(), key=attacker)

    return build


def _embedded_x5c(keys: Keys) -> str:
    attacker = keys.attacker_es256
    der = _self_signed_certificate(attacker.private_key).public_bytes(serialization.Encoding.DER)
    header = header_for(attacker, kid=keys.es256.kid, x5c=[base64.b64encode(der).decode()])
    return forge(header, claims_at(), key=attacker)


def _with_header(**members: object) -> Build:
    return lambda keys: signed(keys.es256, header=members)


KID_INJECTIONS: list[tuple[object, str, type[InvalidTokenError]]] = [
    ("' OR 1=1--", "sql-injection", MalformedTokenError),
    ("../../../../dev/null", "path-traversal", TokenSignatureError),
    ("/proc/self/environ", "proc-environ", TokenSignatureError),
    ("http://127.0.0.1/jwks", "url", TokenSignatureError),
    ("", "empty", MalformedTokenError),
    (None, "null", MalformedTokenError),
    (123, "number", MalformedTokenError),
    ({}, "object", MalformedTokenError),
    (["kid"], "list", MalformedTokenError),
    ("k" * 129, "129-chars", MalformedTokenError),
    ("k" * 65_536, "64-KiB", MalformedTokenError),
    ("kid\x00", "nul", MalformedTokenError),
    ("\u202ekid", "rtl-override", MalformedTokenError),
]

HDR_ATTACKS = [
    pytest.param(_with_header(foo=1), MalformedTokenError, id="T-HDR-01-unknown-foo"),
    pytest.param(_with_header(cty="JWT"), MalformedTokenError, id="T-HDR-01-cty"),
    pytest.param(_with_header(b64=True), MalformedTokenError, id="T-HDR-01-b64-true"),
    pytest.param(_with_header(zip="DEF"), MalformedTokenError, id="T-HDR-01-zip"),
    pytest.param(_with_header(x5t="AAAA"), MalformedTokenError, id="T-HDR-01-x5t"),
    pytest.param(_embedded_jwk(keep_kid=True), MalformedTokenError, id="T-HDR-02-jwk-real-kid"),
    pytest.param(_embedded_jwk(keep_kid=False), MalformedTokenError, id="T-HDR-02-jwk-no-kid"),
    pytest.param(_embedded_x5c, MalformedTokenError, id="T-HDR-02-x5c-attacker-certificate"),
    pytest.param(_with_header(crit=["x"], x=1), MalformedTokenError, id="T-HDR-04-crit-x-present"),
    pytest.param(_with_header(crit=["x"]), MalformedTokenError, id="T-HDR-04-crit-x-absent"),
    pytest.param(_with_header(crit=[]), MalformedTokenError, id="T-HDR-04-crit-empty"),
    pytest.param(_with_header(crit="x"), MalformedTokenError, id="T-HDR-04-crit-not-a-list"),
    pytest.param(_with_header(crit=["exp"]), MalformedTokenError, id="T-HDR-04-crit-exp"),
    pytest.param(
        _with_header(crit=["b64"], b64=False), MalformedTokenError, id="T-HDR-04-crit-b64-false"
    ),
    *[
        pytest.param(_with_header(kid=kid), expected, id=f"T-HDR-05-kid-{name}")
        for kid, name, expected in KID_INJECTIONS
    ],
    pytest.param(
        lambda k: signed(k.es256, header={"kid": k.attacker_es256.kid}),
        TokenSignatureError,
        id="T-HDR-05-kid-of-another-deployment",
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"kid": k.es256.kid.swapcase()}),
        TokenSignatureError,
        id="T-HDR-05-kid-other-case",
    ),
    pytest.param(
        lambda k: signed(k.es256, header={"kid": DROP}),
        MalformedTokenError,
        id="T-HDR-06-no-kid-several-keys",
    ),
]

TYP_ATTACKS = [
    *[
        pytest.param(_with_header(typ=typ), TokenClaimsError, id=f"T-TYP-01-{name}")
        for typ, name in [
            (DROP, "missing"),
            ("JWT", "JWT"),
            ("jwt", "jwt"),
            ("id_token+jwt", "id_token+jwt"),
            ("refresh+jwt", "refresh+jwt"),
            ("at+jwt ", "trailing-space"),
            ("application/at+jwt; charset=utf-8", "with-parameter"),
            ("application/application/at+jwt", "double-prefix"),
            (["at+jwt"], "list"),
            (None, "null"),
        ]
    ],
    pytest.param(
        lambda k: generate_secret(SecretKind.REFRESH_TOKEN).value,
        MalformedTokenError,
        id="T-TYP-02-refresh-token-as-access-token",
    ),
    pytest.param(
        lambda k: generate_secret(SecretKind.API_KEY).value,
        MalformedTokenError,
        id="T-TYP-02-api-key-as-access-token",
    ),
]

#: Every row above, for the differential test against PyJWT.
ALL_ATTACKS = [
    *ALG_ATTACKS,
    *SIG_ATTACKS,
    *FMT_ATTACKS,
    *FMT_JSON_ATTACKS,
    *HDR_ATTACKS,
    *TYP_ATTACKS,
]


@pytest.mark.parametrize(("build", "expected"), ALG_ATTACKS)
def test_algorithm_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    assert_rejected(build(keys), trusted, expected)


@pytest.mark.parametrize(("build", "expected"), SIG_ATTACKS)
def test_signature_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    token = build(keys)
    if expected is InvalidTokenError:  # a flipped header bit fails wherever it lands
        with pytest.raises(InvalidTokenError):
            verify(token, trusted)
    else:
        assert_rejected(token, trusted, expected)


@pytest.mark.parametrize(("build", "expected"), [*FMT_ATTACKS, *FMT_JSON_ATTACKS])
def test_format_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    assert_rejected(build(keys), trusted, expected)


@pytest.mark.parametrize(("build", "expected"), HDR_ATTACKS)
def test_header_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    assert_rejected(build(keys), trusted, expected)


@pytest.mark.parametrize(("build", "expected"), TYP_ATTACKS)
def test_type_attacks_are_rejected(
    build: Build, expected: type[InvalidTokenError], keys: Keys, trusted: KeySet
) -> None:
    assert_rejected(build(keys), trusted, expected)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(_segments(lambda h, p, s: f"{h}.{p}"), id="T-FMT-02-2-segments"),
        pytest.param(_segments(lambda h, p, s: f"{h}.{p}.{s}.{s}"), id="T-FMT-02-4-segments"),
        pytest.param(_segments(lambda h, p, s: f"{h}.{p}.{s}="), id="T-FMT-03-padding"),
        pytest.param(_insert(0, "+"), id="T-FMT-04-plus"),
        pytest.param(lambda k: signed(k.es256, padding="x" * 8192), id="T-FMT-05-over-8-KiB"),
        pytest.param(lambda k: "A" * 100_000_000 + ".e30.AAAA", id="T-FMT-05-100-MB-header"),
    ],
)
def test_format_is_checked_before_any_decoding(
    build: Build, keys: Keys, trusted: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Malformed and oversized tokens are refused before any base64 or JSON work."""
    token = build(keys)

    def no_decoding(segment: str) -> bytes:
        raise AssertionError("a malformed token reached the base64 decoder")

    monkeypatch.setattr(tokens, "b64url_decode", no_decoding)
    monkeypatch.setattr(jws, "b64url_decode", no_decoding)

    with pytest.raises(MalformedTokenError):
        verify(token, trusted)


def test_escapes_and_surrogate_pairs_are_accepted(keys: Keys, trusted: KeySet) -> None:
    """Only lone surrogates are refused: an escaped header and a \\u-escaped emoji pass."""
    header = json.dumps(header_for(keys.es256)).replace("+", "\\u002b").encode()
    payload = json.dumps(claims_at(sub="key:\U0001f600")).encode()  # ASCII, pair-escaped
    assert b"\\ud83d\\ude00" in payload

    verified = verify(forge(header, payload, key=keys.es256), trusted)

    assert verified.subject == "key:\U0001f600"


def test_t_fmt_06_deep_json_is_rejected_when_the_size_limit_allows_it(
    keys: Keys, trusted: KeySet
) -> None:
    """T-FMT-06: with the length cap raised, 10^5-deep JSON still ends in MalformedTokenError."""
    deep = b"[" * 100_000 + b"]" * 100_000
    for token in (forge(deep, claims_at(), key=keys.es256), signed_raw(keys.es256, deep)):
        with pytest.raises(MalformedTokenError):
            verify(token, trusted, max_token_bytes=1_000_000)


@pytest.mark.parametrize("member", ["jku", "x5u"])
@pytest.mark.parametrize("kid", ["trusted", "unknown"])
def test_t_hdr_03_key_urls_in_the_header_are_never_fetched(
    member: str, kid: str, keys: Keys, trusted: KeySet
) -> None:
    """T-HDR-03: a token naming a jku or x5u is refused and the URL gets no request."""
    with recording_server() as server:
        url = f"{server.url}/jwks.json"
        header_kid = keys.es256.kid if kid == "trusted" else keys.attacker_es256.kid
        signer = keys.es256 if kid == "trusted" else keys.attacker_es256
        token = forge(header_for(signer, kid=header_kid, **{member: url}), claims_at(), key=signer)

        assert_rejected(token, trusted, MalformedTokenError)

        assert server.hits == []


def test_t_hdr_03_recording_server_does_record_requests() -> None:
    """The T-HDR-03 server does record a request, so its empty log above means something."""
    import urllib.request

    with recording_server() as server:
        with urllib.request.urlopen(f"{server.url}/probe") as response:  # noqa: S310 -- loopback
            assert response.status == 200

        assert server.hits == ["/probe"]


def test_t_hdr_06_no_kid_is_rejected_even_with_a_single_key(keys: Keys) -> None:
    """T-HDR-06: without a kid the verifier never falls back to trying its key(s)."""
    token = signed(keys.es256, header={"kid": DROP})

    assert_rejected(token, KeySet.of(keys.es256), MalformedTokenError)


@pytest.mark.parametrize(
    "typ",
    [
        pytest.param("at+jwt", id="T-TYP-01-at+jwt"),
        pytest.param("at+JWT", id="T-TYP-01-at+JWT"),
        pytest.param("AT+JWT", id="T-TYP-01-AT+JWT"),
        pytest.param("application/at+jwt", id="T-TYP-01-application-at+jwt"),
        pytest.param("Application/AT+jwt", id="T-TYP-01-Application-AT+jwt"),
    ],
)
def test_access_token_types_are_accepted_case_insensitively(
    typ: str, keys: Keys, trusted: KeySet
) -> None:
    token = signed(keys.es256, header={"typ": typ})

    assert verify(token, trusted).subject == "key:k1"


def test_t_typ_03_access_token_is_not_a_refresh_token(keys: Keys) -> None:
    """T-TYP-03 (core half): an access JWT presented as a refresh token fails the shape check."""
    token = signed(keys.es256)

    with pytest.raises(MalformedSecretError):
        parse_secret(token, SecretKind.REFRESH_TOKEN)


def test_t_sig_05_malleated_signature_verifies_but_jti_revocation_holds(
    keys: Keys, trusted: KeySet
) -> None:
    """T-SIG-05: (r, n - s) verifies, yet a jti-keyed revocation refuses both spellings."""
    token = signed(keys.es256)
    twin = malleate(token)
    assert twin != token
    # The crypto layer accepts the twin: it is a mathematically valid ECDSA signature.
    assert verify(twin, trusted).jti == verify(token, trusted).jti

    revocations = RevocationList()
    checker = verifier(trusted, revocation=revocations)
    checker.verify(token)  # cached under the original spelling
    revocations.revoke_token(verify(token, trusted).jti, expires_at=NOW + 900)

    with pytest.raises(RevokedTokenError):
        checker.verify(token)
    with pytest.raises(RevokedTokenError):
        checker.verify(twin)


def test_t_sig_05_high_s_is_accepted_like_low_s(keys: Keys, trusted: KeySet) -> None:
    """T-SIG-05: whichever half s lies in, its mirror verifies too (so never key on the string)."""
    token = signed(keys.es256)
    _, s = es256_rs(token)
    _, mirrored = es256_rs(malleate(token))

    assert s + mirrored == P256_ORDER
    assert verify(malleate(token), trusted).subject == "key:k1"


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "payload", "signature"])
def test_t_fmt_03_other_spellings_of_a_final_character_are_rejected(
    segment: int, alg: str, keys: Keys, trusted: KeySet
) -> None:
    """T-FMT-03: a last character with stray low bits (same bytes, other spelling) is refused."""
    token = signed(keys.trusted(alg))
    parts = list(split(token))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    rejected = 0
    for char in alphabet:
        if char == parts[segment][-1]:
            continue
        variant = parts.copy()
        variant[segment] = parts[segment][:-1] + char
        with pytest.raises(InvalidTokenError):
            verify(".".join(variant), trusted)
        rejected += 1

    assert rejected == 63


def test_t_sig_02_every_signature_bit_flip_is_rejected(keys: Keys, trusted: KeySet) -> None:
    """T-SIG-02: flipping any single bit of an ES256 signature is detected."""
    token = signed(keys.es256)
    for bit in range(512):
        with pytest.raises(TokenSignatureError):
            verify(flip_bit(token, 2, bit), trusted)


def test_a_valid_token_passes_the_same_checks(keys: Keys, trusted: KeySet, alg: str) -> None:
    """The baseline every row above mutates is itself accepted, for each algorithm."""
    verified = verify(signed(keys.trusted(alg)), trusted)

    assert verified.subject == "key:k1"
    assert verified.kid == keys.trusted(alg).kid
