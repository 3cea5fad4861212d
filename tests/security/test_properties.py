"""Property tests (hypothesis): mutations are refused, junk never crashes, issue -> verify holds.

Examples are derandomised so every run checks the same cases, and kept few enough that the
module runs in seconds; the keys come from the session fixtures.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keyturn.core._encoding import b64url_decode, b64url_encode, compact_json
from keyturn.core.signing import KeySet
from keyturn.core.tokens import VerifiedToken, issue_access_token
from keyturn.errors import InvalidTokenError
from tests.security.conftest import Keys
from tests.security.forge import (
    AUDIENCE,
    ISSUER,
    LEEWAY,
    NOW,
    claims_at,
    encode_segment,
    forge,
    header_for,
    signed,
    signed_raw,
    verifier,
    verify,
)

ALGORITHMS = ["ES256", "RS256", "EdDSA"]
PRINTABLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 NQCHAR, spelled out

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)

FEW = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def valid_tokens(keys: Keys) -> dict[str, str]:
    """One valid token per algorithm, each signed by the deployment's key."""
    return {alg: signed(keys.trusted(alg)) for alg in ALGORITHMS}


@st.composite
def single_byte_changes(draw: st.DrawFn, token: str) -> str:
    """``token`` with one character substituted, deleted or inserted (printable ASCII)."""
    operation = draw(st.sampled_from(["substitute", "delete", "insert"]))
    if operation == "insert":
        position = draw(st.integers(min_value=0, max_value=len(token)))
        return token[:position] + draw(PRINTABLE_ASCII) + token[position:]
    position = draw(st.integers(min_value=0, max_value=len(token) - 1))
    if operation == "delete":
        return token[:position] + token[position + 1 :]
    return token[:position] + draw(PRINTABLE_ASCII) + token[position + 1 :]


@pytest.mark.parametrize("alg", ALGORITHMS)
@FEW
@given(data=st.data())
def test_any_single_byte_change_is_rejected(
    alg: str, data: st.DataObject, valid_tokens: dict[str, str], trusted: KeySet
) -> None:
    """Substituting, deleting or inserting one printable character anywhere breaks the token.

    Base64url's final character can carry stray low bits that decode to the same bytes;
    the verifier refuses such non-canonical spellings, so even those changes must fail.
    """
    token = valid_tokens[alg]
    changed = data.draw(single_byte_changes(token))
    assume(changed != token)
    checker = verifier(trusted)
    checker.verify(token)  # the original is cached: a near miss must not hit it

    with pytest.raises(InvalidTokenError):
        verify(changed, trusted)
    with pytest.raises(InvalidTokenError):
        checker.verify(changed)


@pytest.mark.parametrize("alg", ALGORITHMS)
@settings(FEW, max_examples=60)
@given(data=st.data())
def test_any_single_byte_change_to_token_bytes_is_rejected(
    alg: str, data: st.DataObject, valid_tokens: dict[str, str], trusted: KeySet
) -> None:
    """The same for a token given as bytes, where the new byte may be any of 0-255."""
    token = valid_tokens[alg].encode()
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    assume(byte != token[position])
    changed = token[:position] + bytes([byte]) + token[position + 1 :]

    with pytest.raises(InvalidTokenError):
        verify(changed, trusted)


@FEW
@given(data=st.binary(max_size=70), last=st.sampled_from(BASE64URL))
def test_base64url_bytes_have_exactly_one_spelling(data: bytes, last: str) -> None:
    """RFC 7515 §2: decoding inverts encoding, and no other final character means the same."""
    encoded = b64url_encode(data)
    assert b64url_decode(encoded) == data
    other = encoded[:-1] + last
    if not encoded or other == encoded:
        return

    try:
        decoded = b64url_decode(other)
    except ValueError:
        return
    assert decoded != data


@FEW
@given(data=st.binary(max_size=70))
def test_base64url_is_the_standard_librarys_without_padding(data: bytes) -> None:
    assert b64url_encode(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@FEW
@given(value=JSON_VALUES)
def test_compact_json_is_json_dumps_without_whitespace(value: Any) -> None:
    """Byte for byte what `json.dumps` writes with these options: tokens never change."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    assert compact_json(value) == expected.encode()


@pytest.mark.parametrize("value", [float("nan"), [float("inf")], {"a": -float("inf")}])
def test_compact_json_refuses_nan_and_infinity(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        compact_json(value)


def _outcome(value: Any, trusted: KeySet) -> VerifiedToken | None:
    """Verify ``value``: a result, or None for an `InvalidTokenError`; anything else escapes."""
    try:
        return verify(value, trusted)
    except InvalidTokenError:
        return None


@FEW
@given(value=st.text() | st.binary())
def test_arbitrary_input_only_ever_raises_invalid_token(
    value: str | bytes, trusted: KeySet
) -> None:
    assert _outcome(value, trusted) is None


@FEW
@given(
    segments=st.lists(st.text(alphabet=BASE64URL, max_size=60), min_size=1, max_size=5),
)
def test_token_shaped_junk_only_ever_raises_invalid_token(
    segments: list[str], trusted: KeySet
) -> None:
    assert _outcome(".".join(segments), trusted) is None


@FEW
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku", "jwk", "x"]), JSON_VALUES, max_size=4
    ),
    payload=JSON_VALUES,
    signature=st.binary(max_size=300),
)
def test_json_shaped_forgeries_only_ever_raise_invalid_token(
    header: dict[str, Any], payload: Any, signature: bytes, trusted: KeySet
) -> None:
    assert _outcome(forge(header, payload, signature), trusted) is None


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Claim sets near and far from valid: each member kept, dropped, nudged or replaced."""
    claims = claims_at()
    nudged = {
        "exp": st.integers(min_value=NOW - 2 * LEEWAY, max_value=NOW + 100_000),
        "iat": st.integers(min_value=NOW - 100_000, max_value=NOW + 2 * LEEWAY),
        "nbf": st.integers(min_value=NOW - 10, max_value=NOW + 2 * LEEWAY),
        "aud": st.sampled_from([AUDIENCE, [AUDIENCE], ["other", AUDIENCE], "other", []]),
        "iss": st.sampled_from([ISSUER, ISSUER + "/", ISSUER.upper()]),
        "scope": st.sampled_from(["", "read write", "a\\b", " read ", "read\twrite"]),
        "sub": st.text(max_size=300),
    }
    for name in [*claims, "nbf"]:
        choice = draw(st.sampled_from(["keep", "keep", "drop", "nudge", "replace"]))
        if choice == "drop":
            claims.pop(name, None)
        elif choice == "nudge" and name in nudged:
            claims[name] = draw(nudged[name])
        elif choice == "replace":
            claims[name] = draw(JSON_VALUES)
    return claims


@pytest.mark.parametrize("alg", ALGORITHMS)
@FEW
@given(claims=claim_sets())
def test_signed_arbitrary_claims_are_verified_or_rejected_cleanly(
    alg: str, claims: dict[str, Any], keys: Keys, trusted: KeySet
) -> None:
    """Validly signed, arbitrary claims: an InvalidTokenError, or a token meeting every rule."""
    token = signed_raw(keys.trusted(alg), json.dumps(claims).encode())

    verified = _outcome(token, trusted)

    if verified is not None:
        assert claims["iss"] == ISSUER
        aud = claims["aud"]
        assert aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud)
        assert type(claims["exp"]) is int
        assert type(claims["iat"]) is int
        assert claims["exp"] > NOW - LEEWAY
        assert claims["iat"] <= NOW + LEEWAY
        assert claims["exp"] - claims["iat"] <= 172_800
        assert claims.get("nbf", NOW) <= NOW + LEEWAY
        for name in ("sub", "jti", "client_id"):
            assert isinstance(claims[name], str)
            assert 1 <= len(claims[name]) <= 255
        assert verified.subject == claims["sub"]
        assert verified.scopes == frozenset(claims.get("scope", "").split())


@pytest.mark.parametrize("alg", ALGORITHMS)
@FEW
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u", "jwk", "b64"]),
        JSON_VALUES,
        max_size=3,
    ),
)
def test_signed_arbitrary_headers_are_accepted_only_when_exactly_right(
    alg: str, header: dict[str, Any], keys: Keys, trusted: KeySet
) -> None:
    """A validly signed token passes only if its header is alg, kid (and typ) as issued."""
    key = keys.trusted(alg)
    merged = {**header_for(key), **header}
    token = forge(encode_segment(merged), claims_at(), key=key)

    verified = _outcome(token, trusted)

    if verified is not None:
        assert merged.keys() <= {"alg", "kid", "typ"}
        assert merged["alg"] == alg
        assert merged["kid"] == key.kid
        assert merged["typ"].lower().removeprefix("application/") == "at+jwt"


ISSUE_REQUESTS = st.fixed_dictionaries(
    {
        "issuer": st.just(ISSUER),
        "subject": st.text(min_size=1, max_size=255),
        "client_id": st.text(min_size=1, max_size=255),
        "scopes": st.lists(
            st.from_regex(SCOPE_TOKEN, fullmatch=True) | st.text(max_size=12), max_size=5
        ),
        "identifier": st.none() | st.text(max_size=50),
        "audience": st.sampled_from([AUDIENCE, [AUDIENCE], ["other", AUDIENCE]]),
        "now": st.integers(min_value=0, max_value=2**40),
        "lifetime": st.integers(min_value=1, max_value=86_400),
    }
)


@pytest.mark.parametrize("alg", ALGORITHMS)
@settings(FEW, max_examples=60)
@given(issue=ISSUE_REQUESTS)
def test_issue_then_verify_round_trips(
    alg: str, issue: dict[str, Any], keys: Keys, trusted: KeySet
) -> None:
    """What is issued verifies to the same facts; a scope outside the grammar is refused."""
    key = keys.trusted(alg)
    if not all(SCOPE_TOKEN.fullmatch(scope) for scope in issue["scopes"]):
        with pytest.raises(ValueError, match="scope"):
            issue_access_token(key, **issue)
        return

    issued = issue_access_token(key, **issue)
    verified = verify(issued.token, trusted, now=issue["now"] + issue["lifetime"] - 1)

    assert verified.subject == issue["subject"]
    assert verified.client_id == issue["client_id"]
    assert verified.scopes == frozenset(issue["scopes"])
    assert verified.identifier == issue["identifier"]
    assert verified.jti == issued.jti
    assert verified.kid == key.kid
    assert verified.issued_at == issue["now"]
    assert verified.expires_at == issue["now"] + issue["lifetime"]
    assert dict(verified.claims) == dict(issued.claims)
