"""`RemoteVerifier` with DPoP: it forwards what a gateway forwards, and never downgrades."""

from __future__ import annotations

import httpx
import pytest

from keyturn.core.dpop import create_dpop_proof
from keyturn.core.signing import SigningKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import InvalidTokenError
from keyturn.testing import FakeClock
from keyturn.verify import InvalidDPoPProofError, RemoteVerifier
from tests.verify.conftest import FakeIssuer, bind_token

SERVER = "https://auth.example.com"
URL = "https://api.example.com/orders/17?page=2"
DEVICE = SigningKey.generate("ES256")


def remote(handler: httpx.MockTransport) -> RemoteVerifier:
    return RemoteVerifier(SERVER, client=httpx.AsyncClient(transport=handler))


def vouching(seen: list[httpx.Request]) -> httpx.MockTransport:
    """A server that answers 200 for any token, naming it: what an old server would do."""

    def validate(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        token = request.headers["Authorization"].split(" ", 1)[1]
        jti = peek_unverified_claims(token)[1]["jti"]
        return httpx.Response(200, headers={"X-Keyturn-Token-Id": jti})

    return httpx.MockTransport(validate)


async def test_rfc9449_7_1_remote_forwards_the_proof_method_and_url_as_a_gateway(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = bind_token(issuer.token(), issuer.signing_key, DEVICE.kid)
    proof = create_dpop_proof(
        DEVICE, method="DELETE", url=URL, now=int(clock.timestamp()), access_token=token
    )
    seen: list[httpx.Request] = []

    verified = await remote(vouching(seen)).verify(
        token, dpop_proof=proof, method="DELETE", url=URL, scheme="dpop"
    )

    assert verified.jkt == DEVICE.kid
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/v1/validate"
    assert request.headers["Authorization"] == f"DPoP {token}"
    assert request.headers["DPoP"] == proof
    assert request.headers["X-Original-Method"] == "DELETE"
    assert request.headers["X-Original-URL"] == URL


async def test_rfc9449_7_1_remote_refuses_a_bound_token_as_bearer_whatever_the_server_says(
    issuer: FakeIssuer,
) -> None:
    """A server that does not know DPoP vouches for the token: the verifier still refuses."""
    token = bind_token(issuer.token(), issuer.signing_key, DEVICE.kid)
    seen: list[httpx.Request] = []

    with pytest.raises(InvalidDPoPProofError, match="must be sent as DPoP"):
        await remote(vouching(seen)).verify(token)
    assert seen[0].headers["Authorization"] == f"Bearer {token}"


async def test_rfc9449_7_1_remote_refuses_a_bearer_token_the_server_passed_as_dpop(
    issuer: FakeIssuer, clock: FakeClock
) -> None:
    token = issuer.token()
    proof = create_dpop_proof(DEVICE, method="GET", url=URL, now=int(clock.timestamp()))

    with pytest.raises(InvalidDPoPProofError, match="not DPoP-bound"):
        await remote(vouching([])).verify(token, dpop_proof=proof, method="GET", url=URL)


@pytest.mark.parametrize(
    ("proof", "error"),
    [
        pytest.param(None, "needs a DPoP proof", id="no-proof"),
        pytest.param("a.b.c\r\nX-Evil: 1", "compact JWS", id="header-injection"),
    ],
)
async def test_rfc9449_7_1_remote_refuses_a_dpop_request_without_a_usable_proof_unsent(
    issuer: FakeIssuer, proof: str | None, error: str
) -> None:
    seen: list[httpx.Request] = []

    with pytest.raises(InvalidDPoPProofError, match=error):
        await remote(vouching(seen)).verify(
            issuer.token(), dpop_proof=proof, method="GET", url=URL, scheme="dpop"
        )
    assert seen == []


@pytest.mark.parametrize(
    ("challenge", "error"),
    [
        pytest.param(
            'DPoP realm="keyturn", algs="ES256", error="invalid_dpop_proof"',
            InvalidDPoPProofError,
            id="proof-refused",
        ),
        pytest.param(
            'DPoP realm="keyturn", algs="ES256", error="invalid_token"',
            InvalidTokenError,
            id="token-refused",
        ),
    ],
)
async def test_rfc9449_7_1_remote_maps_the_servers_dpop_challenge(
    issuer: FakeIssuer, clock: FakeClock, challenge: str, error: type[Exception]
) -> None:
    token = bind_token(issuer.token(), issuer.signing_key, DEVICE.kid)
    proof = create_dpop_proof(DEVICE, method="GET", url=URL, now=int(clock.timestamp()))

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    with pytest.raises(error) as refused:
        await remote(httpx.MockTransport(refuse)).verify(
            token, dpop_proof=proof, method="GET", url=URL
        )
    assert isinstance(refused.value, InvalidDPoPProofError) == (error is InvalidDPoPProofError)
