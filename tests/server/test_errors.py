"""`keyturn.server.errors.render`: one error, five wire forms."""

from __future__ import annotations

import json

import pytest

from keyturn.errors import (
    AdminCredentialError,
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    InvalidTokenError,
    RateLimitedError,
    RequestRejectedError,
)
from keyturn.server.errors import ADMIN_CHALLENGE, ErrorStyle, render


def test_bearer_style_for_no_credential_is_a_bare_401() -> None:
    response = render(None, ErrorStyle.BEARER)

    assert response.status_code == 401
    assert response.body == b""
    assert response.headers["www-authenticate"] == 'Bearer realm="keyturn"'


def test_bearer_style_names_the_missing_scope() -> None:
    error = InsufficientScopeError("needs write", required=frozenset({"write"}))

    response = render(error, ErrorStyle.BEARER)

    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer realm="keyturn", error="insufficient_scope", '
        'error_description="needs write", scope="write"'
    )


def test_bearer_style_drops_non_ascii_from_the_challenge() -> None:
    """The server's challenge uses the RFC 6750 module's sanitiser (it kept non-ASCII before)."""
    response = render(InvalidTokenError("bad \u00e9 token"), ErrorStyle.BEARER)

    assert response.headers["www-authenticate"] == (
        'Bearer realm="keyturn", error="invalid_token", error_description="bad  token"'
    )


def test_oauth_style_invalid_client_is_401_basic() -> None:
    response = render(InvalidClientError("no"), ErrorStyle.OAUTH)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="keyturn"'
    assert response.headers["cache-control"] == "no-store"
    assert json.loads(response.body) == {"error": "invalid_client", "error_description": "no"}


def test_oauth_style_413_stays_a_problem() -> None:
    error = RequestRejectedError("too big", status_code=413, error_code="payload_too_large")

    response = render(error, ErrorStyle.OAUTH)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_legacy_style_is_jwthenticators_empty_401() -> None:
    response = render(InvalidGrantError("bad key"), ErrorStyle.LEGACY)

    assert response.status_code == 401
    assert json.loads(response.body) == {}


def test_legacy_style_keeps_retry_after() -> None:
    response = render(RateLimitedError("slow down", retry_after=7), ErrorStyle.LEGACY)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


def test_login_style_says_wrong_credentials() -> None:
    response = render(InvalidGrantError("wrong email or password"), ErrorStyle.LOGIN)

    assert response.status_code == 400
    assert json.loads(response.body)["message"] == "Wrong credentials"


def test_problem_style_with_the_admin_challenge() -> None:
    error = AdminCredentialError("the admin API needs the admin bearer token")

    response = render(error, ErrorStyle.PROBLEM, challenge=ADMIN_CHALLENGE)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="keyturn-admin"'
    assert json.loads(response.body) == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "the admin API needs the admin bearer token",
        "error": "unauthorized",
    }


@pytest.mark.parametrize("style", [ErrorStyle.PROBLEM, ErrorStyle.OAUTH, ErrorStyle.LEGACY])
def test_only_the_bearer_style_renders_no_error(style: ErrorStyle) -> None:
    with pytest.raises(TypeError):
        render(None, style)
