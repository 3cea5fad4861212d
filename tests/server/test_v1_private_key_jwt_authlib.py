"""Authlib's ``PrivateKeyJWT`` client authentication (from PyPI, unchanged) against /v1.

A third-party implementation of RFC 7523 §2.2 signs the assertions; Keyturn only holds
the device's public key. On SQLite and PostgreSQL (issue 17).
"""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime

import httpx
import pytest

from keyturn.core.signing import SigningKey
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import ISSUER, REMOTE, MakeClient, bearer

with warnings.catch_warnings():
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import ECKey

TOKEN_ENDPOINT = f"{ISSUER}/v1/token"


@pytest.fixture
def clock() -> FakeClock:
    """Authlib stamps assertions with the real time: the server's clock starts there."""
    return FakeClock(datetime.now(UTC))


async def test_authlib_private_key_jwt_gets_tokens_and_a_replay_is_refused(
    state: KeyturnState, make_client: MakeClient
) -> None:
    device = SigningKey.generate("ES256")
    admin = make_client(build_admin_app(state))
    public = make_client(build_public_app(state), peer=REMOTE)
    created = await admin.post(
        "/v1/admin/keys",
        json={"jwks": {"keys": [dict(device.verification_key.to_jwk())]}, "scopes": ["read"]},
    )
    assert created.status_code == 201, created.text
    key_id = created.json()["record"]["id"]
    private_key = ECKey.import_key(device.private_pem())
    sent: list[str] = []

    async def remember(request: httpx.Request) -> None:
        sent.append(request.content.decode())

    async def token() -> dict[str, object]:
        # Authlib's assertions live an hour by default; Keyturn takes five minutes at most,
        # so the client shortens exp through Authlib's own ``claims`` (docs/keyless.md).
        auth = PrivateKeyJWT(TOKEN_ENDPOINT, alg="ES256", claims={"exp": int(time.time()) + 120})
        transport = httpx.ASGITransport(app=build_public_app(state), client=REMOTE)
        async with AsyncOAuth2Client(
            client_id=key_id,
            client_secret=private_key,
            token_endpoint_auth_method=auth,
            transport=transport,
            event_hooks={"request": [remember]},
        ) as client:
            fetched: dict[str, object] = await client.fetch_token(
                TOKEN_ENDPOINT, grant_type="client_credentials"
            )
            return fetched

    first = await token()
    second = await token()

    assert first["token_type"] == "Bearer"
    assert first["scope"] == "read"
    assert first["access_token"] != second["access_token"]
    for tokens in (first, second):
        checked = await public.get("/v1/validate", headers=bearer(str(tokens["access_token"])))
        assert checked.status_code == 200
        assert checked.headers["X-Keyturn-Client-Id"] == key_id
    # The exact body Authlib sent, replayed, is refused: its jti is spent.
    assert "client_assertion_type" in sent[0]
    replayed = await public.post(
        "/v1/token",
        content=sent[0],
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_client"
