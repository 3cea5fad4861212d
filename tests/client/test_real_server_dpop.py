"""The client's DPoP (RFC 9449) against a real ``keyturn serve`` that demands nonces.

``/v1/validate`` stands for a protected service behind a gateway: the client sends the
gateway's ``X-Original-Method`` and ``X-Original-URL`` with each request, naming the
request itself, so the proof the client made for it is the one Keyturn checks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keyturn.client import AsyncClient, Client, KeyturnAuth, TokenEndpointError
from keyturn.core.dpop import verify_dpop_proof
from keyturn.core.signing import SigningKey
from tests.serve_fixtures import KeyturnServer

from .test_real_server import create_key, device_key, issuer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyturnServer]:
    """One server for the module with server nonces on (RFC 9449 §8)."""
    base = tmp_path_factory.mktemp("keyturn-dpop")
    server = KeyturnServer.start(
        base / "data", base / "keyturn.log", env={"KEYTURN_DPOP_NONCE": "true"}
    )
    try:
        yield server
    finally:
        stopped = server.stop()
        server.kill()
    assert stopped == 0
    assert "Traceback" not in server.log()


class Recording(httpx.HTTPTransport):
    """A real transport that notes the status of each token-endpoint answer."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


def as_gateway(url: str, method: str = "GET") -> dict[str, str]:
    """What nginx's auth_request passes /v1/validate about the original request."""
    return {"X-Original-Method": method, "X-Original-URL": url}


def test_rfc9449_a_device_gets_a_bound_token_and_proves_every_request(
    server: KeyturnServer,
) -> None:
    """private_key_jwt + DPoP: the nonce Keyturn demands is retried once, the token is
    bound (``token_type`` DPoP), and every request carries a fresh proof Keyturn accepts."""
    device, dpop = SigningKey.generate("ES256"), SigningKey.generate("EdDSA")
    key_id = device_key(server, device)
    validate = f"{server.public}/v1/validate"
    proofs: list[str] = []
    token_endpoint = Recording()
    auth = KeyturnAuth(
        server.public,
        client_id=key_id,
        private_key=device,
        audience=issuer(server),
        dpop=dpop,
        transport=token_endpoint,
    )
    hooks = {"request": [lambda request: proofs.append(request.headers["DPoP"])]}

    with httpx.Client(auth=auth, event_hooks=hooks, timeout=10) as http:
        first = http.get(validate, headers=as_gateway(validate))
        second = http.get(validate, headers=as_gateway(validate))
    token = auth.sync_access_token()
    token_endpoint.close()

    assert token_endpoint.statuses == [400, 200]  # use_dpop_nonce, then the retry with it
    assert (first.status_code, second.status_code) == (200, 200), first.headers
    assert len(set(proofs)) == len(proofs) == 2  # a fresh proof each time
    checked = verify_dpop_proof(
        proofs[0], method="GET", url=validate, now=int(time.time()), leeway=60, access_token=token
    )
    assert checked.jkt == dpop.kid
    as_bearer = httpx.get(validate, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert as_bearer.status_code == 401  # RFC 9449 §7.1: no downgrade to Bearer
    replayed = httpx.get(
        validate,
        headers={"Authorization": f"DPoP {token}", "DPoP": proofs[0], **as_gateway(validate)},
        timeout=10,
    )
    assert replayed.status_code == 401  # the proof's jti is spent
    assert 'error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]


async def test_rfc9449_an_api_key_client_with_an_in_memory_dpop_key(
    server: KeyturnServer,
) -> None:
    """``dpop=True`` with an API key: the token is bound to a key made in memory."""
    created: dict[str, Any] = create_key(server, scopes=["read"])
    validate = f"{server.public}/v1/validate"

    async with AsyncClient(server.public, api_key=created["key"], dpop=True) as client:
        response = await client.get(validate, headers=as_gateway(validate))
        token = await client.access_token()

    assert response.status_code == 200, response.headers
    as_bearer = httpx.get(validate, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert as_bearer.status_code == 401  # bound: useless without the key


def test_a_key_that_requires_dpop_works_only_with_dpop(server: KeyturnServer) -> None:
    """A per-key ``dpop_required``: without ``dpop`` the error says to turn it on."""
    created: dict[str, Any] = create_key(server, scopes=["read"], dpop_required=True)

    with pytest.raises(TokenEndpointError) as refused:
        Client(server.public, api_key=created["key"]).access_token()
    with Client(server.public, api_key=created["key"], dpop=True) as client:
        token = client.access_token()

    assert (refused.value.status_code, refused.value.error_code) == (400, "invalid_dpop_proof")
    assert "(dpop=True)" in str(refused.value)
    assert token
