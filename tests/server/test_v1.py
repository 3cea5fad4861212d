"""Keyturn's own public API: RFC 6749 token endpoint, RFC 7009, RFC 7662, the gateway check."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyturn.core.signing import SigningKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock
from tests.security.forge import forge

from .conftest import (
    ADMIN_TOKEN,
    AUDIENCE,
    FORGING_PEM,
    IDENTIFIER,
    ISSUER,
    OTHER_IDENTIFIER,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    create_key,
    resign,
    v1_tokens,
)

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
BASIC_CHALLENGE = 'Basic realm="keyturn"'
ATTACKER_KEY = SigningKey.generate("ES256")


def oauth_error(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    """Status and body of an RFC 6749 §5.2 error; also checks its caching headers."""
    assert {k: response.headers[k] for k in NO_STORE} == NO_STORE
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def invalid_client(description: str = "the API key is not valid") -> tuple[int, dict[str, Any]]:
    return 401, {"error": "invalid_client", "error_description": description}


def invalid_grant() -> tuple[int, dict[str, Any]]:
    return 400, {"error": "invalid_grant", "error_description": "the refresh token is not valid"}


@pytest.fixture
async def state(open_state: OpenState, database_url: str) -> KeyturnState:
    """This module's state: KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS on, so that keys get
    refresh tokens for the refresh grant's tests (``sqlite_state`` keeps the default)."""
    return await open_state(database_url, client_credentials_refresh_tokens=True)


@pytest.fixture
async def forging_state(open_state: OpenState, sqlite_database_url: str) -> KeyturnState:
    """`FORGING_KEY` signs; keys get refresh tokens (a real one is a bad bearer, T-TYP-02)."""
    return await open_state(
        sqlite_database_url, signing_key_pem=FORGING_PEM, client_credentials_refresh_tokens=True
    )


@pytest.fixture
async def key(admin: httpx.AsyncClient) -> dict[str, Any]:
    """A generated key allowed the scopes ``read`` and ``write``, bound to IDENTIFIER."""
    return await create_key(admin, name="svc", scopes=["read", "write"], identifier=IDENTIFIER)


@pytest.fixture
async def sqlite_key(sqlite_admin: httpx.AsyncClient) -> dict[str, Any]:
    """Like ``key``, on the SQLite-only state."""
    return await create_key(sqlite_admin, scopes=["read", "write"], identifier=IDENTIFIER)


# -- POST /v1/token: client_credentials ----------------------------------------------------


def assert_token_response(response: httpx.Response, *, scope: str, refresh: bool = True) -> None:
    """RFC 6749 §5.1: exactly these fields (``refresh_token`` if ``refresh``), never cached."""
    assert response.status_code == 200, response.text
    body = response.json()
    fields = {"access_token", "token_type", "expires_in", "scope"}
    assert set(body) == (fields | {"refresh_token"} if refresh else fields)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == scope
    if refresh:
        assert body["refresh_token"].startswith("ktr_")
    assert {k: response.headers[k] for k in NO_STORE} == NO_STORE


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda key, id_: {"auth": (id_, key)}, id="basic-id-and-key"),
        pytest.param(lambda key, id_: {"auth": ("", key)}, id="basic-key-as-password"),
        pytest.param(lambda key, id_: {"auth": (key, "")}, id="basic-key-as-user"),
        pytest.param(lambda key, id_: {"data": {"client_secret": key}}, id="client-secret-form"),
        pytest.param(
            lambda key, id_: {"data": {"client_id": id_, "client_secret": key}},
            id="client-id-and-secret-form",
        ),
        pytest.param(
            lambda key, id_: {"auth": (id_, key), "data": {"client_id": id_}},
            id="basic-and-the-same-client-id-in-the-body",
        ),
    ],
)
async def test_client_credentials_issues_a_token(
    public: httpx.AsyncClient, key: dict[str, Any], send: Any
) -> None:
    request = send(key["key"], key["record"]["id"])
    data = {"grant_type": "client_credentials", **request.pop("data", {})}

    response = await public.post("/v1/token", data=data, **request)

    assert_token_response(response, scope="read write")
    claims = peek_unverified_claims(response.json()["access_token"])[1]
    assert claims["sub"] == f"key:{key['record']['id']}"
    assert claims["client_id"] == key["record"]["id"]
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)
    assert claims["exp"] - claims["iat"] == 900


async def test_client_credentials_accepts_a_json_body(
    sqlite_public: httpx.AsyncClient, sqlite_key: dict[str, Any]
) -> None:
    response = await sqlite_public.post(
        "/v1/token",
        json={"grant_type": "client_credentials", "client_secret": sqlite_key["key"]},
    )

    assert_token_response(response, scope="read write", refresh=False)


async def test_a_narrower_scope_is_granted_and_echoed(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    response = await public.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "scope": "read"},
        auth=(key["key"], ""),
    )

    assert_token_response(response, scope="read")
    assert peek_unverified_claims(response.json()["access_token"])[1]["scope"] == "read"


async def test_a_scope_beyond_the_key_is_invalid_scope(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    """T-AZ-01: never issued, never silently widened."""
    response = await public.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "scope": "read admin"},
        auth=(key["key"], ""),
    )

    assert oauth_error(response) == (
        400,
        {
            "error": "invalid_scope",
            "error_description": "claim 'scope': not allowed for this key and its roles "
            "(value 'admin')",
        },
    )


@pytest.mark.parametrize(
    ("data", "auth", "expected"),
    [
        pytest.param(
            {"grant_type": "client_credentials", "client_secret": "{key}"},
            ("{key}", ""),
            (
                400,
                {
                    "error": "invalid_request",
                    "error_description": "use either HTTP Basic or client_secret, not both",
                },
            ),
            id="basic-and-client-secret",
        ),
        pytest.param(
            {"grant_type": "password", "username": "u", "password": "p"},
            ("{key}", ""),
            (
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "supported grant types: client_credentials, refresh_token",
                },
            ),
            id="unsupported-grant",
        ),
        pytest.param(
            {"scope": "read"},
            ("{key}", ""),
            (400, {"error": "invalid_request", "error_description": "grant_type is required"}),
            id="missing-grant-type",
        ),
        pytest.param(
            {"grant_type": "client_credentials", "scope": 'read"'},
            ("{key}", ""),
            (
                400,
                {
                    "error": "invalid_request",
                    "error_description": "scope breaks the RFC 6749 §3.3 grammar",
                },
            ),
            id="scope-grammar",
        ),
        pytest.param(
            {"grant_type": "refresh_token"},
            None,
            (400, {"error": "invalid_request", "error_description": "refresh_token is required"}),
            id="refresh-without-token",
        ),
    ],
)
async def test_token_request_errors(
    sqlite_public: httpx.AsyncClient,
    sqlite_key: dict[str, Any],
    data: dict[str, str],
    auth: tuple[str, str] | None,
    expected: tuple[int, dict[str, Any]],
) -> None:
    secret = sqlite_key["key"]
    data = {name: value.format(key=secret) for name, value in data.items()}
    basic: dict[str, Any] = {}
    if auth is not None:
        basic["auth"] = (auth[0].format(key=secret), auth[1].format(key=secret))

    response = await sqlite_public.post("/v1/token", data=data, **basic)

    assert oauth_error(response) == expected
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    ("request_kwargs", "description"),
    [
        pytest.param({"auth": ("kt_" + "A" * 16 + "_" + "b" * 48, "")}, None, id="unknown-key"),
        pytest.param({"data": {"client_secret": "not-a-key"}}, None, id="wrong-secret-form"),
        pytest.param(
            {},
            "send the API key as HTTP Basic password or client_secret",
            id="no-credentials",
        ),
        pytest.param(
            {"headers": {"Authorization": "Bearer abc"}},
            "the token endpoint takes HTTP Basic client authentication",
            id="bearer-scheme",
        ),
        pytest.param(
            {"headers": {"Authorization": "Basic %%%"}},
            "malformed HTTP Basic credentials",
            id="basic-not-base64",
        ),
        pytest.param(
            {"headers": {"Authorization": "Basic Og=="}},
            "malformed HTTP Basic credentials",
            id="basic-empty-user-and-password",
        ),
    ],
)
async def test_bad_client_credentials_are_invalid_client(
    sqlite_public: httpx.AsyncClient, request_kwargs: dict[str, Any], description: str | None
) -> None:
    data = {"grant_type": "client_credentials", **request_kwargs.pop("data", {})}

    response = await sqlite_public.post("/v1/token", data=data, **request_kwargs)

    assert oauth_error(response) == invalid_client(*([description] if description else []))
    assert response.headers["www-authenticate"] == BASIC_CHALLENGE


async def test_a_revoked_key_is_invalid_client(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    await admin.post(f"/v1/admin/keys/{key['record']['id']}/revoke", json={})

    response = await public.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=(key["key"], "")
    )

    assert oauth_error(response) == invalid_client()


async def test_issuer_ignores_the_host_header(
    sqlite_public: httpx.AsyncClient, sqlite_key: dict[str, Any]
) -> None:
    """T-AUD-05: ``iss`` comes from configuration only."""
    response = await sqlite_public.post(
        "/v1/token",
        data={"grant_type": "client_credentials"},
        auth=(sqlite_key["key"], ""),
        headers={"Host": "evil", "X-Forwarded-Host": "evil", "Forwarded": "host=evil"},
    )

    assert peek_unverified_claims(response.json()["access_token"])[1]["iss"] == ISSUER


# -- POST /v1/token: refresh_token ---------------------------------------------------------


async def refresh(
    public: httpx.AsyncClient, token: str, key: dict[str, Any], **form: str
) -> httpx.Response:
    """The refresh grant, authenticated as ``key`` (RFC 6749 §6)."""
    return await public.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": token, **form},
        auth=(key["record"]["id"], key["key"]),
    )


async def test_the_identifier_must_match_the_keys_when_sent(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    """``identifier`` is optional on both grants; a wrong one fails like a wrong secret."""
    right = await v1_tokens(public, key["key"], identifier=IDENTIFIER)
    wrong = await public.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "identifier": OTHER_IDENTIFIER},
        auth=(key["key"], ""),
    )

    assert oauth_error(wrong) == invalid_client()
    assert (
        oauth_error(await refresh(public, right["refresh_token"], key, identifier=OTHER_IDENTIFIER))
        == invalid_grant()
    )
    assert_token_response(
        await refresh(public, right["refresh_token"], key, identifier=IDENTIFIER),
        scope="read write",
    )


async def test_refresh_rotates_the_refresh_token(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    first = await v1_tokens(public, key["key"])

    response = await refresh(public, first["refresh_token"], key)

    assert_token_response(response, scope="read write")
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await refresh(public, second["refresh_token"], key)).status_code == 200


async def test_refresh_may_narrow_but_not_widen_the_scope(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    """T-RT-05 (RFC 6749 §6)."""
    tokens = await v1_tokens(public, key["key"], scope="read")

    widened = await refresh(public, tokens["refresh_token"], key, scope="read write")
    narrowed = await refresh(public, tokens["refresh_token"], key, scope="read")

    assert oauth_error(widened) == (
        400,
        {
            "error": "invalid_scope",
            "error_description": "claim 'scope': not part of the original grant (value 'write')",
        },
    )
    assert_token_response(narrowed, scope="read")


async def test_reuse_after_the_grace_window_revokes_the_family(
    public: httpx.AsyncClient, key: dict[str, Any], clock: FakeClock
) -> None:
    """T-RT-01 (RFC 9700 §4.14.2): the old and the new refresh token both die."""
    first = await v1_tokens(public, key["key"])
    second = (await refresh(public, first["refresh_token"], key)).json()
    clock.advance(11)  # the reuse grace is 10 s

    reused = await refresh(public, first["refresh_token"], key)
    successor = await refresh(public, second["refresh_token"], key)

    assert oauth_error(reused) == invalid_grant()
    assert oauth_error(successor) == invalid_grant()


async def test_replay_within_the_grace_window_keeps_the_family(
    public: httpx.AsyncClient, key: dict[str, Any], clock: FakeClock
) -> None:
    """T-RT-02: a retried request is refused, the rightful successor lives on."""
    first = await v1_tokens(public, key["key"])
    second = (await refresh(public, first["refresh_token"], key)).json()
    clock.advance(5)

    replay = await refresh(public, first["refresh_token"], key)
    successor = await refresh(public, second["refresh_token"], key)

    assert oauth_error(replay) == invalid_grant()
    assert_token_response(successor, scope="read write")


async def test_an_expired_refresh_token_is_invalid_grant(
    public: httpx.AsyncClient, key: dict[str, Any], clock: FakeClock
) -> None:
    tokens = await v1_tokens(public, key["key"])
    clock.advance(days=31)  # the family lives 30 days

    response = await refresh(public, tokens["refresh_token"], key)

    assert oauth_error(response) == invalid_grant()


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param("access_token", id="access-jwt"),  # T-TYP-03
        pytest.param("garbage", id="garbage"),
        pytest.param("ktr_" + "A" * 16 + "_" + "b" * 48, id="unknown"),
        pytest.param("tampered", id="one-character-changed"),
    ],
)
async def test_refresh_with_something_else_is_invalid_grant(
    public: httpx.AsyncClient, key: dict[str, Any], presented: str
) -> None:
    tokens = await v1_tokens(public, key["key"])
    value = {
        "access_token": tokens["access_token"],
        "tampered": tokens["refresh_token"][:-1]
        + ("a" if tokens["refresh_token"][-1] != "a" else "b"),
    }.get(presented, presented)

    response = await refresh(public, value, key)

    assert oauth_error(response) == invalid_grant()
    assert "www-authenticate" not in response.headers


# -- POST /v1/revoke -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["unknown", "ktr_" + "A" * 16 + "_" + "b" * 48, "kt_x", "a.b.c", "'; DROP TABLE api_keys;--"],
)
async def test_revoking_an_unknown_token_is_200(
    sqlite_public: httpx.AsyncClient, token: str
) -> None:
    """RFC 7009 §2.2."""
    response = await sqlite_public.post(
        "/v1/revoke", data={"token": token, "token_type_hint": "bogus"}
    )

    assert response.status_code == 200
    assert response.content == b""
    assert {k: response.headers[k] for k in NO_STORE} == NO_STORE


async def test_revoke_without_a_token_is_invalid_request(
    sqlite_public: httpx.AsyncClient,
) -> None:
    response = await sqlite_public.post("/v1/revoke", data={"token_type_hint": "refresh_token"})

    assert oauth_error(response) == (
        400,
        {"error": "invalid_request", "error_description": "token is required"},
    )


async def test_a_revoked_refresh_token_no_longer_refreshes(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    """T-RT-09."""
    tokens = await v1_tokens(public, key["key"])

    revoked = await public.post("/v1/revoke", data={"token": tokens["refresh_token"]})

    assert revoked.status_code == 200
    assert oauth_error(await refresh(public, tokens["refresh_token"], key)) == invalid_grant()


async def test_a_revoked_access_token_fails_validation(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    tokens = await v1_tokens(public, key["key"])
    other = await v1_tokens(public, key["key"])

    revoked = await public.post("/v1/revoke", data={"token": tokens["access_token"]})
    response = await public.get("/v1/validate", headers=bearer(tokens["access_token"]))

    assert revoked.status_code == 200
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="keyturn", error="invalid_token"'
    )
    still_valid = await public.get("/v1/validate", headers=bearer(other["access_token"]))
    assert still_valid.status_code == 200


async def test_an_access_token_revocation_survives_a_reload(
    state: KeyturnState, public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    """The revocation is stored, not only remembered by this instance."""
    tokens = await v1_tokens(public, key["key"])
    await public.post("/v1/revoke", data={"token": tokens["access_token"]})

    state.service.revocations.replace(tokens={}, subjects={})
    await state.service.reload_revocations()

    response = await public.get("/v1/validate", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401


# -- POST /v1/introspect -------------------------------------------------------------------


async def test_introspection_on_public_needs_the_admin_credential(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    tokens = await v1_tokens(public, key["key"])

    response = await public.post("/v1/introspect", data={"token": tokens["access_token"]})

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "admin credential required",
    }
    assert response.headers["www-authenticate"] == 'Bearer realm="keyturn"'


async def test_introspection_with_the_admin_token_shows_the_claims(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(database_url, admin_token=ADMIN_TOKEN)
    public = make_client(build_public_app(state), peer=REMOTE)
    admin = make_client(build_admin_app(state), headers=bearer(ADMIN_TOKEN))
    key = await create_key(admin, scopes=["read"], identifier=IDENTIFIER)
    tokens = await v1_tokens(public, key["key"])
    claims = peek_unverified_claims(tokens["access_token"])[1]

    wrong = await public.post(
        "/v1/introspect", data={"token": tokens["access_token"]}, headers=bearer("nope")
    )
    response = await public.post(
        "/v1/introspect", data={"token": tokens["access_token"]}, headers=bearer(ADMIN_TOKEN)
    )

    assert wrong.status_code == 401
    assert response.status_code == 200
    assert {k: response.headers[k] for k in NO_STORE} == NO_STORE
    assert response.json() == {
        "active": True,
        "scope": "read",
        "client_id": key["record"]["id"],
        "token_type": "Bearer",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "sub": f"key:{key['record']['id']}",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "jti": claims["jti"],
    }


async def test_introspection_on_the_admin_listener_works_from_loopback(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    tokens = await v1_tokens(public, key["key"])

    response = await admin.post("/v1/introspect", data={"token": tokens["access_token"]})

    assert response.status_code == 200
    assert response.json()["active"] is True
    assert response.json()["sub"] == f"key:{key['record']['id']}"


@pytest.mark.parametrize(
    "token",
    ["refresh_token", "revoked", "garbage", "expired"],
)
async def test_introspecting_anything_invalid_says_only_inactive(
    public: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    key: dict[str, Any],
    clock: FakeClock,
    token: str,
) -> None:
    """RFC 7662 §2.2: ``{"active": false}`` and nothing else."""
    tokens = await v1_tokens(public, key["key"])
    if token == "revoked":
        await public.post("/v1/revoke", data={"token": tokens["access_token"]})
    if token == "expired":
        clock.advance(900 + 31)
    value = tokens["access_token"] if token in ("revoked", "expired") else tokens.get(token, token)

    response = await admin.post("/v1/introspect", data={"token": value})

    assert response.status_code == 200
    assert response.json() == {"active": False}


# -- GET /v1/validate ----------------------------------------------------------------------


async def test_validate_returns_the_identity_in_headers(
    public: httpx.AsyncClient, key: dict[str, Any]
) -> None:
    tokens = await v1_tokens(public, key["key"])
    claims = peek_unverified_claims(tokens["access_token"])[1]

    response = await public.get("/v1/validate?scope=read", headers=bearer(tokens["access_token"]))

    assert response.status_code == 200
    assert response.content == b""
    key_id = key["record"]["id"]
    assert {k: v for k, v in response.headers.items() if k.startswith("x-keyturn-")} == {
        "x-keyturn-subject": f"key:{key_id}",
        "x-keyturn-client-id": key_id,
        "x-keyturn-scope": "read write",
        "x-keyturn-identifier": IDENTIFIER,
        "x-keyturn-token-id": claims["jti"],
        "x-keyturn-expires": str(claims["exp"]),
    }
    assert response.headers["cache-control"] == "no-store"


async def test_a_missing_scope_is_403_insufficient_scope(
    sqlite_public: httpx.AsyncClient, sqlite_key: dict[str, Any]
) -> None:
    """T-AZ-06 (RFC 6750 §3.1)."""
    tokens = await v1_tokens(sqlite_public, sqlite_key["key"], scope="read")

    response = await sqlite_public.get(
        "/v1/validate", params={"scope": "x"}, headers=bearer(tokens["access_token"])
    )

    assert response.status_code == 403
    assert response.content == b""
    assert response.headers["www-authenticate"] == (
        'Bearer realm="keyturn", error="insufficient_scope", '
        'error_description="token lacks required scope(s): x", scope="x"'
    )


@pytest.mark.parametrize("scope", ['a"b', "a\\b", "a\r\nSet-Cookie: x=1", "\u00e9"])
async def test_a_malformed_required_scope_is_denied_without_echoing_it(
    sqlite_public: httpx.AsyncClient, sqlite_key: dict[str, Any], scope: str
) -> None:
    """T-IN-10: the challenge never carries caller input; the gateway is told no."""
    tokens = await v1_tokens(sqlite_public, sqlite_key["key"])

    response = await sqlite_public.get(
        "/v1/validate", params={"scope": scope}, headers=bearer(tokens["access_token"])
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer realm="keyturn", error="invalid_request", '
        'error_description="the required scope is malformed"'
    )
    assert "set-cookie" not in response.headers


BAD_BEARERS = [
    "forged",
    "expired",
    "revoked",
    "hs256",
    "alg-none",
    "refresh-token",
    "other-audience",
    "garbage",
    "key-revoked",
]


@pytest.mark.parametrize("case", BAD_BEARERS)
async def test_a_bad_bearer_is_401_invalid_token(
    forging_state: KeyturnState, make_client: MakeClient, clock: FakeClock, case: str
) -> None:
    """Never 400, 429 or 500; T-TYP-02 for the refresh token."""
    public = make_client(build_public_app(forging_state), peer=REMOTE)
    admin = make_client(build_admin_app(forging_state))
    created = await create_key(admin, scopes=["read"])
    tokens = await v1_tokens(public, created["key"])
    access = tokens["access_token"]
    header = peek_unverified_claims(access)[0]
    if case == "revoked":
        await public.post("/v1/revoke", data={"token": access})
    if case == "key-revoked":
        await admin.post(f"/v1/admin/keys/{created['record']['id']}/revoke", json={})
    if case == "expired":
        clock.advance(900 + 31)
    presented = {
        "forged": resign(access, sub="key:someone-else", key=ATTACKER_KEY),
        "hs256": forge({**header, "alg": "HS256"}, peek_unverified_claims(access)[1], b"x" * 32),
        "alg-none": forge({**header, "alg": "none"}, peek_unverified_claims(access)[1], b""),
        "refresh-token": tokens["refresh_token"],
        "other-audience": resign(access, aud="other"),
        "garbage": "garbage",
    }.get(case, access)

    response = await public.get("/v1/validate", headers=bearer(presented))

    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="keyturn", error="invalid_token", error_description="'
    )


async def test_a_token_in_the_query_string_is_ignored(
    sqlite_public: httpx.AsyncClient, sqlite_key: dict[str, Any]
) -> None:
    """T-LOG-02: only the Authorization header counts."""
    tokens = await v1_tokens(sqlite_public, sqlite_key["key"])

    response = await sqlite_public.get(
        "/v1/validate", params={"access_token": tokens["access_token"]}
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="keyturn"'


# -- discovery -----------------------------------------------------------------------------


async def test_well_known_jwks_publishes_only_public_members(
    sqlite_state: KeyturnState, sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient
) -> None:
    """T-JWKS-01, with a second (pending) key published."""
    await sqlite_admin.post("/v1/admin/signing-keys/rotate")

    response = await sqlite_public.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert len(keys) == 2
    private = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
    for jwk in keys:
        assert not private & set(jwk)
        assert (jwk["use"], jwk["alg"], jwk["kty"]) == ("sig", "ES256", "EC")
        assert jwk["kid"]
    assert response.json() == sqlite_state.service.jwks()


async def test_authorization_server_metadata(sqlite_public: httpx.AsyncClient) -> None:
    """RFC 8414."""
    response = await sqlite_public.get(
        "/.well-known/oauth-authorization-server", headers={"Host": "evil"}
    )

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.json() == {
        "issuer": ISSUER,
        "token_endpoint": f"{ISSUER}/v1/token",
        "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
        "revocation_endpoint": f"{ISSUER}/v1/revoke",
        "introspection_endpoint": f"{ISSUER}/v1/introspect",
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
        "dpop_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
    }
