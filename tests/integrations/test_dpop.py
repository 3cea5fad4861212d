"""DPoP at the integrations (RFC 9449 §7): aiohttp, Starlette and FastAPI answer alike.

Each test runs against every front end: aiohttp's middleware, Starlette's backend (under
FastAPI's dependency, which reuses it) and FastAPI's own verifying dependency. A request
with ``Authorization: DPoP`` and a proof passes; a bound token as Bearer, without a proof,
with a replayed proof or one for another request gets 401 with a DPoP challenge.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fastapi import Depends, FastAPI

from keyturn.core.dpop import create_dpop_proof
from keyturn.core.signing import SigningKey
from keyturn.core.tokens import VerifiedToken
from keyturn.integrations import aiohttp as kt_aiohttp
from keyturn.integrations import starlette as kt_starlette
from keyturn.testing import FakeClock
from keyturn.verify import Verifier
from tests.integrations.conftest import MakeToken
from tests.verify.conftest import bind_token

BASE = "https://api.example.com/shop"
URL = f"{BASE}/orders/17"
DEVICE = SigningKey.generate("ES256")
DPOP_CHALLENGE = 'DPoP realm="keyturn", algs="'
#: Where the service itself listens, behind the proxy that clients call at BASE.
INTERNAL = "http://orders.internal:8000"

#: (status, headers that matter, JSON body) of one answer.
Answer = tuple[int, dict[str, str], Any]
Send = Callable[..., Any]
Frontend = Callable[[Verifier], AbstractAsyncContextManager[Send]]


def _answer(status: int, headers: Any, body: Any) -> Answer:
    """What the three must agree on: FastAPI's error bodies hold ``detail`` only."""
    kept = {name: headers[name] for name in ("WWW-Authenticate", "Retry-After") if name in headers}
    return status, kept, body if status == 200 else {"detail": body["detail"]}


@asynccontextmanager
async def aiohttp_front(verifier: Verifier) -> AsyncIterator[Send]:
    @kt_aiohttp.require_scopes("orders:read")
    async def order(request: web.Request) -> web.Response:
        claims = kt_aiohttp.get_claims(request)
        assert claims is not None
        return web.json_response({"subject": claims.subject, "jkt": claims.jkt})

    app = web.Application(middlewares=[kt_aiohttp.auth_middleware(verifier, base_url=BASE)])
    app.router.add_route("*", "/orders/17", order)
    async with TestClient(TestServer(app)) as client:

        async def send(method: str, headers: list[tuple[str, str]]) -> Answer:
            response = await client.request(method, "/orders/17", headers=headers)
            return _answer(response.status, response.headers, await response.json())

        yield send


def _asgi_sender(app: FastAPI, client: httpx.AsyncClient) -> Send:
    async def send(method: str, headers: list[tuple[str, str]]) -> Answer:
        response = await client.request(method, "/orders/17", headers=headers)
        return _answer(response.status_code, response.headers, response.json())

    return send


def _routes(app: FastAPI, dependency: Callable[..., Any]) -> None:
    @app.api_route("/orders/17", methods=["GET", "DELETE"])
    async def order(token: Annotated[VerifiedToken, Depends(dependency)]) -> dict[str, Any]:
        return {"subject": token.subject, "jkt": token.jkt}


@asynccontextmanager
async def starlette_front(verifier: Verifier) -> AsyncIterator[Send]:
    """Starlette's backend, read by FastAPI's dependency (no verifier of its own)."""
    app = FastAPI(middleware=[kt_starlette.authentication_middleware(verifier, base_url=BASE)])
    _routes(app, kt_starlette.require_scopes("orders:read"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=INTERNAL
    ) as client:
        yield _asgi_sender(app, client)


@asynccontextmanager
async def fastapi_front(verifier: Verifier) -> AsyncIterator[Send]:
    """FastAPI's dependency verifying by itself."""
    app = FastAPI()
    _routes(app, kt_starlette.require_scopes("orders:read", verifier=verifier, base_url=BASE))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=INTERNAL
    ) as client:
        yield _asgi_sender(app, client)


FRONTENDS = {"aiohttp": aiohttp_front, "starlette": starlette_front, "fastapi": fastapi_front}


@pytest.fixture(params=sorted(FRONTENDS))
def frontend(request: pytest.FixtureRequest) -> Frontend:
    return FRONTENDS[request.param]


@pytest.fixture
def bound(make_token: MakeToken, signing_key: SigningKey) -> Callable[..., str]:
    def make(scopes: tuple[str, ...] = ("orders:read",)) -> str:
        return bind_token(make_token(scopes), signing_key, DEVICE.kid)

    return make


def proof_for(token: str | None, clock: FakeClock, *, method: str = "GET", url: str = URL) -> str:
    return create_dpop_proof(
        DEVICE, method=method, url=url, now=int(clock.timestamp()), access_token=token
    )


def dpop(token: str, *proofs: str) -> list[tuple[str, str]]:
    return [("Authorization", f"DPoP {token}"), *(("DPoP", proof) for proof in proofs)]


def assert_dpop_refusal(answer: Answer, error: str = "invalid_dpop_proof") -> None:
    status, headers, body = answer
    assert status == 401
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith(DPOP_CHALLENGE)
    assert f'error="{error}"' in challenge
    assert body["detail"]


async def test_rfc9449_7_1_dpop_request_with_a_valid_proof_passes(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    clock: FakeClock,
) -> None:
    token = bound()
    async with frontend(verifier) as send:
        got = await send("GET", dpop(token, proof_for(token, clock)))
        deleted = await send("DELETE", dpop(token, proof_for(token, clock, method="DELETE")))

    assert got == (200, {}, {"subject": "key:k1", "jkt": DEVICE.kid})
    assert deleted[0] == 200


async def test_rfc9449_7_1_bound_token_as_bearer_is_refused_with_a_dpop_challenge(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    clock: FakeClock,
) -> None:
    token = bound()
    async with frontend(verifier) as send:
        bare = await send("GET", [("Authorization", f"Bearer {token}")])
        with_proof = await send(
            "GET", [("Authorization", f"Bearer {token}"), ("DPoP", proof_for(token, clock))]
        )

    assert_dpop_refusal(bare)
    assert_dpop_refusal(with_proof)


async def test_rfc9449_7_1_dpop_without_a_proof_or_with_two_is_refused(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    clock: FakeClock,
) -> None:
    token = bound()
    async with frontend(verifier) as send:
        missing = await send("GET", dpop(token))
        doubled = await send("GET", dpop(token, proof_for(token, clock), proof_for(token, clock)))

    assert_dpop_refusal(missing)
    assert_dpop_refusal(doubled)


async def test_rfc9449_11_1_replayed_proof_is_refused(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    clock: FakeClock,
) -> None:
    token = bound()
    once = proof_for(token, clock)
    async with frontend(verifier) as send:
        first = await send("GET", dpop(token, once))
        again = await send("GET", dpop(token, once))

    assert first[0] == 200
    assert_dpop_refusal(again)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        pytest.param("DELETE", URL, id="wrong-htm"),
        pytest.param("GET", "https://api.example.com/orders/17", id="htu-without-the-prefix"),
    ],
)
async def test_rfc9449_4_3_proof_for_another_request_is_refused(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    clock: FakeClock,
    *,
    method: str,
    url: str,
) -> None:
    token = bound()
    async with frontend(verifier) as send:
        answer = await send("GET", dpop(token, proof_for(token, clock, method=method, url=url)))

    assert_dpop_refusal(answer)


async def test_rfc9449_7_1_token_failures_under_dpop_answer_with_a_dpop_challenge(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    make_token: MakeToken,
    clock: FakeClock,
) -> None:
    """A bearer token as DPoP, a bad token, a malformed header: DPoP challenges, alike."""
    plain = make_token()
    async with frontend(verifier) as send:
        unbound = await send("GET", dpop(plain, proof_for(plain, clock)))
        garbage = await send("GET", dpop("not-a-jwt", proof_for("not-a-jwt", clock)))
        malformed = await send("GET", [("Authorization", "DPoP a b")])

    assert_dpop_refusal(unbound)
    assert_dpop_refusal(garbage, "invalid_token")
    assert malformed[0] == 400
    assert malformed[1]["WWW-Authenticate"].startswith(DPOP_CHALLENGE)
    assert 'error="invalid_request"' in malformed[1]["WWW-Authenticate"]


async def test_rfc9449_7_1_missing_scope_is_403_with_a_dpop_challenge(
    frontend: Frontend,
    verifier: Verifier,
    bound: Callable[..., str],
    clock: FakeClock,
) -> None:
    token = bound(("other",))
    async with frontend(verifier) as send:
        status, headers, body = await send("GET", dpop(token, proof_for(token, clock)))

    assert (status, body["detail"]) == (403, "token lacks required scope(s): orders:read")
    assert headers["WWW-Authenticate"].startswith(DPOP_CHALLENGE)
    assert 'scope="orders:read"' in headers["WWW-Authenticate"]


async def test_the_three_frontends_answer_every_case_identically(
    verifier: Verifier, bound: Callable[..., str], clock: FakeClock
) -> None:
    """Same statuses, challenges and bodies: they share `keyturn.rfc9449.failure_for`."""
    token = bound()
    cases = [
        [("Authorization", f"Bearer {token}")],
        dpop(token),
        dpop(token, proof_for(token, clock, method="POST")),
    ]
    answers = {}
    for name, front in FRONTENDS.items():
        async with front(verifier) as send:
            answers[name] = [await send("GET", headers) for headers in cases]

    assert answers["aiohttp"] == answers["starlette"] == answers["fastapi"]


def test_base_url_must_be_an_absolute_http_url(verifier: Verifier) -> None:
    with pytest.raises(ValueError, match="absolute"):
        kt_aiohttp.auth_middleware(verifier, base_url="api.example.com")
    with pytest.raises(ValueError, match="query"):
        kt_starlette.KeyturnBackend(verifier, base_url="https://api.example.com/?x=1")


async def test_without_base_url_htu_is_the_requests_own_url(
    verifier: Verifier, bound: Callable[..., str], clock: FakeClock
) -> None:
    """Starlette's request URL (scheme and Host as received) is the default ``htu``."""
    app = FastAPI(middleware=[kt_starlette.authentication_middleware(verifier)])
    _routes(app, kt_starlette.require_scopes("orders:read"))
    token = bound()
    here = "http://service.internal:8000/orders/17"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.internal:8000") as c:
        ok = await c.get(
            "/orders/17?page=2", headers=dpop(token, proof_for(token, clock, url=here))
        )
        proxied = await c.get("/orders/17", headers=dpop(token, proof_for(token, clock)))

    assert ok.status_code == 200
    assert proxied.status_code == 401
