"""Authlib's OAuth 2.0 client (from PyPI, unchanged) against /v1, on SQLite and PostgreSQL.

Discovery, ``client_credentials`` with both client authentication methods, the refresh
grant (with ``KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS=true``) and RFC 7009 revocation
with client authentication, as a third-party client does them (issue 13).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from keyturn.server import KeyturnState, build_admin_app, build_public_app

from .conftest import REMOTE, MakeClient, OpenState, bearer, create_key

with warnings.catch_warnings():
    # Authlib 1.9 warns that it runs on httpx rather than its httpx2 fork, through an
    # "always" filter of its own; both stay inside this block.
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

OAuthClient = Callable[..., AbstractAsyncContextManager[AsyncOAuth2Client]]


@pytest.fixture
async def state(open_state: OpenState, database_url: str) -> KeyturnState:
    return await open_state(database_url, client_credentials_refresh_tokens=True)


@pytest.fixture
def oauth_client(state: KeyturnState) -> OAuthClient:
    """Authlib clients whose HTTP goes to the public listener in process."""

    @asynccontextmanager
    async def make(key: dict[str, Any], method: str) -> AsyncIterator[AsyncOAuth2Client]:
        transport = httpx.ASGITransport(app=build_public_app(state), client=REMOTE)
        async with AsyncOAuth2Client(
            client_id=key["record"]["id"],
            client_secret=key["key"],
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
            transport=transport,
        ) as client:
            yield client

    return make


async def metadata(client: AsyncOAuth2Client) -> dict[str, Any]:
    response = await client.request(
        "GET", "https://kt.test/.well-known/oauth-authorization-server", withhold_token=True
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def valid(client: httpx.AsyncClient, access_token: str) -> bool:
    response = await client.get("/v1/validate", headers=bearer(access_token))
    return response.status_code == 200


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_client_credentials_refresh_and_revoke(
    state: KeyturnState, make_client: MakeClient, oauth_client: OAuthClient, method: str
) -> None:
    admin = make_client(build_admin_app(state))
    public = make_client(build_public_app(state), peer=REMOTE)
    key = await create_key(admin, scopes=["read", "write"])

    async with oauth_client(key, method) as client:
        meta = await metadata(client)
        assert method in meta["token_endpoint_auth_methods_supported"]
        assert method in meta["revocation_endpoint_auth_methods_supported"]

        token = await client.fetch_token(
            meta["token_endpoint"], grant_type="client_credentials", scope="read"
        )
        assert (token["token_type"], token["scope"]) == ("Bearer", "read")
        assert token["refresh_token"].startswith("ktr_")

        refreshed = await client.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]
        assert await valid(public, refreshed["access_token"])

        # Authlib's own bearer auth on a request to a protected resource (here the gateway route).
        checked = await client.get("https://kt.test/v1/validate")
        assert checked.status_code == 200
        assert checked.headers["x-keyturn-client-id"] == key["record"]["id"]

        revoked = await client.revoke_token(
            meta["revocation_endpoint"],
            token=refreshed["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200
        assert not await valid(public, refreshed["access_token"])  # the family's tokens die
        with pytest.raises(OAuthError) as refused:
            await client.refresh_token(meta["token_endpoint"])
        assert refused.value.error == "invalid_grant"


async def test_authlib_client_of_another_key_is_refused(
    state: KeyturnState, make_client: MakeClient, oauth_client: OAuthClient
) -> None:
    admin = make_client(build_admin_app(state))
    public = make_client(build_public_app(state), peer=REMOTE)
    victim = await create_key(admin, scopes=["read"])
    other = await create_key(admin, scopes=["read"])

    async with oauth_client(victim, "client_secret_basic") as client:
        meta = await metadata(client)
        stolen = await client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    async with oauth_client(other, "client_secret_basic") as thief:
        with pytest.raises(OAuthError) as refresh_refused:
            await thief.refresh_token(meta["token_endpoint"], refresh_token=stolen["refresh_token"])
        revoke_refused = await thief.revoke_token(
            meta["revocation_endpoint"], token=stolen["access_token"]
        )

    assert refresh_refused.value.error == "invalid_grant"
    assert revoke_refused.status_code == 400
    assert revoke_refused.json()["error"] == "unauthorized_client"
    assert await valid(public, stolen["access_token"])
    async with oauth_client(victim, "client_secret_post") as client:
        mine = await client.refresh_token(
            meta["token_endpoint"], refresh_token=stolen["refresh_token"]
        )
    assert await valid(public, mine["access_token"])


async def test_authlib_client_credentials_without_refresh_tokens(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    """The default: no refresh token; Authlib fetches again with its credentials."""
    default = await open_state(database_url)
    admin = make_client(build_admin_app(default))
    key = await create_key(admin, scopes=["read"])
    transport = httpx.ASGITransport(app=build_public_app(default), client=REMOTE)

    async with AsyncOAuth2Client(
        client_id=key["record"]["id"], client_secret=key["key"], transport=transport
    ) as client:
        first = await client.fetch_token(
            "https://kt.test/v1/token", grant_type="client_credentials"
        )
        second = await client.fetch_token(
            "https://kt.test/v1/token", grant_type="client_credentials"
        )
        with pytest.raises(OAuthError) as wrong:
            await client.fetch_token(
                "https://kt.test/v1/token",
                grant_type="client_credentials",
                auth=("no-such-client", key["key"]),
            )

    assert "refresh_token" not in first
    assert first["access_token"] != second["access_token"]
    assert wrong.value.error == "invalid_client"
