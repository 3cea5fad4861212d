"""``deploy/nginx/keyturn.conf`` run by a real nginx in front of a real Keyturn.

One nginx (the shipped file, only its addresses replaced), one ``keyturn serve`` and one
upstream that echoes the headers it received. The test proves what the file promises:
valid tokens pass with Keyturn's identity headers, bad tokens get 401 with a challenge,
a missing scope gets 403, and headers a client forges never reach the application. A
DPoP-bound token (RFC 9449) reaches the application only with a valid proof for the
request nginx received: without one, as Bearer, replayed, for another URL or by another
key it gets 401 with Keyturn's DPoP challenge.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyturn.client import KeyturnAuth
from keyturn.config import Settings
from keyturn.core.dpop import create_dpop_proof
from keyturn.core.signing import SigningKey, jwk_thumbprint
from keyturn.core.tokens import issue_access_token, peek_unverified_claims
from keyturn.integrations.starlette import authentication_middleware
from keyturn.server.state import KeyturnState
from keyturn.server.v1 import IDENTITY_HEADERS, METADATA_PATH
from keyturn.service import utc_now
from keyturn.testing import FakeClock
from keyturn.verify import InvalidDPoPProofError, JWKSVerifier, RemoteVerifier
from keyturn.verify._remote import ORIGINAL_METHOD_HEADER, ORIGINAL_URL_HEADER
from tests.deploy.conftest import DEPLOY, NginxGateway, Upstream
from tests.serve_fixtures import KeyturnServer

SITE = (DEPLOY / "nginx" / "keyturn.conf").read_text()
IDENTIFIER = "svc-orders"
#: Every identity header, as a client trying to pass as someone else would send it.
FORGED = {name: f"forged-{field}" for field, name in IDENTITY_HEADERS.items()}


@dataclass
class Stack:
    """nginx in front of the echo upstream, checking tokens with Keyturn."""

    gateway: NginxGateway
    keyturn: KeyturnServer
    key: str

    def token(self, scope: str | None = None) -> str:
        """An access token for the stack's key, fetched through nginx."""
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        response = httpx.post(
            f"{self.gateway.url}/v1/token", data=data, auth=(self.key, ""), timeout=10
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.get(f"{self.gateway.url}{path}", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    echo_upstream: Upstream,
    nginx_gateway: Callable[..., NginxGateway],
) -> Iterator[Stack]:
    """One stack for the module: starting nginx and Keyturn per test would cost seconds."""
    home = tmp_path_factory.mktemp("keyturn")
    server = KeyturnServer.start(
        home / "data", home / "keyturn.log", env={"KEYTURN_RATE_LIMIT_ENABLED": "false"}
    )
    created = httpx.post(
        f"{server.admin}/v1/admin/keys",
        json={"identifier": IDENTIFIER, "scopes": ["orders:read", "orders:write"]},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    gateway = nginx_gateway(keyturn=f"127.0.0.1:{server.public_port}", app=echo_upstream.address)
    try:
        yield Stack(gateway=gateway, keyturn=server, key=created.json()["key"])
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()
    complaints = re.findall(r"\[(?:warn|error|crit|alert|emerg)\].*", gateway.error_log())
    assert complaints == []


def received(response: httpx.Response) -> dict[str, list[str]]:
    """The headers the upstream saw (the echo upstream's answer)."""
    assert response.status_code == 200, (response.status_code, response.text)
    headers: dict[str, list[str]] = response.json()["headers"]
    return headers


def keyturn_headers(seen: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: values for name, values in seen.items() if name.startswith("x-keyturn-")}


def expired_token(data_dir: Path, key: str) -> str:
    """A token signed with the server's own key, but issued an hour ago.

    Issued in-process by a service on the server's own database and secrets whose clock
    stands an hour back, so only the time claims differ from a fresh token.
    """

    async def issue() -> str:
        clock = FakeClock(utc_now() - timedelta(hours=1))
        settings = Settings(data_dir=data_dir)
        state = await KeyturnState.open(settings, background=False, clock=clock)
        try:
            pair = await state.service.authenticate(key, scopes=["orders:read"])
            return pair.access.token
        finally:
            await state.close()

    return asyncio.run(issue())


def tampered_token(valid: str) -> str:
    """``valid`` with its payload changed to claim a scope, the signature left as it was."""
    header, payload, signature = valid.split(".")
    claims = peek_unverified_claims(valid)[1] | {"scope": "orders:read orders:write admin"}
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert encoded != payload
    return f"{header}.{encoded}.{signature}"


def foreign_token(valid: str) -> str:
    """The claims of ``valid``, signed by a key Keyturn never published."""
    claims = peek_unverified_claims(valid)[1]
    return issue_access_token(
        SigningKey.generate("ES256"),
        issuer=claims["iss"],
        audience=claims["aud"],
        subject=claims["sub"],
        client_id=claims["client_id"],
        now=claims["iat"],
        lifetime=claims["exp"] - claims["iat"],
        scopes=claims["scope"].split(),
        identifier=claims.get("identifier"),
    ).token


def test_a_valid_token_reaches_the_upstream_with_the_identity_headers(stack: Stack) -> None:
    token = stack.token("orders:read")
    claims = peek_unverified_claims(token)[1]

    seen = received(stack.get("/anything?x=1", token))

    assert keyturn_headers(seen) == {
        "x-keyturn-subject": [claims["sub"]],
        "x-keyturn-client-id": [claims["client_id"]],
        "x-keyturn-scope": ["orders:read"],
        "x-keyturn-identifier": [IDENTIFIER],
        "x-keyturn-token-id": [claims["jti"]],
        "x-keyturn-expires": [str(claims["exp"])],
    }


def test_forged_identity_headers_never_reach_the_upstream(stack: Stack) -> None:
    token = stack.token()
    claims = peek_unverified_claims(token)[1]

    seen = received(stack.get("/anything", token, **FORGED))

    assert seen["x-keyturn-subject"] == [claims["sub"]]
    assert not any("forged" in value for values in seen.values() for value in values)


def test_a_location_that_requires_a_scope_admits_a_token_with_it(stack: Stack) -> None:
    """``location /orders/`` sets ``$keyturn_scope`` to orders:write."""
    seen = received(stack.get("/orders/1", stack.token("orders:read orders:write")))

    assert seen["x-keyturn-scope"] == ["orders:read orders:write"]


def test_a_missing_scope_gets_403_with_keyturns_challenge(stack: Stack) -> None:
    response = stack.get("/orders/1", stack.token("orders:read"), **FORGED)

    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith('Bearer realm="keyturn"')
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="orders:write"' in response.headers["www-authenticate"]
    assert "forged" not in response.text


@pytest.mark.parametrize(
    "kind", ["missing", "garbage", "tampered", "foreign-key", "expired", "revoked"]
)
def test_a_bad_token_gets_401_with_a_challenge_and_never_reaches_the_upstream(
    stack: Stack, kind: str
) -> None:
    token: str | None
    if kind == "missing":
        token = None
    elif kind == "garbage":
        token = "not-a-jwt"
    elif kind == "tampered":
        token = tampered_token(stack.token())
    elif kind == "foreign-key":
        token = foreign_token(stack.token())
    elif kind == "expired":
        token = expired_token(stack.keyturn.data_dir, stack.key)
    else:
        token = stack.token()
        assert stack.get("/anything", token).status_code == 200
        revoked = httpx.post(f"{stack.gateway.url}/v1/revoke", data={"token": token}, timeout=10)
        assert revoked.status_code == 200

    response = stack.get("/anything", token, **FORGED)

    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="keyturn"')
    if kind != "missing":
        assert 'error="invalid_token"' in challenge
    assert "forged" not in response.text  # the upstream's echo never came back


def test_the_legacy_validate_request_route_protects_a_location(stack: Stack) -> None:
    """``/legacy/`` uses JWThenticator's ``/validate_request``: same verdicts, no identity."""
    token = stack.token()

    seen = received(stack.get("/legacy/x", token, **FORGED))
    refused = stack.get("/legacy/x", "not-a-jwt", **FORGED)

    assert keyturn_headers(seen) == {}
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Bearer realm="keyturn"')


def test_keyturn_endpoints_behind_nginx_need_no_token(stack: Stack) -> None:
    jwks = httpx.get(f"{stack.gateway.url}/.well-known/jwks.json", timeout=10)

    assert jwks.status_code == 200
    assert jwks.json() == httpx.get(f"{stack.keyturn.public}/.well-known/jwks.json").json()


def test_the_config_sets_every_identity_header_from_keyturns_answer() -> None:
    """Adding an identity header to the server without the config fails here."""
    forwarded = dict(re.findall(r"proxy_set_header (X-Keyturn-[\w-]+)\s+\$(\w+);", SITE))
    captured = dict(re.findall(r"auth_request_set \$(\w+)\s+\$upstream_http_(\w+);", SITE))

    assert set(forwarded) == set(IDENTITY_HEADERS.values())
    for header, variable in forwarded.items():
        assert captured[variable] == header.lower().replace("-", "_")


def test_the_validation_subrequest_names_the_clients_request_for_dpop() -> None:
    """Keyturn checks a DPoP proof's htm/htu against these (RFC 9449 §4.3); nginx sets them,
    so a client cannot choose them, with the header names `RemoteVerifier` sends too."""
    validate = re.search(r"location = /_keyturn/validate \{(.*?)\n    \}", SITE, re.S)
    assert validate is not None
    headers = dict(re.findall(r"proxy_set_header ([\w-]+)\s+(.+?);", validate.group(1)))

    assert headers[ORIGINAL_METHOD_HEADER] == "$request_method"
    assert headers[ORIGINAL_URL_HEADER] == "$scheme://$http_host$request_uri"
    assert "proxy_pass_request_headers off" not in validate.group(1)  # Authorization, DPoP


# -- DPoP-bound tokens at the gate (RFC 9449 §7.1) --------------------------------------

DEVICE = SigningKey.generate("ES256")


def dpop_bound_token(stack: Stack) -> str:
    """A DPoP-bound token for the stack's key, asked of Keyturn's own listener."""
    url = f"{stack.keyturn.public}/v1/token"
    proof = create_dpop_proof(DEVICE, method="POST", url=url, now=int(time.time()))
    response = httpx.post(
        url,
        data={"grant_type": "client_credentials", "scope": "orders:read"},
        auth=(stack.key, ""),
        headers={"DPoP": proof},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    token: str = response.json()["access_token"]
    assert peek_unverified_claims(token)[1]["cnf"] == {"jkt": DEVICE.kid}
    return token


def dpop_get(
    stack: Stack, path: str, token: str, proof: str | None, scheme: str = "DPoP"
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}", **FORGED}
    if proof is not None:
        headers["DPoP"] = proof
    return httpx.get(f"{stack.gateway.url}{path}", headers=headers, timeout=10)


def request_proof(stack: Stack, token: str, path: str, method: str = "GET") -> str:
    url = f"{stack.gateway.url}{path}"
    return create_dpop_proof(
        DEVICE, method=method, url=url, now=int(time.time()), access_token=token
    )


def assert_dpop_refused(response: httpx.Response) -> None:
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('DPoP realm="keyturn", algs="')
    assert 'error="invalid_dpop_proof"' in challenge
    assert "forged" not in response.text  # the upstream's echo never came back


def test_rfc9449_7_1_nginx_admits_a_bound_token_only_with_a_valid_proof(stack: Stack) -> None:
    token = dpop_bound_token(stack)
    claims = peek_unverified_claims(token)[1]

    seen = received(
        dpop_get(stack, "/anything?x=1", token, request_proof(stack, token, "/anything"))
    )

    assert seen["x-keyturn-token-id"] == [claims["jti"]]
    assert seen["x-keyturn-subject"] == [claims["sub"]]


@pytest.mark.parametrize("attack", ["no-proof", "as-bearer", "replayed", "other-url", "other-key"])
def test_rfc9449_7_1_nginx_refuses_a_bound_token_with_the_dpop_challenge(
    stack: Stack, attack: str
) -> None:
    token = dpop_bound_token(stack)
    proof: str | None = request_proof(stack, token, "/anything")
    scheme = "DPoP"
    if attack == "no-proof":
        proof = None
    elif attack == "as-bearer":
        scheme = "Bearer"
    elif attack == "replayed":
        assert dpop_get(stack, "/anything", token, proof).status_code == 200
    elif attack == "other-url":
        proof = request_proof(stack, token, "/elsewhere")
    else:
        url = f"{stack.gateway.url}/anything"
        thief = SigningKey.generate("ES256")
        proof = create_dpop_proof(
            thief, method="GET", url=url, now=int(time.time()), access_token=token
        )

    assert_dpop_refused(dpop_get(stack, "/anything", token, proof, scheme))


async def test_rfc9449_7_1_remote_verifier_speaks_the_same_dpop_to_keyturn(stack: Stack) -> None:
    """`RemoteVerifier` forwards what nginx forwards: the real server agrees with both."""
    token = dpop_bound_token(stack)
    url = "https://api.example.com/orders/17"
    proof = create_dpop_proof(
        DEVICE, method="PUT", url=url, now=int(time.time()), access_token=token
    )
    verifier = RemoteVerifier(stack.keyturn.public, allow_insecure_http=True)

    verified = await verifier.verify(token, dpop_proof=proof, method="PUT", url=f"{url}?x=1")

    assert verified.jkt == DEVICE.kid
    with pytest.raises(InvalidDPoPProofError):
        await verifier.verify(token, dpop_proof=proof, method="PUT", url=url)  # replayed
    with pytest.raises(InvalidDPoPProofError):
        await verifier.verify(token)  # as Bearer


async def test_rfc9449_7_1_keyturns_client_passes_a_starlette_service_checking_dpop(
    stack: Stack,
) -> None:
    """Client, server and integration together: `KeyturnAuth(dpop=True)` gets a bound token
    from Keyturn and proves it on each request to a service that verifies it locally."""
    metadata = httpx.get(f"{stack.keyturn.public}{METADATA_PATH}", timeout=10).json()
    verifier = JWKSVerifier(
        metadata["jwks_uri"].replace(metadata["issuer"], stack.keyturn.public),
        issuer=metadata["issuer"],
        audience=Settings().audience,
        allow_insecure_http=True,
    )

    async def order(request: Request) -> JSONResponse:
        return JSONResponse({"jkt": request.user.token.jkt})

    app = Starlette(
        routes=[Route("/orders/17", order, methods=["GET", "DELETE"])],
        middleware=[authentication_middleware(verifier)],
    )
    auth = KeyturnAuth(stack.keyturn.public, api_key=stack.key, dpop=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://orders.internal", auth=auth
    ) as client:
        first = await client.get("/orders/17?page=1")
        second = await client.delete("/orders/17")
    token = await auth.async_access_token()
    async with httpx.AsyncClient(transport=transport, base_url="http://orders.internal") as bare:
        stolen = await bare.get("/orders/17", headers={"Authorization": f"Bearer {token}"})
    await verifier.aclose()

    assert auth.dpop_key is not None
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == {"jkt": jwk_thumbprint(auth.dpop_key.verification_key.to_jwk())}
    assert stolen.status_code == 401
    assert 'error="invalid_dpop_proof"' in stolen.headers["www-authenticate"]
