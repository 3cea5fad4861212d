"""``/v1/ext_authz/{path}``: Envoy's ext_authz HTTP service (issue 17), on SQLite and PostgreSQL.

Each test sends exactly what Envoy sends for a client's request with
``path_prefix: /v1/ext_authz`` (deploy/envoy/envoy-ext-authz.yaml): the client's method,
the prefix + the client's path and query, the allowed headers (``authorization``,
``dpop``, ``host``, ``x-forwarded-proto``), the ``x-keyturn-scope`` the route adds, and
``content-length: 0``. The answers are /v1/validate's: the same function makes them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyturn.errors import StorageUnavailableError
from keyturn.server import KeyturnState
from keyturn.server.gateway.endpoints import ExtAuthzEndpoint

from .conftest import bearer, create_key
from .dpop_helpers import OTHER_DEVICE, claims, dpop_token, proof
from .test_v1_dpop_validate import assert_dpop_challenge

#: The client's request Envoy asks about.
HOST = "api.example"
PATH = "/orders/7"
QUERY = "page=2"
URL = f"https://{HOST}{PATH}"


def envoy_check(
    public: httpx.AsyncClient,
    method: str,
    credential: dict[str, str],
    *,
    scope: str | None = None,
    proto: str = "https",
) -> Any:
    """The check request Envoy's ext_authz filter sends for ``method`` ``URL?QUERY``."""
    headers = {
        "host": HOST,
        "x-forwarded-proto": proto,
        "content-length": "0",
        **credential,
    }
    if scope is not None:
        headers["x-keyturn-scope"] = scope
    return public.request(method, f"/v1/ext_authz{PATH}?{QUERY}", headers=headers)


def dpop(token: str, method: str = "POST", url: str = URL, **extra: Any) -> dict[str, str]:
    """The client's DPoP credential for ``method`` ``url`` (what Envoy passes on)."""
    return {
        "authorization": f"DPoP {token}",
        "dpop": proof(method=method, url=url, access_token=token, **extra),
    }


@pytest.fixture
async def plain(public: httpx.AsyncClient, admin: httpx.AsyncClient) -> str:
    """An unbound access token with scope ``read``."""
    key = (await create_key(admin, scopes=["read"]))["key"]
    token: str = (await dpop_token(public, key)).json()["access_token"]
    return token


@pytest.fixture
async def bound(public: httpx.AsyncClient, admin: httpx.AsyncClient) -> str:
    """A DPoP-bound access token (to the helpers' DEVICE) with scope ``read``."""
    key = (await create_key(admin, scopes=["read"]))["key"]
    response = await dpop_token(public, key, proof())
    assert response.json()["token_type"] == "DPoP"
    token: str = response.json()["access_token"]
    return token


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_ext_authz_accepts_a_bearer_token_with_the_identity_headers(
    public: httpx.AsyncClient, plain: str, method: str
) -> None:
    response = await envoy_check(public, method, bearer(plain), scope="read")

    assert response.status_code == 200, response.text
    assert response.headers["x-keyturn-token-id"] == claims(plain)["jti"]
    assert response.headers["x-keyturn-scope"] == "read"
    assert response.content == b""


async def test_ext_authz_refuses_a_missing_or_bad_bearer_token_with_a_challenge(
    public: httpx.AsyncClient, plain: str
) -> None:
    missing = await envoy_check(public, "GET", {})
    forged = await envoy_check(public, "GET", bearer(plain[:-4] + "AAAA"))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_rfc9449_7_1_ext_authz_accepts_a_bound_token_with_its_proof(
    public: httpx.AsyncClient, bound: str, method: str
) -> None:
    response = await envoy_check(public, method, dpop(bound, method))

    assert response.status_code == 200, response.text
    assert response.headers["x-keyturn-token-id"] == claims(bound)["jti"]


async def test_rfc9449_7_1_ext_authz_builds_the_url_from_host_and_proto(
    public: httpx.AsyncClient, bound: str
) -> None:
    """No X-Forwarded-Proto is http; the proof names the client's URL, not Keyturn's."""
    as_http = await envoy_check(public, "GET", dpop(bound, "GET", f"http://{HOST}{PATH}"), proto="")
    keyturn_url = await envoy_check(
        public, "GET", dpop(bound, "GET", f"https://{HOST}/v1/ext_authz{PATH}")
    )

    assert as_http.status_code == 200, as_http.text
    assert_dpop_challenge(keyturn_url)


async def test_rfc9449_7_1_attack_ext_authz_refuses_a_bound_token_sent_as_bearer(
    public: httpx.AsyncClient, bound: str
) -> None:
    assert_dpop_challenge(await envoy_check(public, "GET", bearer(bound)))


async def test_rfc9449_11_1_attack_ext_authz_refuses_a_replayed_proof(
    public: httpx.AsyncClient, bound: str
) -> None:
    credential = dpop(bound, "GET")
    assert (await envoy_check(public, "GET", credential)).status_code == 200

    assert_dpop_challenge(await envoy_check(public, "GET", credential))


@pytest.mark.parametrize(
    ("method", "url"),
    [
        pytest.param("POST", URL, id="wrong-method"),
        pytest.param("GET", f"https://{HOST}/admin", id="wrong-path"),
        pytest.param("GET", f"https://evil.example{PATH}", id="wrong-host"),
        pytest.param("GET", f"http://{HOST}{PATH}", id="wrong-scheme"),
    ],
)
async def test_rfc9449_7_1_attack_ext_authz_refuses_a_proof_for_another_request(
    public: httpx.AsyncClient, bound: str, method: str, url: str
) -> None:
    assert_dpop_challenge(await envoy_check(public, "GET", dpop(bound, method, url)))


async def test_rfc9449_7_1_attack_ext_authz_refuses_a_proof_of_another_key(
    public: httpx.AsyncClient, bound: str
) -> None:
    credential = {
        "authorization": f"DPoP {bound}",
        "dpop": proof(OTHER_DEVICE, method="GET", url=URL, access_token=bound),
    }
    assert_dpop_challenge(await envoy_check(public, "GET", credential))


async def test_ext_authz_insufficient_scope_is_403_in_either_scheme(
    public: httpx.AsyncClient, plain: str, bound: str
) -> None:
    as_bearer = await envoy_check(public, "GET", bearer(plain), scope="read write")
    as_dpop = await envoy_check(public, "GET", dpop(bound, "GET"), scope="write")

    assert as_bearer.status_code == 403
    assert as_bearer.headers["www-authenticate"].startswith("Bearer")
    assert 'error="insufficient_scope"' in as_bearer.headers["www-authenticate"]
    assert as_dpop.status_code == 403
    assert as_dpop.headers["www-authenticate"].startswith("DPoP ")
    assert 'error="insufficient_scope"' in as_dpop.headers["www-authenticate"]


async def test_ext_authz_a_malformed_required_scope_is_refused(
    public: httpx.AsyncClient, plain: str
) -> None:
    response = await envoy_check(public, "GET", bearer(plain), scope='read "x"')

    assert response.status_code == 401  # as /v1/validate's ?scope=: the gateway is wrong
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_ext_authz_a_revoked_key_is_refused_at_once(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    created = await create_key(admin, scopes=["read"])
    token = (await dpop_token(public, created["key"])).json()["access_token"]
    assert (await envoy_check(public, "GET", bearer(token))).status_code == 200

    revoked = await admin.post(f"/v1/admin/keys/{created['record']['id']}/revoke", json={})
    assert revoked.status_code in (200, 204), revoked.text

    refused = await envoy_check(public, "GET", bearer(token))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


async def test_ext_authz_storage_down_is_503_with_retry_after_never_401(
    public: httpx.AsyncClient, state: KeyturnState, bound: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proof's jti cannot be claimed (the replay store is down): retry, not refused."""

    async def down(*args: Any, **kwargs: Any) -> bool:
        raise StorageUnavailableError("database unreachable", retry_after=3)

    monkeypatch.setattr(state.service.dpop._replays, "claim", down)
    response = await envoy_check(public, "GET", dpop(bound, "GET"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "www-authenticate" not in response.headers


def test_ext_authz_original_url_keeps_the_clients_encoding_and_query() -> None:
    endpoint = ExtAuthzEndpoint("/auth")
    scope = {
        "path": "/auth/v1/ext_authz/a b/%2F",
        "raw_path": b"/auth/v1/ext_authz/a%20b/%2F",
        "query_string": b"x=1",
        "headers": [(b"host", b"api.example:8443"), (b"x-forwarded-proto", b"HTTPS, http")],
    }

    assert endpoint.original_url(scope) == "https://api.example:8443/a%20b/%2F?x=1"
