"""API keys and refresh tokens: format, entropy, checksum, hashing and the legacy-key rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import zlib
from typing import Any

import pytest

from keyturn.core.secrets import (
    ParsedSecret,
    Pepper,
    SecretKind,
    check_legacy_key,
    generate_secret,
    looks_generated,
    parse_secret,
    secret_hashes_match,
)
from keyturn.errors import InvalidRequestError, MalformedSecretError

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
API_KEY_FORMAT = re.compile(r"kt_([0-9A-Za-z]{16})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})")
REFRESH_TOKEN_FORMAT = re.compile(r"ktr_([0-9A-Za-z]{16})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})")
PEPPER = Pepper(bytes(range(32)))


def _from_base62(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + BASE62.index(char)
    return value


def _crc_base62(body: str) -> str:
    """The checksum spelled out: CRC32 of the body, as 6 base62 digits, most significant first."""
    number, digits = zlib.crc32(body.encode("ascii")), []
    for _ in range(6):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


class TestFormat:
    def test_api_key_format(self) -> None:
        secret = generate_secret(SecretKind.API_KEY)

        match = API_KEY_FORMAT.fullmatch(secret.value)

        assert match is not None
        assert len(secret.value) == 69  # 3 + 16 + 1 + 43 + 6
        assert secret.id == match.group(1)
        assert secret.kind is SecretKind.API_KEY
        assert match.group(3) == _crc_base62(secret.value[:-6])

    def test_refresh_token_format(self) -> None:
        secret = generate_secret(SecretKind.REFRESH_TOKEN)

        match = REFRESH_TOKEN_FORMAT.fullmatch(secret.value)

        assert match is not None
        assert len(secret.value) == 70
        assert secret.kind is SecretKind.REFRESH_TOKEN
        assert match.group(3) == _crc_base62(secret.value[:-6])

    def test_checksums_match_the_spelled_out_crc(self) -> None:
        """Over many secrets, so over checksums of every shape, it is CRC32 in base62."""
        values = [generate_secret(SecretKind.REFRESH_TOKEN).value for _ in range(2_000)]

        assert all(value[-6:] == _crc_base62(value[:-6]) for value in values)
        assert {value[-6] for value in values} == set("01234")  # 2**32 // 62**5 == 4
        assert len({value[-5] for value in values}) == 62

    def test_prefixes(self) -> None:
        assert SecretKind.API_KEY.value == "kt"
        assert SecretKind.REFRESH_TOKEN.value == "ktr"
        assert SecretKind.API_KEY.label == "API key"
        assert SecretKind.REFRESH_TOKEN.label == "refresh token"

    def test_secret_part_carries_all_256_random_bits(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The 43-character part encodes the 32 bytes drawn from `secrets`, none dropped."""
        drawn: list[int] = []

        def token_bytes(n: int) -> bytes:
            drawn.append(n)
            return b"\xff" * n

        monkeypatch.setattr(secrets, "token_bytes", token_bytes)

        secret = generate_secret(SecretKind.API_KEY)

        assert drawn == [32]
        match = API_KEY_FORMAT.fullmatch(secret.value)
        assert match is not None
        assert _from_base62(match.group(2)) == 2**256 - 1

    def test_secret_part_spans_256_bits(self) -> None:
        """43 base62 digits hold at least 256 bits, and generated values use the whole range."""
        values = [
            _from_base62(secret.value[20:63])
            for secret in (generate_secret(SecretKind.API_KEY) for _ in range(200))
        ]

        assert 62**43 >= 2**256
        assert all(value < 2**256 for value in values)
        assert max(values).bit_length() == 256

    def test_secrets_and_ids_are_unique(self) -> None:
        generated = [generate_secret(SecretKind.API_KEY) for _ in range(2_000)]

        assert len({secret.value for secret in generated}) == 2_000
        assert len({secret.id for secret in generated}) == 2_000

    def test_existing_id_is_kept(self) -> None:
        secret = generate_secret(SecretKind.API_KEY, secret_id="0123456789abcdef")

        assert secret.id == "0123456789abcdef"
        assert secret.value.startswith("kt_0123456789abcdef_")
        assert parse_secret(secret.value, SecretKind.API_KEY) == secret

    @pytest.mark.parametrize(
        "secret_id",
        ["short", "0123456789abcdef0", "0123456789abcde_", "0123456789abcdé"],
    )
    def test_bad_ids_are_refused(self, secret_id: str) -> None:
        with pytest.raises(ValueError, match="16 base62"):
            generate_secret(SecretKind.API_KEY, secret_id=secret_id)


class TestParse:
    @pytest.mark.parametrize("kind", list(SecretKind))
    def test_generated_secret_parses(self, kind: SecretKind) -> None:
        secret = generate_secret(kind)

        assert parse_secret(secret.value, kind) == secret

    @pytest.mark.parametrize("kind", list(SecretKind))
    def test_every_single_character_change_is_rejected(self, kind: SecretKind) -> None:
        """Any substitution at any position (id, secret or checksum) fails the shape or CRC."""
        value = generate_secret(kind).value
        rejected = 0
        for position, original in enumerate(value):
            for char in BASE62 + "_-":
                if char == original:
                    continue
                with pytest.raises(MalformedSecretError):
                    parse_secret(value[:position] + char + value[position + 1 :], kind)
                rejected += 1

        assert rejected == len(value) * 63

    def test_transposed_neighbours_are_rejected(self) -> None:
        value = generate_secret(SecretKind.API_KEY).value
        for position in range(len(value) - 1):
            swapped = (
                value[:position] + value[position + 1] + value[position] + value[position + 2 :]
            )
            if swapped != value:
                with pytest.raises(MalformedSecretError):
                    parse_secret(swapped, SecretKind.API_KEY)

    def test_every_truncation_and_extension_is_rejected(self) -> None:
        value = generate_secret(SecretKind.API_KEY).value

        for length in range(len(value)):
            with pytest.raises(MalformedSecretError):
                parse_secret(value[:length], SecretKind.API_KEY)
        for extra in ("0", "_", " ", "\n"):
            with pytest.raises(MalformedSecretError):
                parse_secret(value + extra, SecretKind.API_KEY)

    @pytest.mark.parametrize(
        ("make", "kind"),
        [
            pytest.param(
                lambda: generate_secret(SecretKind.REFRESH_TOKEN).value,
                SecretKind.API_KEY,
                id="refresh-token-as-api-key",
            ),
            pytest.param(
                lambda: generate_secret(SecretKind.API_KEY).value,
                SecretKind.REFRESH_TOKEN,
                id="api-key-as-refresh-token",
            ),
            pytest.param(
                lambda: "KT" + generate_secret(SecretKind.API_KEY).value[2:],
                SecretKind.API_KEY,
                id="upper-case-prefix",
            ),
            pytest.param(
                lambda: "kt-" + generate_secret(SecretKind.API_KEY).value[3:],
                SecretKind.API_KEY,
                id="dash-separator",
            ),
            pytest.param(
                lambda: "xx" + generate_secret(SecretKind.API_KEY).value[2:],
                SecretKind.API_KEY,
                id="other-prefix",
            ),
        ],
    )
    def test_wrong_prefix_is_rejected(self, make: Any, kind: SecretKind) -> None:
        with pytest.raises(MalformedSecretError):
            parse_secret(make(), kind)

    @pytest.mark.parametrize("value", [None, b"kt_", 42, ["kt_"]])
    def test_non_strings_are_rejected(self, value: Any) -> None:
        with pytest.raises(MalformedSecretError):
            parse_secret(value, SecretKind.API_KEY)

    def test_checksum_failure_stops_before_any_lookup(self) -> None:
        """The shape check is the gate: a storage lookup placed after it is never reached."""
        value = generate_secret(SecretKind.API_KEY).value
        typo = value[:30] + ("a" if value[30] != "a" else "b") + value[31:]
        lookups: list[bytes] = []

        def authenticate(presented: str) -> None:
            parse_secret(presented, SecretKind.API_KEY)
            lookups.append(PEPPER.hash(presented, SecretKind.API_KEY))

        with pytest.raises(MalformedSecretError, match="checksum"):
            authenticate(typo)
        authenticate(value)

        assert lookups == [PEPPER.hash(value, SecretKind.API_KEY)]

    def test_error_is_an_invalid_request_that_never_echoes_the_value(self) -> None:
        value = generate_secret(SecretKind.API_KEY).value
        typo = value[:-1] + ("0" if value[-1] != "0" else "1")

        with pytest.raises(MalformedSecretError) as exc_info:
            parse_secret(typo, SecretKind.API_KEY)

        assert isinstance(exc_info.value, InvalidRequestError)
        assert exc_info.value.status_code == 400
        assert typo[3:] not in str(exc_info.value)
        assert typo[20:63] not in repr(exc_info.value)

    def test_checksum_is_compared_in_constant_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[tuple[Any, Any]] = []
        real = hmac.compare_digest

        def spy(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        value = generate_secret(SecretKind.API_KEY).value

        parse_secret(value, SecretKind.API_KEY)

        assert calls == [(value[-6:], value[-6:])]


def test_str_and_repr_never_show_the_secret() -> None:
    secret = generate_secret(SecretKind.API_KEY)
    secret_part = secret.value[20:63]

    assert str(secret) == f"kt_{secret.id}_…"
    assert secret_part not in str(secret)
    assert secret_part not in repr(secret)
    assert secret.value not in f"{secret}"
    assert isinstance(secret, ParsedSecret)


class TestPepper:
    def test_hash_is_hmac_sha256_of_kind_and_value(self) -> None:
        value = generate_secret(SecretKind.API_KEY).value

        expected = hmac.new(bytes(range(32)), b"kt\x00" + value.encode(), hashlib.sha256).digest()

        assert PEPPER.hash(value, SecretKind.API_KEY) == expected
        assert len(expected) == 32

    def test_each_hash_starts_from_the_bare_key(self) -> None:
        """Hashing one value leaves nothing behind that changes the next hash."""
        first = PEPPER.hash("ktr_a", SecretKind.REFRESH_TOKEN)
        PEPPER.hash("something else", SecretKind.API_KEY)

        assert PEPPER.hash("ktr_a", SecretKind.REFRESH_TOKEN) == first
        assert first == hmac.digest(bytes(range(32)), b"ktr\x00ktr_a", hashlib.sha256)

    def test_hash_differs_per_kind(self) -> None:
        value = "the same string"

        assert PEPPER.hash(value, SecretKind.API_KEY) != PEPPER.hash(
            value, SecretKind.REFRESH_TOKEN
        )

    def test_hash_differs_per_pepper(self) -> None:
        value = generate_secret(SecretKind.API_KEY).value

        assert PEPPER.hash(value, SecretKind.API_KEY) != Pepper.generate().hash(
            value, SecretKind.API_KEY
        )

    def test_matches(self) -> None:
        value = generate_secret(SecretKind.REFRESH_TOKEN).value
        stored = PEPPER.hash(value, SecretKind.REFRESH_TOKEN)

        assert PEPPER.matches(value, SecretKind.REFRESH_TOKEN, stored)
        assert not PEPPER.matches(value, SecretKind.API_KEY, stored)
        assert not PEPPER.matches(value + "x", SecretKind.REFRESH_TOKEN, stored)

    def test_matches_compares_in_constant_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        stored = PEPPER.hash("k", SecretKind.API_KEY)

        assert PEPPER.matches("k", SecretKind.API_KEY, stored)
        assert secret_hashes_match(stored, bytes(32)) is False
        assert calls == [(stored, stored), (stored, bytes(32))]

    def test_repr_hides_the_bytes(self) -> None:
        key = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
        pepper = Pepper(key)

        assert repr(pepper) == "Pepper(<hidden>)"
        assert str(pepper) == "Pepper(<hidden>)"
        assert key.hex() not in repr(pepper)
        assert repr(key) not in f"{pepper!r} {pepper!s}"
        assert not hasattr(pepper, "__dict__")

    def test_fingerprint_is_a_truncated_hmac_of_a_fixed_label(self) -> None:
        """First 16 bytes of HMAC-SHA-256(pepper, label), base64url: a known vector."""
        # The HMAC of b"keyturn pepper fingerprint v1" under bytes(range(32)) starts with
        # c648551927291251cabb92efa51ffa3a; those 16 bytes in base64url:
        assert PEPPER.fingerprint() == "xkhVGScpElHKu5LvpR_6Og"

    def test_fingerprint_is_stable_and_differs_per_pepper(self) -> None:
        same = Pepper(bytes(range(32)))
        others = {Pepper.generate().fingerprint() for _ in range(50)}

        assert same.fingerprint() == PEPPER.fingerprint()
        assert PEPPER.fingerprint() not in others
        assert len(others) == 50
        assert Pepper(bytes(range(32)) + b"!").fingerprint() != PEPPER.fingerprint()

    def test_fingerprint_reveals_no_pepper_bytes(self) -> None:
        key = bytes(range(32))
        fingerprint = PEPPER.fingerprint()
        decoded = base64.urlsafe_b64decode(fingerprint + "==")

        assert len(decoded) == 16
        assert decoded not in key
        for encoding in (key.hex(), base64.urlsafe_b64encode(key).decode().rstrip("=")):
            assert fingerprint[:8] not in encoding
        # Nor is it the pepper's plain hash, or any stored secret's hash.
        assert decoded != hashlib.sha256(key).digest()[:16]
        assert decoded != PEPPER.hash("", SecretKind.API_KEY)[:16]

    @pytest.mark.parametrize("length", [0, 16, 31])
    def test_short_pepper_is_refused(self, length: int) -> None:
        with pytest.raises(ValueError, match="32 bytes"):
            Pepper(b"\x01" * length)


class TestLegacyKeys:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("my-legacy-key", id="plain"),
            pytest.param("x", id="one-char"),
            pytest.param("k" * 1024, id="1024-chars"),
            pytest.param("clé secrète", id="printable-unicode"),
            pytest.param("kt", id="prefix-without-underscore"),
            pytest.param("KT_upper", id="upper-case-prefix"),
        ],
    )
    def test_accepted(self, value: str) -> None:
        assert check_legacy_key(value) == value

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("k" * 1025, id="1025-chars"),
            pytest.param("line\nbreak", id="newline"),
            pytest.param("nul\x00", id="nul"),
            pytest.param("tab\there", id="tab"),
            pytest.param("\x1b[31mred", id="ansi-escape"),
            pytest.param("kt_chosen", id="api-key-prefix"),
            pytest.param("ktr_chosen", id="refresh-token-prefix"),
            pytest.param(None, id="none"),
            pytest.param(b"bytes", id="bytes"),
        ],
    )
    def test_refused(self, value: Any) -> None:
        with pytest.raises(MalformedSecretError) as exc_info:
            check_legacy_key(value)

        if isinstance(value, str) and len(value) > 3:
            assert value not in str(exc_info.value)

    def test_looks_generated(self) -> None:
        assert looks_generated(generate_secret(SecretKind.API_KEY).value)
        assert looks_generated(generate_secret(SecretKind.REFRESH_TOKEN).value)
        assert looks_generated("kt_anything")
        assert not looks_generated("k_t")
        assert not looks_generated("legacy")
