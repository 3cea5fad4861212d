"""`keyturn.rfc6750`: the one reader of Bearer headers and writer of Bearer challenges."""

from __future__ import annotations

import pytest

from keyturn.errors import InvalidRequestError
from keyturn.rfc6750 import bearer_challenge, bearer_matches, bearer_token, quoted


@pytest.mark.parametrize(
    ("header", "token"),
    [
        pytest.param(None, None, id="no-header"),
        pytest.param("Basic dXNlcjpwYXNz", None, id="another-scheme"),
        pytest.param("Bearer abc", "abc", id="bearer"),
        pytest.param("bearer  abc ", "abc", id="case-and-spaces"),
    ],
)
def test_bearer_token_reads_the_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
    assert bearer_token(header, malformed="missing") == token


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b"])
def test_a_malformed_bearer_is_invalid_request_for_a_resource_server(header: str) -> None:
    """RFC 6750 §3.1: the integrations answer it 400 invalid_request."""
    with pytest.raises(InvalidRequestError):
        bearer_token(header)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b"])
def test_a_malformed_bearer_is_no_credential_on_the_gateway_routes(header: str) -> None:
    """The server's choice: a 401 with a bare challenge, which nginx's auth_request passes on."""
    assert bearer_token(header, malformed="missing") is None


def test_quoted_keeps_only_what_rfc_6750_allows_inside_quotes() -> None:
    assert quoted('a"b\\c\x00d\x7fe\u00e9f\u2028g') == "abcdefg"


def test_the_challenge_sanitises_description_and_scope() -> None:
    challenge = bearer_challenge("invalid_token", 'bad "token" \u00e9\r\n', {"b", "a"})

    assert challenge == (
        'Bearer realm="keyturn", error="invalid_token", error_description="bad token ", scope="a b"'
    )
    challenge.encode("ascii")  # a header value the server can always send


def test_a_bare_challenge_names_only_the_realm() -> None:
    assert bearer_challenge() == 'Bearer realm="keyturn"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        pytest.param("Bearer s3cret", True, id="exact"),
        pytest.param("bearer s3cret ", True, id="case-and-space"),
        pytest.param("Bearer s3cre", False, id="prefix"),
        pytest.param("Bearer s3cret x", False, id="two-parts"),
        pytest.param("Basic s3cret", False, id="basic"),
        pytest.param("Bearer", False, id="empty"),
        pytest.param(None, False, id="none"),
    ],
)
def test_bearer_matches_only_the_exact_token(header: str | None, matches: bool) -> None:
    assert bearer_matches(header, b"s3cret") is matches
