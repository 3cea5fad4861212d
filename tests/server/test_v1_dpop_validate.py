"""DPoP-bound tokens where tokens are checked, and bound refresh tokens (RFC 9449 §5-§7).

``GET /v1/validate`` checks the proof of the request a gateway asks about (nginx's
``X-Original-*``, Traefik's and Envoy's ``X-Forwarded-*``); the routes that cannot check a
proof refuse a bound token; introspection reports ``cnf``; a login's refresh-token family
is bound to the proof's key. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyturn.core.passwords import PasswordHasher
from keyturn.server import KeyturnState
from keyturn.testing import FakeClock

from .conftest import MakeClient, bearer, create_key, make_settings
from .dpop_helpers import (
    DEVICE,
    LOGIN_URL,
    NOW,
    OTHER_DEVICE,
    RESOURCE,
    claims,
    dpop_headers,
    dpop_token,
    proof,
    thumbprint,
)
from .test_login import FAST, PASSWORD, clients, create_user


@pytest.fixture
async def bound(public: httpx.AsyncClient, admin: httpx.AsyncClient) -> str:
    """A DPoP-bound access token (to `DEVICE`) with scope ``read``."""
    key = (await create_key(admin, scopes=["read"]))["key"]
    response = await dpop_token(public, key, proof())
    assert response.json()["token_type"] == "DPoP"
    token: str = response.json()["access_token"]
    return token


def assert_dpop_challenge(response: httpx.Response, error: str = "invalid_dpop_proof") -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ")
    assert f'error="{error}"' in challenge
    assert 'algs="ES256 RS256 EdDSA"' in challenge


# -- §7.1: /v1/validate -----------------------------------------------------------------------


async def test_rfc9449_7_1_validate_accepts_a_bound_token_with_its_proof(
    public: httpx.AsyncClient, bound: str
) -> None:
    response = await public.get("/v1/validate", headers=dpop_headers(bound))

    assert response.status_code == 200, response.text
    assert response.headers["X-Keyturn-Scope"] == "read"
    assert response.headers["X-Keyturn-Token-Id"] == claims(bound)["jti"]


async def test_rfc9449_7_1_validate_takes_traefik_and_envoy_forwarded_headers(
    public: httpx.AsyncClient, bound: str
) -> None:
    headers = {
        "Authorization": f"DPoP {bound}",
        "DPoP": proof(method="DELETE", url=RESOURCE, access_token=bound),
        "X-Forwarded-Method": "DELETE",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example",
        "X-Forwarded-Uri": "/orders?id=7",
    }
    response = await public.get("/v1/validate", headers=headers)

    assert response.status_code == 200, response.text


async def test_rfc9449_7_1_validate_takes_nginx_original_uri_with_forwarded_host(
    public: httpx.AsyncClient, bound: str
) -> None:
    headers = {
        "Authorization": f"DPoP {bound}",
        "DPoP": proof(method="GET", url=RESOURCE, access_token=bound),
        "X-Original-Method": "GET",
        "X-Original-URI": "/orders",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example",
    }
    assert (await public.get("/v1/validate", headers=headers)).status_code == 200


async def test_rfc9449_7_1_attack_a_bound_token_sent_as_bearer_is_refused(
    public: httpx.AsyncClient, bound: str
) -> None:
    plain = await public.get("/v1/validate", headers=bearer(bound))
    with_proof = await public.get("/v1/validate", headers={**dpop_headers(bound), **bearer(bound)})

    assert_dpop_challenge(plain)
    assert_dpop_challenge(with_proof)


async def test_rfc9449_7_1_attack_a_proof_signed_by_another_key_than_cnf_jkt(
    public: httpx.AsyncClient, bound: str
) -> None:
    response = await public.get("/v1/validate", headers=dpop_headers(bound, OTHER_DEVICE))

    assert_dpop_challenge(response)
    assert "another key" in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"method": "POST"}, id="wrong-htm"),
        pytest.param({"url": "https://api.example/admin"}, id="wrong-htu"),
        pytest.param({"now": NOW - 300}, id="stale-iat"),
    ],
)
async def test_rfc9449_7_1_attack_a_proof_for_another_request(
    public: httpx.AsyncClient, bound: str, changes: dict[str, Any]
) -> None:
    headers = dpop_headers(bound)
    headers["DPoP"] = proof(access_token=bound, **{"method": "GET", "url": RESOURCE, **changes})

    assert_dpop_challenge(await public.get("/v1/validate", headers=headers))


async def test_rfc9449_7_1_the_proof_must_carry_the_tokens_ath(
    public: httpx.AsyncClient, bound: str
) -> None:
    headers = dpop_headers(bound)
    headers["DPoP"] = proof(method="GET", url=RESOURCE)  # no ath
    other = dpop_headers(bound)
    other["DPoP"] = proof(method="GET", url=RESOURCE, access_token="another.token.value")

    assert_dpop_challenge(await public.get("/v1/validate", headers=headers))
    assert_dpop_challenge(await public.get("/v1/validate", headers=other))


async def test_rfc9449_11_1_attack_a_replayed_proof_at_validate(
    public: httpx.AsyncClient, bound: str
) -> None:
    headers = dpop_headers(bound)
    assert (await public.get("/v1/validate", headers=headers)).status_code == 200

    assert_dpop_challenge(await public.get("/v1/validate", headers=headers))


async def test_rfc9449_7_1_a_bound_token_without_a_proof_or_without_the_original_request(
    public: httpx.AsyncClient, bound: str
) -> None:
    no_proof = {"Authorization": f"DPoP {bound}", "X-Original-Method": "GET"}
    no_original = {"Authorization": f"DPoP {bound}", "DPoP": dpop_headers(bound)["DPoP"]}

    assert_dpop_challenge(await public.get("/v1/validate", headers=no_proof))
    refused = await public.get("/v1/validate", headers=no_original)
    assert_dpop_challenge(refused)
    assert "original method" in refused.headers["www-authenticate"]


async def test_rfc9449_7_1_a_bearer_token_sent_as_dpop_is_refused_and_as_bearer_accepted(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    key = (await create_key(admin, scopes=["read"]))["key"]
    token = (await dpop_token(public, key)).json()["access_token"]

    as_dpop = await public.get("/v1/validate", headers=dpop_headers(token))
    as_bearer = await public.get("/v1/validate", headers=bearer(token))
    as_bearer_with_proof = await public.get(
        "/v1/validate", headers={**bearer(token), "DPoP": dpop_headers(token)["DPoP"]}
    )

    assert_dpop_challenge(as_dpop)
    assert as_bearer.status_code == 200
    assert as_bearer_with_proof.status_code == 200


async def test_rfc9449_7_1_a_missing_scope_is_403_with_the_dpop_challenge(
    public: httpx.AsyncClient, bound: str
) -> None:
    response = await public.get("/v1/validate?scope=write", headers=dpop_headers(bound))

    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith("DPoP ")
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_rfc9449_7_1_no_credential_at_all_gets_a_bare_dpop_challenge(
    public: httpx.AsyncClient,
) -> None:
    response = await public.get("/v1/validate", headers={"DPoP": proof(method="GET")})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("DPoP ")
    assert "error=" not in response.headers["www-authenticate"]


# -- the routes that cannot check a proof; introspection (§6.2) ------------------------------


async def test_rfc9449_7_1_routes_without_a_proof_refuse_a_bound_token(
    public: httpx.AsyncClient, bound: str
) -> None:
    validate_request = await public.get("/validate_request", headers=bearer(bound))
    legacy = await public.post("/validate", json={"jwt": bound})

    assert validate_request.status_code == 401
    assert 'error="invalid_dpop_proof"' in validate_request.headers["www-authenticate"]
    assert legacy.status_code == 401


async def test_rfc9449_6_2_introspection_reports_cnf_and_the_dpop_token_type(
    admin: httpx.AsyncClient, bound: str
) -> None:
    response = await admin.post("/v1/introspect", data={"token": bound})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["active"] is True
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": thumbprint(DEVICE)}


# -- §5: a login's refresh-token family is bound ---------------------------------------------


@pytest.fixture
async def login_clients(
    tmp_path: Path, clock: FakeClock, database_url: str, make_client: MakeClient
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The public and admin clients of a state with a user (cheap argon2)."""
    settings = make_settings(database_url, tmp_path)
    state = await KeyturnState.open(
        settings, background=False, clock=clock, password_hasher=PasswordHasher(FAST)
    )
    try:
        public, admin = clients(state, make_client)
        await create_user(admin, "alice@example.com")
        yield public, admin
    finally:
        await state.close()


async def _login(public: httpx.AsyncClient, dpop: str | None) -> httpx.Response:
    return await public.post(
        "/v1/login",
        data={"email": "alice@example.com", "password": PASSWORD},
        headers={} if dpop is None else {"DPoP": dpop},
    )


async def _refresh(public: httpx.AsyncClient, token: str, dpop: str | None) -> httpx.Response:
    return await public.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={} if dpop is None else {"DPoP": dpop},
    )


async def test_rfc9449_5_a_login_with_a_proof_binds_the_access_and_refresh_tokens(
    login_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    public, _ = login_clients
    logged_in = await _login(public, proof(url=LOGIN_URL))
    refresh_token = logged_in.json()["refresh_token"]

    no_proof = await _refresh(public, refresh_token, None)
    other_key = await _refresh(public, refresh_token, proof(OTHER_DEVICE))
    same_key = await _refresh(public, refresh_token, proof())
    successor = same_key.json()["refresh_token"]
    successor_without = await _refresh(public, successor, None)

    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["token_type"] == "DPoP"
    assert claims(logged_in.json()["access_token"])["cnf"] == {"jkt": thumbprint(DEVICE)}
    assert (no_proof.status_code, no_proof.json()["error"]) == (400, "invalid_dpop_proof")
    assert (other_key.status_code, other_key.json()["error"]) == (400, "invalid_grant")
    assert same_key.status_code == 200, same_key.text
    assert same_key.json()["token_type"] == "DPoP"
    # The rotated successor stays bound to the same key.
    assert successor_without.json()["error"] == "invalid_dpop_proof"


async def test_rfc9449_5_an_unbound_login_family_is_bound_by_its_first_proof(
    login_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    public, _ = login_clients
    logged_in = await _login(public, None)

    bound_now = await _refresh(public, logged_in.json()["refresh_token"], proof())
    afterwards = await _refresh(public, bound_now.json()["refresh_token"], None)

    assert logged_in.json()["token_type"] == "Bearer"
    assert bound_now.json()["token_type"] == "DPoP"
    assert afterwards.json()["error"] == "invalid_dpop_proof"


async def test_rfc9449_5_a_login_proof_must_name_the_login_endpoint(
    login_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    public, _ = login_clients
    response = await _login(public, proof())  # htu is /v1/token

    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
