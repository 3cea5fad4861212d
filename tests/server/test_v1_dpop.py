"""DPoP at the token endpoint (RFC 9449 §4.3, §5, §8), on SQLite and PostgreSQL (issue 17).

A valid proof binds the access token (``cnf.jkt``, ``token_type`` DPoP) for every grant;
every §4.3 check refuses with 400 ``invalid_dpop_proof``; a proof is single use, also
across two instances on one database; a deployment or a key can require DPoP; server
nonces (§8) are stateless and valid on every instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from keyturn.core.dpop import proof_jwk
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.service.dpop import DPoPNonces
from keyturn.testing import FakeClock
from tests.security.forge import b64, forge

from .conftest import REMOTE, MakeClient, OpenState, create_key
from .dpop_helpers import (
    DEVICE,
    NOW,
    OTHER_DEVICE,
    TOKEN_URL,
    claims,
    dpop_token,
    proof,
    thumbprint,
)


def assert_dpop_error(response: httpx.Response, error: str = "invalid_dpop_proof") -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


@pytest.fixture
async def key(admin: httpx.AsyncClient) -> str:
    created = await create_key(admin, scopes=["read"])
    secret: str = created["key"]
    return secret


# -- §5: a proof binds the access token ----------------------------------------------------


async def test_rfc9449_5_client_credentials_with_a_proof_issues_a_bound_token(
    public: httpx.AsyncClient, key: str
) -> None:
    response = await dpop_token(public, key, proof())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims(body["access_token"])["cnf"] == {"jkt": thumbprint(DEVICE)}
    assert "DPoP-Nonce" not in response.headers  # nonces are off by default


async def test_rfc9449_5_without_a_proof_the_token_stays_a_bearer_token(
    public: httpx.AsyncClient, key: str
) -> None:
    response = await dpop_token(public, key)

    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in claims(response.json()["access_token"])


async def test_rfc9449_4_3_htu_may_be_the_url_the_request_arrived_at(
    public: httpx.AsyncClient, key: str
) -> None:
    # The test client talks to http://kt.test; the issuer is https://kt.test.
    as_received = await dpop_token(public, key, proof(url="http://kt.test/v1/token"))
    normalised = await dpop_token(public, key, proof(url="HTTPS://KT.TEST:443/v1/token"))

    assert as_received.status_code == 200, as_received.text
    assert normalised.status_code == 200, normalised.text


async def test_rfc9449_5_private_key_jwt_with_a_proof(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    from .test_v1_private_key_jwt import assertion, assertion_form, keyless_key

    key_id = await keyless_key(admin)
    response = await public.post(
        "/v1/token",
        data={"grant_type": "client_credentials", **assertion_form(assertion(key_id))},
        headers={"DPoP": proof(OTHER_DEVICE)},
    )

    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    assert claims(response.json()["access_token"])["cnf"]["jkt"] == thumbprint(OTHER_DEVICE)


async def test_rfc9449_5_a_keys_refresh_with_a_proof_binds_the_new_access_token(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(database_url, client_credentials_refresh_tokens=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    key = (await create_key(make_client(build_admin_app(state)), scopes=["read"]))["key"]
    first = (await dpop_token(public, key)).json()

    refreshed = await public.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(key, ""),
        headers={"DPoP": proof()},
    )
    # The key's refresh token is bound by its client authentication, not by a DPoP key.
    unbound = await public.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
        auth=(key, ""),
    )

    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["token_type"] == "DPoP"
    assert claims(refreshed.json()["access_token"])["cnf"]["jkt"] == thumbprint(DEVICE)
    assert unbound.status_code == 200, unbound.text
    assert unbound.json()["token_type"] == "Bearer"


# -- §4.3: every check refuses with invalid_dpop_proof ---------------------------------------


async def test_rfc9449_4_3_two_dpop_headers_are_refused(
    public: httpx.AsyncClient, key: str
) -> None:
    response = await public.post(
        "/v1/token",
        data={"grant_type": "client_credentials"},
        auth=(key, ""),
        headers=[("DPoP", proof()), ("DPoP", proof())],
    )
    assert_dpop_error(response)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        pytest.param({"method": "GET"}, "htm", id="wrong-htm"),
        pytest.param({"url": "https://kt.test/v1/revoke"}, "htu", id="wrong-htu-path"),
        pytest.param({"url": "https://evil.test/v1/token"}, "htu", id="wrong-htu-host"),
        pytest.param({"now": NOW - 200}, "too old", id="stale-iat"),
        pytest.param({"now": NOW + 200}, "future", id="future-iat"),
    ],
)
async def test_rfc9449_4_3_attack_proof_for_another_request_or_time(
    public: httpx.AsyncClient, key: str, changes: dict[str, Any], why: str
) -> None:
    response = await dpop_token(public, key, proof(**changes))

    assert_dpop_error(response)
    assert why in response.json()["error_description"]


def _segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def _claims() -> dict[str, Any]:
    return {"jti": "j-1", "htm": "POST", "htu": TOKEN_URL, "iat": NOW}


async def test_rfc9449_4_3_attack_a_proof_carrying_a_private_key(
    public: httpx.AsyncClient, key: str
) -> None:
    private = {**proof_jwk(DEVICE), "d": "AAAA"}
    signed = forge({"typ": "dpop+jwt", "alg": "ES256", "jwk": private}, _claims(), key=DEVICE)

    response = await dpop_token(public, key, signed)

    assert_dpop_error(response)
    assert "public key" in response.json()["error_description"]


async def test_rfc9449_4_3_attack_alg_none_and_hs256_with_the_public_key_as_secret(
    public: httpx.AsyncClient, key: str
) -> None:
    jwk = proof_jwk(DEVICE)
    unsigned = forge({"typ": "dpop+jwt", "alg": "none", "jwk": jwk}, _claims())
    head = _segment({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk})
    body = _segment(_claims())
    secret = json.dumps(jwk).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    hs256 = f"{head}.{body}.{b64(mac)}"

    for forged in (unsigned, hs256, f"{head}.{body}."):
        assert_dpop_error(await dpop_token(public, key, forged))


async def test_rfc9449_4_3_a_signature_by_another_key_than_the_jwk_is_refused(
    public: httpx.AsyncClient, key: str
) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": proof_jwk(DEVICE)}
    other = forge(header, _claims(), key=DEVICE.generate("ES256"))

    assert_dpop_error(await dpop_token(public, key, other))


async def test_rfc9449_4_3_a_proof_that_is_not_a_jwt_is_refused(
    public: httpx.AsyncClient, key: str
) -> None:
    for garbage in ("x", "a.b.c", base64.urlsafe_b64encode(b"{}").decode()):
        assert_dpop_error(await dpop_token(public, key, garbage))


# -- §11.1: single use ------------------------------------------------------------------------


async def test_rfc9449_11_1_attack_a_replayed_proof_is_refused(
    public: httpx.AsyncClient, key: str
) -> None:
    once = proof()
    assert (await dpop_token(public, key, once)).status_code == 200

    replayed = await dpop_token(public, key, once)

    assert_dpop_error(replayed)
    assert "used before" in replayed.json()["error_description"]


async def test_rfc9449_11_1_attack_a_proof_replayed_across_two_instances_on_one_database(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    first = await open_state(database_url)
    second = await open_state(database_url)
    key = (await create_key(make_client(build_admin_app(first))))["key"]
    once = proof()

    one = await dpop_token(make_client(build_public_app(first), peer=REMOTE), key, once)
    two = await dpop_token(make_client(build_public_app(second), peer=REMOTE), key, once)

    assert one.status_code == 200, one.text
    assert_dpop_error(two)


# -- requiring DPoP --------------------------------------------------------------------------


async def test_dpop_required_by_the_deployment_refuses_a_token_request_without_a_proof(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, dpop_required=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    key = (await create_key(make_client(build_admin_app(state))))["key"]

    refused = await dpop_token(public, key)
    legacy = await public.post("/authenticate", json={"key": key})
    bound = await dpop_token(public, key, proof())

    assert_dpop_error(refused)
    assert "requires a DPoP proof" in refused.json()["error_description"]
    assert legacy.status_code >= 400  # the legacy route cannot carry a proof
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"


async def test_dpop_required_by_a_key_refuses_its_token_requests_without_a_proof(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, key: str
) -> None:
    created = await create_key(admin, dpop_required=True)
    strict = created["key"]
    audit = await admin.get(
        "/v1/admin/audit", params={"action": "key.created", "target_id": created["record"]["id"]}
    )

    assert created["record"]["dpop_required"] is True
    assert audit.json()["events"][0]["detail"]["dpop_required"] is True
    assert_dpop_error(await dpop_token(public, strict))
    assert (await dpop_token(public, strict, proof())).json()["token_type"] == "DPoP"
    assert (await dpop_token(public, key)).status_code == 200  # other keys are unaffected


async def test_dpop_required_by_a_key_also_holds_for_its_refresh_token(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, client_credentials_refresh_tokens=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    strict = (await create_key(make_client(build_admin_app(state)), dpop_required=True))["key"]
    refresh_token = (await dpop_token(public, strict, proof())).json()["refresh_token"]

    def refresh(dpop: str | None) -> Any:
        headers = {} if dpop is None else {"DPoP": dpop}
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return public.post("/v1/token", data=data, auth=(strict, ""), headers=headers)

    refused = await refresh(None)
    bound = await refresh(proof())

    assert_dpop_error(refused)
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"


async def test_dpop_required_must_be_a_boolean_in_the_admin_api(
    admin: httpx.AsyncClient,
) -> None:
    response = await admin.post("/v1/admin/keys", json={"dpop_required": "yes"})
    assert response.status_code == 400
    assert "dpop_required" in response.text


# -- §8: server nonces ------------------------------------------------------------------------


async def test_rfc9449_8_a_server_nonce_is_demanded_then_accepted(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(database_url, dpop_nonce=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    key = (await create_key(make_client(build_admin_app(state))))["key"]

    first = await dpop_token(public, key, proof())
    nonce = first.headers["DPoP-Nonce"]
    retried = await dpop_token(public, key, proof(nonce=nonce))
    wrong = await dpop_token(public, key, proof(nonce="not-the-servers"))

    assert_dpop_error(first, "use_dpop_nonce")
    assert retried.status_code == 200, retried.text
    assert retried.json()["token_type"] == "DPoP"
    assert retried.headers["DPoP-Nonce"]  # every answer carries a fresh one
    assert_dpop_error(wrong, "use_dpop_nonce")
    assert wrong.headers["DPoP-Nonce"] == nonce


async def test_rfc9449_8_a_nonce_from_one_instance_is_accepted_by_another(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    first = await open_state(sqlite_database_url, dpop_nonce=True)
    second = await open_state(sqlite_database_url, dpop_nonce=True)
    key = (await create_key(make_client(build_admin_app(first))))["key"]
    one = make_client(build_public_app(first), peer=REMOTE)
    two = make_client(build_public_app(second), peer=REMOTE)

    nonce = (await dpop_token(one, key, proof())).headers["DPoP-Nonce"]
    response = await dpop_token(two, key, proof(nonce=nonce))

    assert response.status_code == 200, response.text


async def test_rfc9449_8_a_nonce_expires_after_two_windows(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient, clock: FakeClock
) -> None:
    state = await open_state(sqlite_database_url, dpop_nonce=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    key = (await create_key(make_client(build_admin_app(state))))["key"]
    nonce = (await dpop_token(public, key, proof())).headers["DPoP-Nonce"]

    clock.advance(minutes=5)
    still = await dpop_token(public, key, proof(nonce=nonce, now=NOW + 300))
    clock.advance(minutes=5)
    stale = await dpop_token(public, key, proof(nonce=nonce, now=NOW + 600))

    assert still.status_code == 200, still.text
    assert_dpop_error(stale, "use_dpop_nonce")
    assert stale.headers["DPoP-Nonce"] != nonce


async def test_rfc9449_8_without_the_setting_no_nonce_is_asked_or_sent(
    public: httpx.AsyncClient, key: str, state: KeyturnState
) -> None:
    response = await dpop_token(public, key, proof(nonce="anything"))

    assert response.status_code == 200, response.text
    assert "DPoP-Nonce" not in response.headers
    assert state.service.dpop.nonce() is None


def test_rfc9449_8_a_nonce_that_is_not_ascii_is_refused_not_a_crash() -> None:
    nonces = DPoPNonces(b"k" * 32)

    assert nonces.accepts(nonces.issue(NOW), NOW)
    assert not nonces.accepts("\ud800", NOW)
    assert not nonces.accepts("é" * 24, NOW)


async def test_rfc9449_8_a_proof_with_a_lone_surrogate_nonce_gets_use_dpop_nonce(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, dpop_nonce=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    key = (await create_key(make_client(build_admin_app(state))))["key"]
    claims_ = {**_claims(), "nonce": "\ud800"}
    payload = b64(json.dumps(claims_).encode())  # ASCII JSON with a \ud800 escape
    header = _segment({"typ": "dpop+jwt", "alg": "ES256", "jwk": proof_jwk(DEVICE)})
    signing_input = f"{header}.{payload}"
    signed = f"{signing_input}.{b64(DEVICE.sign(signing_input.encode()))}"

    assert_dpop_error(await dpop_token(public, key, signed), "use_dpop_nonce")
