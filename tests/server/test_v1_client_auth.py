"""Client authentication on /v1 (issue 13): RFC 6749 §2.3.1, §5.2, §6 and RFC 7009 §2.1.

Two keys, A (the victim) and B (another client). Every refused request is followed by a
check that A's token still works. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyturn.core.tokens import peek_unverified_claims
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import (
    ADMIN_TOKEN,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    create_key,
    legacy_tokens,
    register_legacy_key,
)

BASIC_CHALLENGE = 'Basic realm="keyturn"'
UNKNOWN_KEY = "kt_" + "A" * 16 + "_" + "b" * 49
BAD_KEY = {"error": "invalid_client", "error_description": "the API key is not valid"}


@pytest.fixture
async def state(open_state: OpenState, database_url: str) -> KeyturnState:
    """KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS=true: keys get refresh tokens."""
    return await open_state(database_url, client_credentials_refresh_tokens=True)


@pytest.fixture
async def default_state(open_state: OpenState, database_url: str) -> KeyturnState:
    """The default settings: client_credentials answers carry no refresh token."""
    return await open_state(database_url)


@pytest.fixture
async def key_a(admin: httpx.AsyncClient) -> dict[str, Any]:
    return await create_key(admin, name="a", scopes=["read"])


@pytest.fixture
async def key_b(admin: httpx.AsyncClient) -> dict[str, Any]:
    return await create_key(admin, name="b", scopes=["read"])


def basic(key: dict[str, Any], secret: str | None = None) -> tuple[str, str]:
    """HTTP Basic ``client_id:secret`` naming ``key`` (with its own secret unless given)."""
    return key["record"]["id"], key["key"] if secret is None else secret


async def tokens_for(public: httpx.AsyncClient, key: dict[str, Any]) -> dict[str, Any]:
    response = await public.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=basic(key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(
    public: httpx.AsyncClient, token: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    return await public.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=auth
    )


async def revoke(
    public: httpx.AsyncClient, token: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    return await public.post("/v1/revoke", data={"token": token}, auth=auth)


async def access_valid(public: httpx.AsyncClient, access: str) -> bool:
    response = await public.get("/v1/validate", headers=bearer(access))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def assert_invalid_client(response: httpx.Response, description: str | None = None) -> None:
    """401 invalid_client with the Basic challenge (RFC 6749 §5.2)."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    if description is not None:
        assert body["error_description"] == description
    assert response.headers["www-authenticate"] == BASIC_CHALLENGE
    assert response.headers["cache-control"] == "no-store"


async def assert_refresh_still_works(
    public: httpx.AsyncClient, key: dict[str, Any], token: str
) -> None:
    response = await refresh(public, token, basic(key))
    assert response.status_code == 200, response.text


# -- the issue's table: POST /v1/token, refresh_token grant --------------------------------


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(UNKNOWN_KEY, id="unknown-key"),
        pytest.param("not-a-key", id="malformed"),
        pytest.param("other", id="b-secret"),
    ],
)
async def test_refresh_with_a_wrong_secret_is_invalid_client(
    public: httpx.AsyncClient, key_a: dict[str, Any], key_b: dict[str, Any], wrong: str
) -> None:
    tokens = await tokens_for(public, key_a)
    secret = key_b["key"] if wrong == "other" else wrong

    response = await refresh(public, tokens["refresh_token"], basic(key_a, secret))

    assert_invalid_client(response, BAD_KEY["error_description"])
    assert response.json() == BAD_KEY
    await assert_refresh_still_works(public, key_a, tokens["refresh_token"])


async def test_refresh_with_another_clients_credentials_is_invalid_grant(
    public: httpx.AsyncClient, key_a: dict[str, Any], key_b: dict[str, Any]
) -> None:
    """RFC 6749 §6, §10.4: B may not redeem A's refresh token."""
    tokens = await tokens_for(public, key_a)

    response = await refresh(public, tokens["refresh_token"], basic(key_b))
    by_body = await public.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": key_b["record"]["id"],
            "client_secret": key_b["key"],
        },
    )

    for refused in (response, by_body):
        assert refused.status_code == 400, refused.text
        assert refused.json() == {
            "error": "invalid_grant",
            "error_description": "the refresh token was not issued to the authenticated client",
        }
        assert "www-authenticate" not in refused.headers
    await assert_refresh_still_works(public, key_a, tokens["refresh_token"])


async def test_refresh_without_client_authentication_is_invalid_client(
    public: httpx.AsyncClient, key_a: dict[str, Any]
) -> None:
    """RFC 6749 §6: a client that was issued credentials must authenticate."""
    tokens = await tokens_for(public, key_a)

    response = await refresh(public, tokens["refresh_token"])
    id_only = await public.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": key_a["record"]["id"],
        },
    )

    for refused in (response, id_only):
        assert_invalid_client(refused)
        assert refused.json()["error_description"].startswith(
            "this refresh token was issued to an API key"
        )
    await assert_refresh_still_works(public, key_a, tokens["refresh_token"])


async def test_refresh_with_the_right_client_rotates(
    public: httpx.AsyncClient, key_a: dict[str, Any]
) -> None:
    tokens = await tokens_for(public, key_a)

    first = await refresh(public, tokens["refresh_token"], basic(key_a))
    second = await public.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            "client_secret": key_a["key"],
        },
    )

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json()["refresh_token"] != tokens["refresh_token"]
    claims = peek_unverified_claims(second.json()["access_token"])[1]
    assert claims["client_id"] == key_a["record"]["id"]


async def test_an_unknown_refresh_token_without_credentials_stays_invalid_grant(
    public: httpx.AsyncClient,
) -> None:
    response = await refresh(public, "ktr_" + "A" * 16 + "_" + "b" * 49)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# -- the issue's table: POST /v1/revoke -----------------------------------------------------


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_revoke_with_a_wrong_secret_is_invalid_client_and_revokes_nothing(
    public: httpx.AsyncClient, key_a: dict[str, Any], key_b: dict[str, Any], kind: str
) -> None:
    """RFC 7009 §2.1: the client is authenticated first."""
    tokens = await tokens_for(public, key_a)

    wrong = await revoke(public, tokens[kind], basic(key_a, UNKNOWN_KEY))
    mismatched = await revoke(public, tokens[kind], basic(key_a, key_b["key"]))

    for refused in (wrong, mismatched):
        assert_invalid_client(refused)
        assert refused.json() == BAD_KEY
    assert await access_valid(public, tokens["access_token"])
    await assert_refresh_still_works(public, key_a, tokens["refresh_token"])


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_revoke_of_another_clients_token_is_refused_and_revokes_nothing(
    public: httpx.AsyncClient, key_a: dict[str, Any], key_b: dict[str, Any], kind: str
) -> None:
    """RFC 7009 §2.1: only a token issued to the authenticated client."""
    tokens = await tokens_for(public, key_a)

    response = await revoke(public, tokens[kind], basic(key_b))

    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "unauthorized_client",
        "error_description": "the token was not issued to the authenticated client",
    }
    assert response.headers["cache-control"] == "no-store"
    assert await access_valid(public, tokens["access_token"])
    await assert_refresh_still_works(public, key_a, tokens["refresh_token"])


@pytest.mark.parametrize("auth", ["basic", "form", "none"])
async def test_revoking_a_refresh_token_revokes_its_familys_access_tokens(
    state: KeyturnState,
    public: httpx.AsyncClient,
    key_a: dict[str, Any],
    auth: str,
) -> None:
    """RFC 7009 §2.1 SHOULD; with the client's own credentials, or none (the token proves it)."""
    first = await tokens_for(public, key_a)
    rotated = (await refresh(public, first["refresh_token"], basic(key_a))).json()
    other = await tokens_for(public, key_a)  # another grant of the same key
    kwargs: dict[str, Any] = {
        "basic": {"auth": basic(key_a)},
        "form": {"data": {"client_secret": key_a["key"]}},
        "none": {},
    }[auth]
    data = {"token": rotated["refresh_token"], **kwargs.pop("data", {})}

    response = await public.post("/v1/revoke", data=data, **kwargs)

    assert response.status_code == 200, response.text
    assert not await access_valid(public, first["access_token"])
    assert not await access_valid(public, rotated["access_token"])
    assert (await refresh(public, rotated["refresh_token"], basic(key_a))).status_code == 400
    assert await access_valid(public, other["access_token"])
    # Stored, not only in this process: a fresh reload refuses them too.
    state.service.revocations.replace(tokens={}, subjects={})
    await state.service.reload_revocations()
    assert not await access_valid(public, rotated["access_token"])
    assert await access_valid(public, other["access_token"])


async def test_revoke_with_the_right_client_revokes_an_access_token(
    public: httpx.AsyncClient, key_a: dict[str, Any]
) -> None:
    tokens = await tokens_for(public, key_a)

    response = await revoke(public, tokens["access_token"], basic(key_a))

    assert response.status_code == 200, response.text
    assert not await access_valid(public, tokens["access_token"])


async def test_revoke_with_credentials_of_an_unknown_token_is_200(
    public: httpx.AsyncClient, key_a: dict[str, Any]
) -> None:
    """RFC 7009 §2.2: unknown tokens are not an error, with or without authentication."""
    response = await revoke(public, "ktr_" + "A" * 16 + "_" + "b" * 49, basic(key_a))

    assert response.status_code == 200


# -- the issue's table: POST /v1/token, client_credentials with a wrong client_id -----------


@pytest.mark.parametrize(
    "how",
    ["basic", "form", "basic-and-another-in-the-body", "b-id-with-a-key"],
)
async def test_a_client_id_that_is_not_the_keys_is_invalid_client(
    public: httpx.AsyncClient, key_a: dict[str, Any], key_b: dict[str, Any], how: str
) -> None:
    """RFC 6749 §2.3.1, §5.2: the same answer as an unknown key (no oracle for ids)."""
    data: dict[str, str] = {"grant_type": "client_credentials"}
    auth: tuple[str, str] | None = None
    if how == "basic":
        auth = ("no-such-client", key_a["key"])
    elif how == "form":
        data |= {"client_id": "no-such-client", "client_secret": key_a["key"]}
    elif how == "basic-and-another-in-the-body":
        auth = basic(key_a)
        data["client_id"] = "no-such-client"
    else:
        auth = (key_b["record"]["id"], key_a["key"])

    response = await public.post("/v1/token", data=data, auth=auth)
    unknown = await public.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=("", UNKNOWN_KEY)
    )

    assert_invalid_client(response)
    assert response.json() == BAD_KEY == unknown.json()
    assert response.content == unknown.content
    assert await tokens_for(public, key_a)


# -- the default: no refresh token for client_credentials -----------------------------------


async def test_by_default_client_credentials_issue_no_refresh_token(
    default_state: KeyturnState, make_client: MakeClient
) -> None:
    """RFC 6749 §4.4.3; the client authenticates again with its key."""
    public = make_client(build_public_app(default_state), peer=REMOTE)
    admin = make_client(build_admin_app(default_state))
    key = await create_key(admin, scopes=["read"])

    first = await tokens_for(public, key)
    second = await tokens_for(public, key)

    assert set(first) == {"access_token", "token_type", "expires_in", "scope"}
    assert "sid" not in peek_unverified_claims(first["access_token"])[1]
    assert first["access_token"] != second["access_token"]
    assert await access_valid(public, first["access_token"])
    # A legacy (JWThenticator) refresh token is still the key's: /v1 wants the key for it.
    await register_legacy_key(admin)
    legacy = await legacy_tokens(public)
    assert_invalid_client(await refresh(public, legacy["refresh_token"]))


async def test_metadata_lists_the_client_authentication_methods(
    public: httpx.AsyncClient,
) -> None:
    body = (await public.get("/.well-known/oauth-authorization-server")).json()

    methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    assert body["token_endpoint_auth_methods_supported"] == methods
    assert body["revocation_endpoint_auth_methods_supported"] == methods


async def test_metadata_is_also_where_rfc_8414_puts_it_for_a_prefix(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    """RFC 8414 §3.1: ``/.well-known/oauth-authorization-server/<prefix>``; the old path stays."""
    state = await open_state(sqlite_database_url, url_prefix="/auth")
    public = make_client(build_public_app(state), peer=REMOTE)

    rfc = await public.get("/.well-known/oauth-authorization-server/auth")
    prefixed = await public.get("/auth/.well-known/oauth-authorization-server")
    document = (await public.get("/auth/openapi.json")).json()

    assert rfc.status_code == prefixed.status_code == 200
    assert rfc.json() == prefixed.json()
    assert rfc.json()["token_endpoint"].endswith("/auth/v1/token")
    assert "/.well-known/oauth-authorization-server/auth" in document["paths"]
    assert (await public.get("/.well-known/oauth-authorization-server")).status_code == 404


async def test_a_configured_admin_token_guards_introspection_from_loopback_too(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    """docs/api.md: once KEYTURN_ADMIN_TOKEN is set, loopback callers need it as well."""
    state = await open_state(sqlite_database_url, admin_token=ADMIN_TOKEN)
    admin = make_client(build_admin_app(state))  # a loopback peer
    public = make_client(build_public_app(state), peer=REMOTE)
    operator = make_client(build_admin_app(state), headers=bearer(ADMIN_TOKEN))
    key = await create_key(operator, scopes=["read"])
    access = (await tokens_for(public, key))["access_token"]

    without = await admin.post("/v1/introspect", data={"token": access})
    with_token = await admin.post(
        "/v1/introspect", data={"token": access}, headers=bearer(ADMIN_TOKEN)
    )

    assert without.status_code == 401
    assert without.headers["www-authenticate"] == 'Bearer realm="keyturn-admin"'
    assert with_token.status_code == 200
    assert with_token.json()["active"] is True


async def test_reuse_detection_also_refuses_the_familys_access_tokens(
    public: httpx.AsyncClient, key_a: dict[str, Any], clock: FakeClock
) -> None:
    """RFC 9700 §4.14.2 revokes the family; its access tokens go with it (RFC 7009 §2.1)."""
    first = await tokens_for(public, key_a)
    second = (await refresh(public, first["refresh_token"], basic(key_a))).json()
    other = await tokens_for(public, key_a)
    clock.advance(11)  # past the 10 s reuse grace

    reused = await refresh(public, first["refresh_token"], basic(key_a))

    assert reused.status_code == 400
    assert not await access_valid(public, second["access_token"])
    assert await access_valid(public, other["access_token"])


async def test_a_revoked_family_is_refused_on_every_check_path(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """A JWThenticator refresh token revoked at /v1/revoke takes its JWTs with it, on the
    legacy checks, the gateway check and introspection alike; the legacy body is unchanged."""
    await register_legacy_key(admin)
    legacy = await legacy_tokens(public)
    assert set(legacy) == {"jwt", "refresh_token"}
    jwt = legacy["jwt"]
    assert (await public.post("/validate", json={"jwt": jwt})).status_code == 200

    assert (await revoke(public, legacy["refresh_token"])).status_code == 200

    assert (await public.post("/validate", json={"jwt": jwt})).status_code == 401
    assert (await public.get("/validate_request", headers=bearer(jwt))).status_code == 401
    assert not await access_valid(public, jwt)
    introspected = await admin.post("/v1/introspect", data={"token": jwt})
    assert introspected.json() == {"active": False}
