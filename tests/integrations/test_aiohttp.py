"""`keyturn.integrations.aiohttp`: middleware, decorators, RFC 6750 answers, and
``authenticate(server_url)`` behaving as JWThenticator's ``server_utils.authenticate``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from keyturn.core.tokens import VerifiedToken
from keyturn.integrations.aiohttp import (
    auth_middleware,
    authenticate,
    get_claims,
    get_user,
    login_required,
    require_scopes,
)
from keyturn.testing import FakeClock
from keyturn.verify import OfflineVerifier, Verifier
from tests.integrations.conftest import DownVerifier, MakeToken

BARE_CHALLENGE = 'Bearer realm="keyturn"'


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def whoami(request: web.Request) -> web.Response:
    claims = get_claims(request)
    return web.json_response(
        {"subject": claims.subject if claims else None, "user": get_user(request)}
    )


@login_required
async def private(request: web.Request) -> web.Response:
    return web.json_response({"subject": request["claims"].subject, "user": request["user"]})


@require_scopes("orders:write")
async def write(request: web.Request) -> web.Response:
    return web.json_response({"written": True})


class Orders(web.View):
    @login_required
    async def get(self) -> web.Response:
        return web.json_response({"subject": self.request["claims"].subject})


async def load_user(request: web.Request, claims: VerifiedToken) -> dict[str, str] | None:
    users = {"user:alice": {"name": "Alice"}}
    return users.get(claims.subject)


def middleware_app(verifier: Verifier, **options: Any) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(verifier, **options)])
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/private", private)
    app.router.add_post("/orders", write)
    app.router.add_view("/orders", Orders)
    return app


# -- auth_middleware, login_required, require_scopes ------------------------------------


async def test_anonymous_requests_pass_with_no_claims(verifier: OfflineVerifier) -> None:
    async with serve(middleware_app(verifier)) as client:
        response = await client.get("/whoami")

        assert response.status == 200
        assert await response.json() == {"subject": None, "user": None}


async def test_a_valid_token_puts_its_claims_on_the_request(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with serve(middleware_app(verifier)) as client:
        response = await client.get("/private", headers=bearer(make_token()))

        assert response.status == 200
        assert await response.json() == {"subject": "key:k1", "user": None}


async def test_login_required_refuses_anonymous_with_a_bare_challenge(
    verifier: OfflineVerifier,
) -> None:
    """RFC 6750 §3.1: a request without credentials gets no error code."""
    async with serve(middleware_app(verifier)) as client:
        response = await client.get("/private")

        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == BARE_CHALLENGE
        assert await response.json() == {"detail": "a bearer token is required"}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("expired", id="expired"),
        pytest.param("eyJhbGciOiJub25lIn0.e30.", id="alg-none"),
    ],
)
async def test_a_bad_token_is_refused_even_where_anonymous_is_allowed(
    verifier: OfflineVerifier, make_token: MakeToken, clock: FakeClock, token: str
) -> None:
    if token == "expired":
        token = make_token(lifetime=60)
        clock.advance(3600)
    async with serve(middleware_app(verifier)) as client:
        response = await client.get("/whoami", headers=bearer(token))

        assert response.status == 401
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="keyturn", error="invalid_token"')
        assert (await response.json())["error"] == "invalid_token"


async def test_a_malformed_bearer_header_is_invalid_request(verifier: OfflineVerifier) -> None:
    async with serve(middleware_app(verifier)) as client:
        response = await client.get("/whoami", headers={"Authorization": "Bearer"})

        assert response.status == 400
        assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


async def test_another_authorization_scheme_is_left_alone(verifier: OfflineVerifier) -> None:
    async with serve(middleware_app(verifier)) as client:
        basic = {"Authorization": "Basic dXNlcjpwYXNz"}
        assert (await client.get("/whoami", headers=basic)).status == 200
        assert (await client.get("/private", headers=basic)).status == 401


async def test_require_scopes_answers_403_insufficient_scope(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with serve(middleware_app(verifier)) as client:
        refused = await client.post("/orders", headers=bearer(make_token(["orders:read"])))
        allowed = await client.post("/orders", headers=bearer(make_token(["orders:write"])))
        anonymous = await client.post("/orders")

        assert refused.status == 403
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer realm="keyturn", error="insufficient_scope", '
            'error_description="token lacks required scope(s): orders:write", '
            'scope="orders:write"'
        )
        assert (await refused.json())["error"] == "insufficient_scope"
        assert allowed.status == 200
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == BARE_CHALLENGE


async def test_required_middleware_refuses_anonymous_everywhere(
    verifier: OfflineVerifier,
) -> None:
    async with serve(middleware_app(verifier, required=True)) as client:
        response = await client.get("/whoami")

        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == BARE_CHALLENGE


async def test_the_user_loader_resolves_request_user(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with serve(middleware_app(verifier, user_loader=load_user)) as client:
        known = await client.get("/private", headers=bearer(make_token(subject="user:alice")))
        unknown = await client.get("/private", headers=bearer(make_token(subject="user:bob")))

        assert await known.json() == {"subject": "user:alice", "user": {"name": "Alice"}}
        assert unknown.status == 401
        assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]


async def test_an_outage_is_503_with_retry_after_never_401() -> None:
    async with serve(middleware_app(DownVerifier())) as client:
        response = await client.get("/whoami", headers=bearer("a.b.c"))

        assert response.status == 503
        assert response.headers["Retry-After"] == "7"
        assert "WWW-Authenticate" not in response.headers


async def test_class_based_views_can_be_guarded(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with serve(middleware_app(verifier)) as client:
        assert (await client.get("/orders")).status == 401
        response = await client.get("/orders", headers=bearer(make_token()))
        assert await response.json() == {"subject": "key:k1"}


async def test_decorators_without_authentication_are_a_server_error() -> None:
    """A missing middleware is a configuration error, not an anonymous caller."""
    app = web.Application()
    app.router.add_get("/private", private)
    async with serve(app) as client:
        assert (await client.get("/private")).status == 500


def test_require_scopes_refuses_a_malformed_scope_at_import() -> None:
    with pytest.raises(ValueError, match="scope"):
        require_scopes('orders:"read"')


# -- authenticate(verifier=...) ----------------------------------------------------------


async def test_authenticate_with_a_verifier_guards_one_handler(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    @authenticate(verifier=verifier)
    @require_scopes("orders:read")
    async def orders(request: web.Request) -> web.Response:
        return web.json_response({"subject": request["claims"].subject})

    app = web.Application()
    app.router.add_get("/orders", orders)
    async with serve(app) as client:
        anonymous = await client.get("/orders")
        denied = await client.get("/orders", headers=bearer(make_token(["other"])))
        allowed = await client.get("/orders", headers=bearer(make_token()))

        assert (anonymous.status, anonymous.headers["WWW-Authenticate"]) == (401, BARE_CHALLENGE)
        assert denied.status == 403
        assert await allowed.json() == {"subject": "key:k1"}


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="neither"),
        pytest.param({"server_url": "http://a", "verifier": DownVerifier()}, id="both"),
        pytest.param({"server_url": "http://a", "jwthenticator_server": "http://b"}, id="twice"),
    ],
)
def test_authenticate_takes_exactly_one_source(arguments: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        authenticate(**arguments)


# -- authenticate(server_url): JWThenticator's server_utils.authenticate ------------------
#
# jwthenticator/server_utils.py (1.6.3): no Authorization header -> 403 {}; not exactly
# "Bearer <jwt>" (split on " ") -> 400 {}; then POST urljoin(server + "/", "validate")
# {"jwt": jwt} and 401 {} unless it answers 200. Its crashes (an empty jwt raised
# MissingJWTError, a transport error escaped) are 400 and 503 here.


class FakeValidate:
    """JWThenticator's ``POST /validate``: 200 for ``good``, else ``status``."""

    def __init__(self, status: int = 401) -> None:
        self.status = status
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if json.loads(request.content) == {"jwt": "good"}:
            return httpx.Response(200, json={"result": True})
        return httpx.Response(self.status, json={})


@asynccontextmanager
async def jwthenticator_app(
    server_url: str, transport: httpx.AsyncBaseTransport
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with httpx.AsyncClient(transport=transport) as http:

        @authenticate(server_url, client=http)
        async def secure(request: web.Request) -> web.Response:
            return web.json_response({"success!": True})

        app = web.Application()
        app.router.add_get("/secure", secure)
        async with serve(app) as client:
            yield client


@pytest.mark.parametrize(
    ("authorization", "status", "asked"),
    [
        pytest.param(None, 403, False, id="missing-header-403"),
        pytest.param("Bearer good", 200, True, id="valid"),
        pytest.param("Bearer bad", 401, True, id="refused-401"),
        pytest.param("bearer good", 400, False, id="lowercase-scheme-400"),
        pytest.param("Basic good", 400, False, id="other-scheme-400"),
        pytest.param("Bearer", 400, False, id="no-token-400"),
        pytest.param("Bearer a b", 400, False, id="three-parts-400"),
        pytest.param("Bearer  good", 400, False, id="double-space-400"),
        pytest.param("Bearer ", 400, False, id="empty-token-400-not-500"),
    ],
)
async def test_authenticate_server_url_answers_as_jwthenticator(
    authorization: str | None, status: int, asked: bool
) -> None:
    validate = FakeValidate()
    headers = {} if authorization is None else {"Authorization": authorization}
    async with jwthenticator_app("http://auth:8080", httpx.MockTransport(validate)) as client:
        response = await client.get("/secure", headers=headers)

        assert response.status == status
        expected = {"success!": True} if status == 200 else {}
        assert await response.json() == expected
        assert response.content_type == "application/json"
    assert bool(validate.calls) is asked


@pytest.mark.parametrize(
    ("server_url", "validate_url"),
    [
        pytest.param("http://auth:8080", "http://auth:8080/validate", id="bare"),
        pytest.param("http://auth:8080/", "http://auth:8080/validate", id="slash"),
        pytest.param("https://auth/jwt", "https://auth/jwt/validate", id="prefix"),
    ],
)
async def test_authenticate_server_url_posts_the_jwt_to_validate(
    server_url: str, validate_url: str
) -> None:
    validate = FakeValidate()
    async with jwthenticator_app(server_url, httpx.MockTransport(validate)) as client:
        await client.get("/secure", headers={"Authorization": "Bearer good"})

    (call,) = validate.calls
    assert (call.method, str(call.url)) == ("POST", validate_url)
    assert json.loads(call.content) == {"jwt": "good"}


@pytest.mark.parametrize("server_status", [400, 403, 404])
async def test_any_other_refusal_from_the_server_is_401(server_status: int) -> None:
    validate = FakeValidate(status=server_status)
    async with jwthenticator_app("http://auth", httpx.MockTransport(validate)) as client:
        response = await client.get("/secure", headers={"Authorization": "Bearer bad"})

        assert (response.status, await response.json()) == (401, {})


@pytest.mark.parametrize("server_status", [429, 500, 502, 503])
async def test_a_failing_server_is_503_not_401(server_status: int) -> None:
    """JWThenticator answered 401 here: its client would then drop good credentials."""
    validate = FakeValidate(status=server_status)
    async with jwthenticator_app("http://auth", httpx.MockTransport(validate)) as client:
        response = await client.get("/secure", headers={"Authorization": "Bearer bad"})

        assert (response.status, await response.json()) == (503, {})
        assert response.headers["Retry-After"] == "1"


async def test_an_unreachable_server_is_503_not_a_crash() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with jwthenticator_app("http://auth", httpx.MockTransport(refuse)) as client:
        response = await client.get("/secure", headers={"Authorization": "Bearer good"})

        assert (response.status, await response.json()) == (503, {})


async def test_a_server_that_never_answers_times_out_as_503() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:

        @authenticate("http://auth", client=http, timeout=0.05)
        async def secure(request: web.Request) -> web.Response:
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/secure", secure)
        async with serve(app) as client:
            response = await client.get("/secure", headers={"Authorization": "Bearer good"})

            assert response.status == 503


def test_a_server_url_without_scheme_or_host_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="absolute server URL"):
        authenticate("localhost:8080")


async def test_jwthenticators_keyword_name_is_accepted() -> None:
    validate = FakeValidate()
    async with httpx.AsyncClient(transport=httpx.MockTransport(validate)) as http:

        @authenticate(jwthenticator_server="http://auth:8080", client=http)
        async def secure(request: web.Request) -> web.Response:
            return web.json_response({"success!": True})

        app = web.Application()
        app.router.add_get("/secure", secure)
        async with serve(app) as client:
            response = await client.get("/secure", headers={"Authorization": "Bearer good"})

            assert response.status == 200
    assert str(validate.calls[0].url) == "http://auth:8080/validate"
