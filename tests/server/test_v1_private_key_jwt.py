"""private_key_jwt at /v1 (RFC 7523 §2.2 / §3), on SQLite and PostgreSQL (issue 17).

Keys registered by public key through the admin API, client authentication with a signed
assertion for ``client_credentials``, ``refresh_token`` and ``/v1/revoke``, the RFC 8414
metadata, and the attacks: a replayed assertion (also across two instances on one
database), an assertion for another client, the wrong ``aud``, a revoked key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Final

import httpx
import pytest

from keyturn.core.assertions import CLIENT_ASSERTION_TYPE
from keyturn.core.signing import SigningKey
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from tests.security.forge import b64, forge

from .conftest import (
    ISSUER,
    REMOTE,
    START,
    MakeClient,
    OpenState,
    bearer,
)

NOW: Final = int(START.timestamp())
TOKEN_ENDPOINT: Final = f"{ISSUER}/v1/token"
DEVICE: Final = SigningKey.generate("ES256")
SECOND_DEVICE: Final = SigningKey.generate("EdDSA")


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [dict(k.verification_key.to_jwk()) for k in keys]}


def assertion(client_id: str, key: SigningKey = DEVICE, **claims: Any) -> str:
    payload = {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": secrets.token_urlsafe(12),
        **claims,
    }
    return forge({"alg": key.alg, "typ": "JWT", "kid": key.kid}, payload, key=key)


def assertion_form(signed: str, **form: str) -> dict[str, str]:
    return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": signed, **form}


async def keyless_key(admin: httpx.AsyncClient, *keys: SigningKey, **body: Any) -> str:
    """Create a key with public keys only; returns its id."""
    response = await admin.post("/v1/admin/keys", json={"jwks": jwks(*(keys or (DEVICE,))), **body})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["key"] is None  # no secret exists
    assert {k["kid"] for k in created["public_keys"]} == {k.kid for k in keys or (DEVICE,)}
    key_id: str = created["record"]["id"]
    return key_id


async def client_credentials(public: httpx.AsyncClient, signed: str, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", **assertion_form(signed, **form)}
    return await public.post("/v1/token", data=data)


async def test_rfc7523_2_2_client_credentials_with_a_signed_assertion(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin, scopes=["read"])

    response = await client_credentials(public, assertion(key_id))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["token_type"], body["scope"]) == ("Bearer", "read")
    checked = await public.get("/v1/validate", headers=bearer(body["access_token"]))
    assert checked.status_code == 200
    assert checked.headers["X-Keyturn-Subject"] == f"key:{key_id}"
    assert checked.headers["X-Keyturn-Client-Id"] == key_id


async def test_rfc7523_3_aud_may_be_the_token_endpoint_and_client_id_may_be_sent(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin)
    signed = assertion(key_id, aud=TOKEN_ENDPOINT)
    response = await client_credentials(public, signed, client_id=key_id)
    assert response.status_code == 200, response.text


async def test_rfc7523_3_jti_single_use_a_replayed_assertion_is_refused(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, state: KeyturnState
) -> None:
    key_id = await keyless_key(admin)
    signed = assertion(key_id)
    assert (await client_credentials(public, signed)).status_code == 200

    replayed = await client_credentials(public, signed)

    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_client"
    assert "used before" in replayed.json()["error_description"]


async def test_attack_replayed_assertion_across_two_instances_on_one_database(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    first = await open_state(database_url)
    second = await open_state(database_url)
    admin = make_client(build_admin_app(first))
    key_id = await keyless_key(admin)
    signed = assertion(key_id)

    one = await client_credentials(make_client(build_public_app(first), peer=REMOTE), signed)
    two = await client_credentials(make_client(build_public_app(second), peer=REMOTE), signed)

    assert one.status_code == 200, one.text
    assert two.status_code == 401
    assert two.json()["error"] == "invalid_client"


async def test_attack_an_assertion_for_another_client_is_refused(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    mine = await keyless_key(admin, DEVICE)
    theirs = await keyless_key(admin, SECOND_DEVICE)
    # My device signs an assertion naming their key: their public key does not verify it.
    forged = await client_credentials(public, assertion(theirs, key=DEVICE))
    # Naming their key as client_id next to an assertion of mine fails too.
    mixed = await client_credentials(public, assertion(mine), client_id=theirs)

    for response in (forged, mixed):
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_attack_an_assertion_with_the_wrong_aud_is_refused(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin)
    for aud in ("https://other-server.example", f"{ISSUER}/v1/revoke"):
        response = await client_credentials(public, assertion(key_id, aud=aud))
        assert response.status_code == 401
        assert "aud" in response.json()["error_description"]


async def test_an_expired_assertion_is_refused(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin)
    response = await client_credentials(public, assertion(key_id, iat=NOW - 600, exp=NOW - 300))
    assert response.status_code == 401
    assert "expired" in response.json()["error_description"]


async def test_a_revoked_key_cannot_authenticate_with_its_public_key(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin)
    assert (await admin.post(f"/v1/admin/keys/{key_id}/revoke", json={})).status_code == 200
    response = await client_credentials(public, assertion(key_id))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_a_key_with_a_secret_has_no_public_key_to_check_an_assertion_against(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    created = (await admin.post("/v1/admin/keys", json={})).json()
    response = await client_credentials(public, assertion(created["record"]["id"]))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "form",
    [
        {"client_assertion_type": "urn:example:other"},
        {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": ""},
        {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": "x",
         "client_secret": "kt_x"},
    ],
    ids=["unsupported-type", "empty-assertion", "two-methods"],
)  # fmt: skip
async def test_rfc7521_4_2_malformed_client_assertion_requests(
    sqlite_public: httpx.AsyncClient, form: dict[str, str]
) -> None:
    response = await sqlite_public.post(
        "/v1/token", data={"grant_type": "client_credentials", **form}
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_request", "invalid_client")


async def test_rfc6749_6_refresh_and_rfc7009_revoke_authenticate_with_assertions(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(database_url, client_credentials_refresh_tokens=True)
    admin = make_client(build_admin_app(state))
    public = make_client(build_public_app(state), peer=REMOTE)
    key_id = await keyless_key(admin)
    tokens = (await client_credentials(public, assertion(key_id))).json()

    without = await public.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    refreshed = await public.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            **assertion_form(assertion(key_id)),
        },
    )
    assert without.status_code == 401  # a key's refresh token needs the key's authentication
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()

    revoked = await public.post(
        "/v1/revoke", data={"token": new["refresh_token"], **assertion_form(assertion(key_id))}
    )
    assert revoked.status_code == 200
    again = await public.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": new["refresh_token"],
            **assertion_form(assertion(key_id)),
        },
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_rfc8414_metadata_advertises_private_key_jwt(
    sqlite_public: httpx.AsyncClient,
) -> None:
    body = (await sqlite_public.get("/.well-known/oauth-authorization-server")).json()
    assert "private_key_jwt" in body["token_endpoint_auth_methods_supported"]
    assert "private_key_jwt" in body["revocation_endpoint_auth_methods_supported"]
    assert set(body["token_endpoint_auth_signing_alg_values_supported"]) == {
        "ES256",
        "EdDSA",
        "RS256",
    }


# -- public keys through the admin API -------------------------------------------------


async def test_admin_adds_lists_and_removes_public_keys_for_rotation(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin, DEVICE)
    added = await admin.post(f"/v1/admin/keys/{key_id}/public-keys", json=jwks(SECOND_DEVICE))
    assert added.status_code == 200, added.text
    assert {k["kid"] for k in added.json()["keys"]} == {DEVICE.kid, SECOND_DEVICE.kid}
    assert all("d" not in k["jwk"] for k in added.json()["keys"])
    assert (
        await client_credentials(public, assertion(key_id, key=SECOND_DEVICE))
    ).status_code == 200

    removed = await admin.delete(f"/v1/admin/keys/{key_id}/public-keys/{DEVICE.kid}")
    assert removed.status_code == 204
    listed = await admin.get(f"/v1/admin/keys/{key_id}/public-keys")
    assert [k["kid"] for k in listed.json()["keys"]] == [SECOND_DEVICE.kid]
    # The removed device key no longer authenticates.
    assert (await client_credentials(public, assertion(key_id))).status_code == 401
    missing = await admin.delete(f"/v1/admin/keys/{key_id}/public-keys/{DEVICE.kid}")
    assert missing.status_code == 404

    audit = (await admin.get(f"/v1/admin/audit?target_id={key_id}")).json()["events"]
    actions = {event["action"] for event in audit}
    assert {"key.created", "key.public_keys_added", "key.public_key_removed"} <= actions


async def test_admin_refuses_a_private_key_and_weak_keys(sqlite_admin: httpx.AsyncClient) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    weak = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),  # noqa: S505 -- refused
        as_dict=True,
    )
    for jwk in (DEVICE.private_jwk(), {"kty": "oct", "k": "c2VjcmV0"}, weak):
        response = await sqlite_admin.post("/v1/admin/keys", json={"jwks": {"keys": [jwk]}})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert DEVICE.private_jwk()["d"] not in response.text  # never echoed
    listed = (await sqlite_admin.get("/v1/admin/keys")).json()
    assert listed["keys"] == []  # nothing was stored


async def test_admin_limits_the_public_keys_of_a_key(sqlite_admin: httpx.AsyncClient) -> None:
    key_id = await keyless_key(sqlite_admin)
    more = jwks(*(SigningKey.generate("ES256") for _ in range(9)))
    assert (
        await sqlite_admin.post(f"/v1/admin/keys/{key_id}/public-keys", json=more)
    ).status_code == 200
    one_more = jwks(SigningKey.generate("ES256"))
    response = await sqlite_admin.post(f"/v1/admin/keys/{key_id}/public-keys", json=one_more)
    assert response.status_code == 400
    listed = await sqlite_admin.get(f"/v1/admin/keys/{key_id}/public-keys")
    assert len(listed.json()["keys"]) == 10
    unknown = await sqlite_admin.get("/v1/admin/keys/nosuchkey0000000/public-keys")
    assert unknown.status_code == 404


async def test_attack_alg_none_and_hs256_with_the_public_key_as_secret(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key_id = await keyless_key(admin)
    claims = {"iss": key_id, "sub": key_id, "aud": ISSUER, "iat": NOW, "exp": NOW + 60}
    unsigned = forge({"alg": "none", "typ": "JWT"}, {**claims, "jti": "n1"}, b"")
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = forge({}, {**claims, "jti": "h1"}).split(".")[1]
    secret = DEVICE.verification_key.public_pem()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{body}.{b64(mac)}"

    for attack in (unsigned, confused):
        response = await client_credentials(public, attack)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
    # The genuine device still gets in: the refusals were about the attacks.
    assert (await client_credentials(public, assertion(key_id))).status_code == 200
