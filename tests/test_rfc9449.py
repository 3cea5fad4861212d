"""RFC 9449 §7.1 at the edge: reading ``Authorization: DPoP`` and the DPoP challenge."""

from __future__ import annotations

import pytest

from keyturn.core.dpop import DPoPProof, InvalidDPoPProofError, check_binding
from keyturn.core.signing import SigningKey
from keyturn.errors import (
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeyturnError,
    StorageUnavailableError,
)
from keyturn.rfc6750 import failure_for as bearer_failure_for
from keyturn.rfc9449 import access_credential, dpop_challenge, failure_for

KEY = SigningKey.generate("ES256")


def proof_by(key: SigningKey) -> DPoPProof:
    return DPoPProof(jkt=key.kid, jti="j", iat=0, key=key.verification_key)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", ("bearer", "abc")),
        ("DPoP abc", ("dpop", "abc")),
        ("dpop  abc ", ("dpop", "abc")),
        ("Basic abc", None),
        (None, None),
    ],
)
def test_rfc9449_7_1_access_credential_reads_both_schemes(
    header: str | None, expected: tuple[str, str] | None
) -> None:
    assert access_credential(header) == expected


def test_rfc9449_7_1_a_malformed_dpop_credential_is_invalid_request_or_missing() -> None:
    with pytest.raises(InvalidRequestError):
        access_credential("DPoP a b")
    assert access_credential("DPoP ", malformed="missing") is None


def test_rfc9449_7_1_challenge_names_algs_and_error() -> None:
    value = dpop_challenge("invalid_dpop_proof", 'bad "proof"', algs=("ES256",))
    assert value == (
        'DPoP realm="keyturn", algs="ES256", error="invalid_dpop_proof", '
        'error_description="bad proof"'
    )
    assert dpop_challenge().startswith('DPoP realm="keyturn", algs="ES256')


def test_rfc9449_7_1_bound_token_as_bearer_is_refused_no_downgrade() -> None:
    with pytest.raises(InvalidDPoPProofError, match="must be sent as DPoP"):
        check_binding(KEY.kid, proof_by(KEY), scheme="Bearer")


def test_rfc9449_7_1_bound_token_needs_a_proof_by_its_key() -> None:
    check_binding(KEY.kid, proof_by(KEY), scheme="DPoP")
    with pytest.raises(InvalidDPoPProofError, match="needs a DPoP proof"):
        check_binding(KEY.kid, None, scheme="dpop")
    with pytest.raises(InvalidDPoPProofError, match="another key"):
        check_binding(KEY.kid, proof_by(SigningKey.generate("ES256")), scheme="dpop")


def test_rfc9449_7_1_bearer_token_passes_as_bearer_not_as_dpop() -> None:
    check_binding(None, None, scheme="bearer")
    with pytest.raises(InvalidDPoPProofError, match="not DPoP-bound"):
        check_binding(None, proof_by(KEY), scheme="dpop")


# -- failure_for: the DPoP counterpart of rfc6750.failure_for -----------------------------


@pytest.mark.parametrize(
    "error",
    [
        None,
        InvalidTokenError("token has expired"),
        InsufficientScopeError("lacks a", required=frozenset({"a"})),
        InvalidRequestError("the Authorization header must be 'Bearer <token>'"),
        StorageUnavailableError("down", retry_after=7),
    ],
)
def test_rfc9449_7_1_a_bearer_failure_keeps_todays_bearer_answer(
    error: KeyturnError | None,
) -> None:
    assert failure_for(error, scheme="bearer") == bearer_failure_for(error)
    assert failure_for(error) == bearer_failure_for(error)


def test_rfc9449_7_1_a_refused_binding_gets_a_dpop_challenge_even_as_bearer() -> None:
    error = InvalidDPoPProofError("a DPoP-bound token must be sent as DPoP, with a proof")

    for scheme in ("bearer", "dpop", None):
        failure = failure_for(error, scheme=scheme)  # type: ignore[arg-type]
        assert failure.status == 401
        assert failure.headers == {
            "WWW-Authenticate": dpop_challenge("invalid_dpop_proof", error.message)
        }
        assert failure.body == {"error": "invalid_dpop_proof", "detail": error.message}


@pytest.mark.parametrize(
    ("error", "status", "code", "scope"),
    [
        (InvalidTokenError("token has expired"), 401, "invalid_token", ()),
        (
            InsufficientScopeError("lacks a", required=frozenset({"a"})),
            403,
            "insufficient_scope",
            ("a",),
        ),
        (
            InvalidRequestError("the Authorization header must be 'DPoP <token>'"),
            400,
            "invalid_request",
            (),
        ),
    ],
)
def test_rfc9449_7_1_dpop_request_failures_carry_a_dpop_challenge(
    error: KeyturnError, status: int, code: str, scope: tuple[str, ...]
) -> None:
    failure = failure_for(error, scheme="dpop")

    assert failure.status == status
    assert failure.headers == {"WWW-Authenticate": dpop_challenge(code, error.message, scope)}
    assert failure.body == {"error": code, "detail": error.message}


def test_rfc9449_7_1_an_outage_under_dpop_is_503_with_retry_after_never_401() -> None:
    failure = failure_for(StorageUnavailableError("down", retry_after=7), scheme="dpop")

    assert (failure.status, failure.headers) == (503, {"Retry-After": "7"})
