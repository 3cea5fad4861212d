"""Access tokens: issuing, verifying, the verified-token cache and revocation."""

from __future__ import annotations

import base64
import dataclasses
import secrets
import traceback
import uuid
from types import MappingProxyType
from typing import Any

import pytest

from keyturn.core.revocation import REVOCATION_MARGIN, RevocationList
from keyturn.core.signing import KeySet, SigningKey, VerificationKey
from keyturn.core.tokens import (
    REGISTERED_CLAIMS,
    IssuedToken,
    TokenVerifier,
    VerifiedToken,
    VerifiedTokenCache,
    issue_access_token,
    new_token_id,
    peek_unverified_claims,
    verify_access_token,
)
from keyturn.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeyturnError,
    MalformedSecretError,
    MalformedTokenError,
    PolicyViolation,
    RevokedTokenError,
    SigningKeyError,
    StorageUnavailableError,
    TokenClaimsError,
    TokenSignatureError,
)
from tests.security.forge import DROP, claims_at, forge, header_for

NOW = 1_700_000_000
ISSUER = "https://kt.example"
AUDIENCE = "api"


def _issue(key: SigningKey, *, now: int = NOW, **options: Any) -> IssuedToken:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": "key:k1",
        "client_id": "k1",
        "lifetime": 900,
        "scopes": ["read", "write"],
        **options,
    }
    return issue_access_token(key, now=now, **settings)


def _verify(token: str | bytes, key_set: KeySet, *, now: int = NOW) -> VerifiedToken:
    return verify_access_token(token, keys=key_set, issuer=ISSUER, audience=AUDIENCE, now=now)


def _verifier(key_set: Any, **options: Any) -> TokenVerifier:
    return TokenVerifier(key_set, issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW, **options)


class MutableKeys:
    """A key lookup that can change without the verifier being told."""

    def __init__(self, *keys: VerificationKey) -> None:
        self.by_kid = {key.kid: key for key in keys}

    def get(self, kid: str) -> VerificationKey | None:
        return self.by_kid.get(kid)


class TestIssue:
    def test_issued_token_verifies(self, signing_key: SigningKey) -> None:
        issued = _issue(signing_key, identifier="svc-1")

        verified = _verify(issued.token, KeySet.of(signing_key))

        assert verified.subject == "key:k1"
        assert verified.client_id == "k1"
        assert verified.jti == issued.jti
        assert verified.kid == signing_key.kid
        assert verified.scopes == {"read", "write"}
        assert verified.issued_at == 1_700_000_000
        assert verified.expires_at == 1_700_000_900
        assert verified.identifier == "svc-1"

    def test_header_is_rfc_9068(self, signing_key: SigningKey) -> None:
        header, _ = peek_unverified_claims(_issue(signing_key).token)

        assert header == {"alg": signing_key.alg, "kid": signing_key.kid, "typ": "at+jwt"}

    def test_header_segment_is_the_compact_json_of_alg_kid_typ(
        self, signing_key: SigningKey
    ) -> None:
        """The header is encoded once per key; it must still be spelled exactly as before."""
        header = f'{{"alg":"{signing_key.alg}","kid":"{signing_key.kid}","typ":"at+jwt"}}'

        for _ in range(2):
            segment = _issue(signing_key).token.split(".")[0]

            assert segment == base64.urlsafe_b64encode(header.encode()).rstrip(b"=").decode()

    def test_claims_are_rfc_9068_plus_the_legacy_ones(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key, identifier="svc-1")

        _, claims = peek_unverified_claims(issued.token)

        assert claims == {
            "iss": "https://kt.example",
            "sub": "key:k1",
            "aud": "api",
            "exp": 1_700_000_900,
            "iat": 1_700_000_000,
            "jti": issued.jti,
            "client_id": "k1",
            "scope": "read write",
            "token_id": issued.jti,
            "identifier": "svc-1",
        }
        assert dict(issued.claims) == claims

    def test_issued_token_facts(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key)

        assert issued.kid == es256_key.kid
        assert issued.issued_at == 1_700_000_000
        assert issued.expires_at == 1_700_000_900
        assert issued.expires_in == 900
        assert isinstance(issued.claims, MappingProxyType)
        assert issued.token not in repr(issued)

    def test_identifier_is_left_out_when_not_given(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key)

        assert "identifier" not in issued.claims
        assert _verify(issued.token, KeySet.of(es256_key)).identifier is None

    def test_audience_list(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key, audience=["billing", "api"])

        assert issued.claims["aud"] == ["billing", "api"]
        assert _verify(issued.token, KeySet.of(es256_key)).jti == issued.jti

    def test_scope_is_sorted_and_deduplicated(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key, scopes=["write", "read", "write"])

        assert issued.claims["scope"] == "read write"

    def test_no_scopes_gives_an_empty_scope(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key, scopes=[])

        assert issued.claims["scope"] == ""
        assert _verify(issued.token, KeySet.of(es256_key)).scopes == frozenset()

    @pytest.mark.parametrize(
        "scopes",
        [
            pytest.param(["read write"], id="space-inside-a-token"),
            pytest.param([""], id="empty-token"),
            pytest.param(['say"hi"'], id="quote"),
            pytest.param(["back\\slash"], id="backslash"),
            pytest.param(["caf\u00e9"], id="non-ascii"),
            pytest.param(["tab\there"], id="tab"),
        ],
    )
    def test_scope_tokens_outside_the_grammar_are_refused(
        self, es256_key: SigningKey, scopes: list[str]
    ) -> None:
        """RFC 6749 §3.3: each scope token is 1*NQCHAR; none may smuggle in a second one."""
        with pytest.raises(ValueError, match="scope"):
            _issue(es256_key, scopes=scopes)

    def test_explicit_jti_is_used(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key, jti="jti-1")

        assert issued.jti == "jti-1"
        assert issued.claims["jti"] == issued.claims["token_id"] == "jti-1"

    def test_extra_claims_are_added(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key, extra_claims={"level": 2, "roles": ["reader"]})

        verified = _verify(issued.token, KeySet.of(es256_key))

        assert verified.claims["level"] == 2
        assert verified.claims["roles"] == ["reader"]

    @pytest.mark.parametrize(
        "claim",
        [
            "iss",
            "sub",
            "aud",
            "exp",
            "nbf",
            "iat",
            "jti",
            "client_id",
            "scope",
            "identifier",
            "token_id",
        ],
    )
    def test_extra_claims_cannot_set_registered_claims(
        self, es256_key: SigningKey, claim: str
    ) -> None:
        with pytest.raises(PolicyViolation) as exc_info:
            _issue(es256_key, extra_claims={claim: "forged"})

        assert exc_info.value.claim == claim
        assert claim in REGISTERED_CLAIMS


class TestTokenId:
    def test_jti_carries_128_random_bits(self) -> None:
        jti = new_token_id()

        assert len(uuid.UUID(jti).bytes) == 16
        assert str(uuid.UUID(jti)) == jti

    def test_jti_is_drawn_from_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """All 128 bits come from `secrets.token_bytes(16)`, none fixed by a UUID version."""
        monkeypatch.setattr(secrets, "token_bytes", lambda n: b"\xff" * n)

        assert new_token_id() == "ffffffff-ffff-ffff-ffff-ffffffffffff"

    def test_jti_is_spelled_as_str_of_a_uuid(self, monkeypatch: pytest.MonkeyPatch) -> None:
        drawn = bytes.fromhex("00112233445566778899aabbccddeeff")
        monkeypatch.setattr(secrets, "token_bytes", lambda n: drawn[:n])

        assert new_token_id() == "00112233-4455-6677-8899-aabbccddeeff"
        assert new_token_id() == str(uuid.UUID(bytes=drawn))

    def test_jti_is_unique(self, es256_key: SigningKey) -> None:
        ids = {new_token_id() for _ in range(10_000)}
        issued = {_issue(es256_key).jti for _ in range(200)}

        assert len(ids) == 10_000
        assert len(issued) == 200


class TestVerify:
    def test_required_scopes_present(self, es256_key: SigningKey) -> None:
        token = _issue(es256_key).token

        verified = _verifier(KeySet.of(es256_key)).verify(token, required_scopes=["read"])

        assert verified.scopes == {"read", "write"}

    def test_missing_required_scope_is_insufficient_scope(self, es256_key: SigningKey) -> None:
        token = _issue(es256_key).token

        with pytest.raises(InsufficientScopeError) as exc_info:
            _verifier(KeySet.of(es256_key)).verify(token, required_scopes=["read", "admin"])

        assert exc_info.value.status_code == 403
        assert exc_info.value.error_code == "insufficient_scope"
        assert exc_info.value.required == {"admin"}
        assert not isinstance(exc_info.value, InvalidTokenError)

    def test_require_scopes_on_a_verified_token(self, es256_key: SigningKey) -> None:
        verified = _verify(_issue(es256_key).token, KeySet.of(es256_key))

        verified.require_scopes(["write"])
        with pytest.raises(InsufficientScopeError, match="admin"):
            verified.require_scopes(["admin", "write"])

    def test_bytes_token_verifies(self, es256_key: SigningKey) -> None:
        issued = _issue(es256_key)

        assert _verify(issued.token.encode(), KeySet.of(es256_key)).jti == issued.jti

    def test_claims_are_read_only(self, es256_key: SigningKey) -> None:
        verified = _verify(_issue(es256_key).token, KeySet.of(es256_key))

        with pytest.raises(TypeError):
            verified.claims["sub"] = "key:other"  # type: ignore[index]

    @pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"])
    def test_each_rfc_9068_claim_is_required(self, es256_key: SigningKey, claim: str) -> None:
        """RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat and jti must all be present."""
        token = _resigned_without(es256_key, claim)

        with pytest.raises(TokenClaimsError, match=claim):
            _verify(token, KeySet.of(es256_key))

    @pytest.mark.parametrize(
        ("claim", "value"),
        [
            pytest.param("sub", "", id="sub-empty"),
            pytest.param("sub", 7, id="sub-number"),
            pytest.param("sub", "s" * 256, id="sub-256-chars"),
            pytest.param("jti", None, id="jti-null"),
            pytest.param("client_id", ["k1"], id="client_id-list"),
            pytest.param("scope", ["read"], id="scope-list"),
            pytest.param("scope", 'read "admin"', id="scope-quote"),
        ],
    )
    def test_mistyped_claims_are_refused(
        self, es256_key: SigningKey, claim: str, value: object
    ) -> None:
        token = _resigned_with(es256_key, claim, value)

        with pytest.raises(TokenClaimsError):
            _verify(token, KeySet.of(es256_key))


def _resigned_with(key: SigningKey, claim: str, value: object) -> str:
    return forge(header_for(key), claims_at(**{claim: value}), key=key)


def _resigned_without(key: SigningKey, claim: str) -> str:
    return _resigned_with(key, claim, DROP)


class TestErrors:
    @pytest.mark.parametrize(
        ("error", "status_code", "error_code"),
        [
            pytest.param(InvalidTokenError("x"), 401, "invalid_token", id="InvalidTokenError"),
            pytest.param(MalformedTokenError("x"), 401, "invalid_token", id="MalformedTokenError"),
            pytest.param(TokenSignatureError("x"), 401, "invalid_token", id="TokenSignatureError"),
            pytest.param(TokenClaimsError("x"), 401, "invalid_token", id="TokenClaimsError"),
            pytest.param(ExpiredTokenError("x"), 401, "invalid_token", id="ExpiredTokenError"),
            pytest.param(ImmatureTokenError("x"), 401, "invalid_token", id="ImmatureTokenError"),
            pytest.param(RevokedTokenError("x"), 401, "invalid_token", id="RevokedTokenError"),
            pytest.param(
                InsufficientScopeError("x"), 403, "insufficient_scope", id="InsufficientScopeError"
            ),
            pytest.param(
                InvalidRequestError("x"), 400, "invalid_request", id="InvalidRequestError"
            ),
            pytest.param(
                MalformedSecretError("x"), 400, "invalid_request", id="MalformedSecretError"
            ),
            pytest.param(
                PolicyViolation("level", 3, "too high"),
                400,
                "invalid_request",
                id="PolicyViolation",
            ),
            pytest.param(
                PolicyViolation("scope", "admin", "not allowed"),
                400,
                "invalid_scope",
                id="PolicyViolation-scope",
            ),
            pytest.param(SigningKeyError("x"), 500, "server_error", id="SigningKeyError"),
            pytest.param(
                StorageUnavailableError("x"),
                503,
                "temporarily_unavailable",
                id="StorageUnavailable",
            ),
        ],
    )
    def test_wire_codes(self, error: KeyturnError, status_code: int, error_code: str) -> None:
        """RFC 6750 §3.1 and RFC 6749 §5.2 names, and the HTTP status each error renders as."""
        assert error.status_code == status_code
        assert error.error_code == error_code

    def test_storage_failure_is_never_an_invalid_token(self) -> None:
        error = StorageUnavailableError("db down", retry_after=5)

        assert not isinstance(error, InvalidTokenError)
        assert error.retry_after == 5

    def test_messages_never_contain_the_token_or_its_signature(
        self, es256_key: SigningKey, eddsa_key: SigningKey
    ) -> None:
        """However a token fails, no message in the exception chain repeats its secret parts."""
        token = _issue(es256_key).token
        header, payload, signature = token.split(".")
        foreign = _issue(eddsa_key).token
        failures = [
            f"{header}.{payload}.{foreign.split('.')[2]}",  # bad signature
            f"{header}.{payload}.{signature}=",  # padded
            f"{header}.{payload}.{signature}x",  # non-canonical length
            token,  # expired, below
            foreign,  # unknown key
        ]
        revocations = RevocationList()
        revocations.revoke_token(_verify(token, KeySet.of(es256_key)).jti, expires_at=NOW + 900)

        for bad in failures:
            with pytest.raises(InvalidTokenError) as exc_info:
                _verify(bad, KeySet.of(es256_key), now=NOW + 10_000)
            _assert_not_in_messages(exc_info.value, bad)
        with pytest.raises(RevokedTokenError) as revoked:
            _verifier(KeySet.of(es256_key), revocation=revocations).verify(token)
        _assert_not_in_messages(revoked.value, token)
        with pytest.raises(InsufficientScopeError) as scoped:
            _verifier(KeySet.of(es256_key)).verify(token, required_scopes=["admin"])
        _assert_not_in_messages(scoped.value, token)


def _assert_not_in_messages(error: BaseException, token: str) -> None:
    rendered = "".join(traceback.format_exception(error)) + repr(error)
    assert token not in rendered
    assert token.rsplit(".", 1)[-1] not in rendered
    assert token.split(".")[1] not in rendered


class TestVerifiedTokenCache:
    @staticmethod
    def _entry(jti: str, expires_at: int = NOW + 900) -> VerifiedToken:
        return VerifiedToken(
            subject="key:k1",
            jti=jti,
            client_id="k1",
            issued_at=NOW,
            expires_at=expires_at,
            scopes=frozenset(),
            kid="kid",
            claims={},
        )

    def test_hit_and_miss(self) -> None:
        cache = VerifiedTokenCache(maxsize=4)
        entry = self._entry("a")
        cache.put("token-a", entry)

        assert cache.get("token-a", NOW) is entry
        assert cache.get("token-b", NOW) is None
        assert (cache.hits, cache.misses) == (1, 1)

    def test_size_is_bounded_least_recently_used_first(self) -> None:
        cache = VerifiedTokenCache(maxsize=2)
        cache.put("a", self._entry("a"))
        cache.put("b", self._entry("b"))
        assert cache.get("a", NOW) is not None  # now "b" is the least recently used

        cache.put("c", self._entry("c"))

        assert len(cache) == 2
        assert cache.get("b", NOW) is None
        assert cache.get("a", NOW) is not None
        assert cache.get("c", NOW) is not None

    def test_entry_expires_at_exp(self) -> None:
        cache = VerifiedTokenCache()
        cache.put("a", self._entry("a", expires_at=NOW + 900))

        assert cache.get("a", NOW + 899) is not None
        assert cache.get("a", NOW + 900) is None
        assert len(cache) == 0  # the expired entry is dropped, not kept

    def test_clear(self) -> None:
        cache = VerifiedTokenCache()
        cache.put("a", self._entry("a"))

        cache.clear()

        assert len(cache) == 0

    @pytest.mark.parametrize("maxsize", [0, -1])
    def test_size_must_be_positive(self, maxsize: int) -> None:
        with pytest.raises(ValueError, match="maxsize"):
            VerifiedTokenCache(maxsize)


class TestTokenVerifier:
    def test_second_verify_is_a_cache_hit(self, es256_key: SigningKey) -> None:
        token = _issue(es256_key).token
        checker = _verifier(KeySet.of(es256_key))

        first = checker.verify(token)
        second = checker.verify(token)

        assert second is first
        assert checker.cache is not None
        assert (checker.cache.hits, checker.cache.misses) == (1, 1)

    def test_clock_is_used_when_now_is_not_given(self, es256_key: SigningKey) -> None:
        token = _issue(es256_key).token
        late = TokenVerifier(
            KeySet.of(es256_key), issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW + 10_000
        )

        with pytest.raises(ExpiredTokenError):
            late.verify(token)
        assert late.verify(token, now=NOW).jti == _verify(token, KeySet.of(es256_key)).jti

    def test_cached_token_expires_at_exp(self, es256_key: SigningKey) -> None:
        """A cached entry is served until exp; past exp + leeway the full check refuses it."""
        token = _issue(es256_key).token
        checker = _verifier(KeySet.of(es256_key), leeway=30)
        checker.verify(token, now=NOW)
        assert checker.cache is not None

        assert checker.verify(token, now=NOW + 899).jti
        assert checker.cache.hits == 1
        assert checker.verify(token, now=NOW + 929).jti  # past exp: re-verified within leeway
        assert checker.cache.hits == 1
        with pytest.raises(ExpiredTokenError):
            checker.verify(token, now=NOW + 930)

    def test_cached_token_still_consults_revocation(self, es256_key: SigningKey) -> None:
        token = _issue(es256_key).token
        revocations = RevocationList()
        checker = _verifier(KeySet.of(es256_key), revocation=revocations)
        verified = checker.verify(token)

        revocations.revoke_token(verified.jti, expires_at=verified.expires_at)

        with pytest.raises(RevokedTokenError):
            checker.verify(token)
        assert checker.cache is not None
        assert checker.cache.hits == 1  # it was served from the cache, and still refused

    def test_set_keys_clears_the_cache(self, es256_key: SigningKey, eddsa_key: SigningKey) -> None:
        checker = _verifier(KeySet.of(es256_key))
        checker.verify(_issue(es256_key).token)
        assert checker.cache is not None
        assert len(checker.cache) == 1

        checker.set_keys(KeySet.of(eddsa_key))

        assert len(checker.cache) == 0
        assert checker.keys.get(eddsa_key.kid) is not None

    def test_cached_token_whose_kid_left_the_key_set_is_rejected(
        self, es256_key: SigningKey, eddsa_key: SigningKey
    ) -> None:
        lookup = MutableKeys(es256_key.verification_key, eddsa_key.verification_key)
        token = _issue(es256_key).token
        checker = _verifier(lookup)
        checker.verify(token)

        del lookup.by_kid[es256_key.kid]

        with pytest.raises(TokenSignatureError):
            checker.verify(token)

    def test_cache_can_be_disabled(self, es256_key: SigningKey) -> None:
        checker = _verifier(KeySet.of(es256_key), cache_size=0)

        assert checker.cache is None
        assert checker.verify(_issue(es256_key).token).subject == "key:k1"

    def test_bytes_tokens_are_not_cached(self, es256_key: SigningKey) -> None:
        checker = _verifier(KeySet.of(es256_key))

        checker.verify(_issue(es256_key).token.encode())

        assert checker.cache is not None
        assert len(checker.cache) == 0

    def test_cache_is_bounded(self, es256_key: SigningKey) -> None:
        checker = _verifier(KeySet.of(es256_key), cache_size=3)

        for _ in range(5):
            checker.verify(_issue(es256_key).token)

        assert checker.cache is not None
        assert len(checker.cache) == 3

    def test_rejected_tokens_are_not_cached(self, es256_key: SigningKey) -> None:
        checker = _verifier(KeySet.of(es256_key))
        token = _issue(es256_key, now=NOW - 10_000).token

        for _ in range(2):
            with pytest.raises(ExpiredTokenError):
                checker.verify(token)

        assert checker.cache is not None
        assert len(checker.cache) == 0

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"leeway": -1}, id="negative-leeway"),
            pytest.param({"leeway": 301}, id="leeway-over-300"),
            pytest.param({"max_lifetime": 0}, id="zero-max-lifetime"),
        ],
    )
    def test_unsafe_configuration_is_refused(
        self, es256_key: SigningKey, options: dict[str, int]
    ) -> None:
        with pytest.raises(ValueError, match=r"leeway|max_lifetime"):
            _verifier(KeySet.of(es256_key), **options)


class TestRevocationList:
    @staticmethod
    def _token(jti: str = "j1", subject: str = "key:k1", issued_at: int = NOW) -> VerifiedToken:
        return VerifiedToken(
            subject=subject,
            jti=jti,
            client_id="k1",
            issued_at=issued_at,
            expires_at=issued_at + 900,
            scopes=frozenset(),
            kid="kid",
            claims={},
        )

    def test_revoked_jti(self) -> None:
        revocations = RevocationList()

        revocations.revoke_token("j1", expires_at=NOW + 900)

        assert revocations.is_revoked(self._token("j1"))
        assert not revocations.is_revoked(self._token("j2"))
        assert len(revocations) == 1

    def test_a_revoked_family_refuses_its_tokens_whatever_their_iat(self) -> None:
        """RFC 7009 §2.1: the access tokens of a revoked refresh-token family (``sid``)."""
        revocations = RevocationList()

        revocations.revoke_family("f1", until=NOW + 960)

        def token(sid: str | None, issued_at: int = NOW) -> VerifiedToken:
            claims = {} if sid is None else {"sid": sid}
            return dataclasses.replace(self._token(issued_at=issued_at), claims=claims)

        assert revocations.is_revoked(token("f1", issued_at=NOW - 600))
        assert revocations.is_revoked(token("f1", issued_at=NOW + 60))  # issued in a race
        assert not revocations.is_revoked(token("f2"))
        assert not revocations.is_revoked(token(None))
        assert revocations.prune(NOW + 960 + 30, max_token_lifetime=900, leeway=30) == 1
        assert not revocations.is_revoked(token("f1"))

    def test_revoked_user_covers_tokens_issued_until_then(self) -> None:
        revocations = RevocationList()

        revocations.revoke_subject("user:u1", at=NOW)

        assert revocations.is_revoked(self._token(subject="user:u1", issued_at=NOW - 600))
        assert revocations.is_revoked(self._token(subject="user:u1", issued_at=NOW))
        # Enabled again, or a new password: later tokens pass.
        assert not revocations.is_revoked(self._token(subject="user:u1", issued_at=NOW + 1))
        assert not revocations.is_revoked(self._token(subject="user:u2", issued_at=NOW - 600))

    def test_revoked_key_covers_every_token_whatever_its_iat(self) -> None:
        """Issue 18: a token stamped after the revocation (a racing request) dies too."""
        revocations = RevocationList()

        revocations.revoke_subject("key:k1", at=NOW)

        assert revocations.is_revoked(self._token(issued_at=NOW - 600))
        assert revocations.is_revoked(self._token(issued_at=NOW))
        assert revocations.is_revoked(self._token(issued_at=NOW + 1))
        assert revocations.is_revoked(self._token(issued_at=NOW + 3600))
        assert not revocations.is_revoked(self._token(subject="key:k2", issued_at=NOW - 600))

    def test_revocations_only_ever_widen(self) -> None:
        revocations = RevocationList()
        revocations.revoke_subject("key:k1", at=NOW)
        revocations.revoke_subject("key:k1", at=NOW - 600)  # an older, replayed event
        revocations.revoke_token("j1", expires_at=NOW + 900)
        revocations.revoke_token("j1", expires_at=NOW + 10)

        assert revocations.is_revoked(self._token(issued_at=NOW))
        assert revocations.prune(NOW + 100, max_token_lifetime=900) == 0

    def test_prune_keeps_entries_while_a_token_may_still_pass(self) -> None:
        """Entries live until exp + leeway (jti) or revocation + max lifetime + leeway."""
        revocations = RevocationList()
        revocations.revoke_token("j1", expires_at=NOW + 900)
        revocations.revoke_subject("key:k1", at=NOW)

        revocations.revoke_subject("user:u1", at=NOW)

        assert revocations.prune(NOW + 929, max_token_lifetime=900, leeway=30) == 0
        assert revocations.prune(NOW + 930, max_token_lifetime=900, leeway=30) == 2  # j1, u1
        # A key's entry outlives the tokens stamped up to its revocation's commit.
        assert revocations.prune(NOW + 929 + REVOCATION_MARGIN, max_token_lifetime=900) == 0
        assert revocations.prune(NOW + 930 + REVOCATION_MARGIN, max_token_lifetime=900) == 1
        assert len(revocations) == 0

    def test_prune_default_leeway_matches_the_verifier_default(self) -> None:
        revocations = RevocationList()
        revocations.revoke_token("j1", expires_at=NOW + 900)

        assert revocations.prune(NOW + 929, max_token_lifetime=900) == 0
        assert revocations.prune(NOW + 930, max_token_lifetime=900) == 1

    def test_pruned_list_still_refuses_a_token_within_leeway(self, es256_key: SigningKey) -> None:
        """Regression: pruning at exp let a revoked token back in during the leeway window."""
        issued = _issue(es256_key)
        revocations = RevocationList()
        revocations.revoke_token(issued.jti, expires_at=issued.expires_at)
        checker = _verifier(KeySet.of(es256_key), revocation=revocations, leeway=30)
        later = issued.expires_at + 10

        revocations.prune(later, max_token_lifetime=900, leeway=30)

        with pytest.raises(RevokedTokenError):
            checker.verify(issued.token, now=later)

    def test_replace(self) -> None:
        revocations = RevocationList()
        revocations.revoke_token("old", expires_at=NOW + 900)

        revocations.replace(tokens={"j1": NOW + 900}, subjects={"key:k2": NOW})

        assert not revocations.is_revoked(self._token("old"))
        assert revocations.is_revoked(self._token("j1"))
        assert revocations.is_revoked(self._token("j9", subject="key:k2"))
        assert len(revocations) == 2


class TestPeek:
    def test_returns_header_and_claims_without_checking(self, es256_key: SigningKey) -> None:
        token = _issue(es256_key, now=NOW - 100_000).token  # long expired
        header, payload, _ = token.split(".")
        forged = f"{header}.{payload}.AAAA"

        peeked_header, claims = peek_unverified_claims(forged)

        assert peeked_header["kid"] == es256_key.kid
        assert claims["sub"] == "key:k1"
        assert claims["exp"] == NOW - 100_000 + 900

    def test_result_is_a_fresh_copy(self, es256_key: SigningKey) -> None:
        """Editing what peek returns changes neither a later peek nor verification."""
        token = _issue(es256_key).token
        _verify(token, KeySet.of(es256_key))  # the verifier has now parsed this header
        header, claims = peek_unverified_claims(token)

        header["alg"] = "none"
        claims["sub"] = "key:admin"

        assert peek_unverified_claims(token)[0]["alg"] == es256_key.alg
        assert _verify(token, KeySet.of(es256_key)).subject == "key:k1"

    def test_accepts_bytes(self, es256_key: SigningKey) -> None:
        _, claims = peek_unverified_claims(_issue(es256_key).token.encode())

        assert claims["client_id"] == "k1"

    @pytest.mark.parametrize(
        "token",
        [
            pytest.param("not a token", id="not-compact"),
            pytest.param("e30.bnVsbA.AAAA", id="payload-null"),
            pytest.param("bnVsbA.e30.AAAA", id="header-null"),
            pytest.param("e30=.e30.AAAA", id="padded"),
            pytest.param("e30." + "A" * 9000 + ".AAAA", id="too-long"),
        ],
    )
    def test_malformed_tokens_raise(self, token: str) -> None:
        with pytest.raises(MalformedTokenError):
            peek_unverified_claims(token)
