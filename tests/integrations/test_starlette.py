"""`keyturn.integrations.starlette`: the authentication backend, Starlette's ``@requires``,
and the FastAPI dependency (typed claims, RFC 6750 answers, OpenAPI bearer scheme).

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations,
which name dependencies local to the app factories (as the examples do).
"""

from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyturn.core.tokens import VerifiedToken
from keyturn.integrations.starlette import (
    KeyturnUser,
    authentication_middleware,
    require_scopes,
)
from keyturn.testing import FakeClock
from keyturn.verify import OfflineVerifier, Verifier
from tests.integrations.conftest import DownVerifier, MakeToken

BARE_CHALLENGE = 'Bearer realm="keyturn"'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# -- Starlette: KeyturnBackend + @requires ------------------------------------------------


async def whoami(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse(
        {
            "authenticated": user.is_authenticated,
            "name": user.display_name,
            "scopes": sorted(request.auth.scopes),
            "jti": user.token.jti if isinstance(user, KeyturnUser) else None,
        }
    )


@requires("orders:write")
async def write(request: Request) -> JSONResponse:
    return JSONResponse({"written": True})


def starlette_app(verifier: Verifier) -> Starlette:
    return Starlette(
        routes=[Route("/whoami", whoami), Route("/orders", write, methods=["POST"])],
        middleware=[authentication_middleware(verifier)],
    )


async def test_request_user_and_auth_scopes_come_from_the_token(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with client_for(starlette_app(verifier)) as client:
        response = await client.get("/whoami", headers=bearer(make_token(["orders:read"])))

    body = response.json()
    assert response.status_code == 200
    assert (body["authenticated"], body["name"]) == (True, "key:k1")
    assert body["scopes"] == ["authenticated", "orders:read"]
    assert body["jti"] is not None


async def test_anonymous_requests_get_starlettes_unauthenticated_user(
    verifier: OfflineVerifier,
) -> None:
    async with client_for(starlette_app(verifier)) as client:
        response = await client.get("/whoami")

    assert response.json() == {"authenticated": False, "name": "", "scopes": [], "jti": None}


async def test_starlette_requires_checks_token_scopes(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with client_for(starlette_app(verifier)) as client:
        allowed = await client.post("/orders", headers=bearer(make_token(["orders:write"])))
        denied = await client.post("/orders", headers=bearer(make_token(["orders:read"])))

    assert allowed.json() == {"written": True}
    assert denied.status_code == 403  # Starlette's own answer, documented as such


@pytest.mark.parametrize(
    ("authorization", "status", "challenge"),
    [
        pytest.param("Bearer not-a-jwt", 401, 'error="invalid_token"', id="garbage-401"),
        pytest.param("Bearer", 400, 'error="invalid_request"', id="no-token-400"),
    ],
)
async def test_a_bad_credential_is_an_rfc6750_error(
    verifier: OfflineVerifier, authorization: str, status: int, challenge: str
) -> None:
    async with client_for(starlette_app(verifier)) as client:
        response = await client.get("/whoami", headers={"Authorization": authorization})

    assert response.status_code == status
    assert challenge in response.headers["WWW-Authenticate"]


async def test_an_expired_token_is_401_invalid_token(
    verifier: OfflineVerifier, make_token: MakeToken, clock: FakeClock
) -> None:
    token = make_token(lifetime=60)
    clock.advance(3600)
    async with client_for(starlette_app(verifier)) as client:
        response = await client.get("/whoami", headers=bearer(token))

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token", "detail": "token has expired"}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="keyturn", error="invalid_token", error_description="token has expired"'
    )


async def test_backend_outage_is_503_with_retry_after() -> None:
    async with client_for(starlette_app(DownVerifier())) as client:
        response = await client.get("/whoami", headers=bearer("a.b.c"))

    assert (response.status_code, response.headers["Retry-After"]) == (503, "7")


# -- FastAPI: Depends(require_scopes(...)) -----------------------------------------------


def fastapi_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()
    read_orders = require_scopes("orders:read", verifier=verifier)

    @app.get("/orders")
    async def list_orders(token: Annotated[VerifiedToken, Depends(read_orders)]) -> dict[str, str]:
        return {"subject": token.subject, "scope": " ".join(sorted(token.scopes))}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


async def test_fastapi_dependency_returns_the_typed_claims(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with client_for(fastapi_app(verifier)) as client:
        response = await client.get("/orders", headers=bearer(make_token()))

    assert response.status_code == 200
    assert response.json() == {"subject": "key:k1", "scope": "orders:read"}


async def test_fastapi_dependency_answers_rfc6750(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    async with client_for(fastapi_app(verifier)) as client:
        anonymous = await client.get("/orders")
        invalid = await client.get("/orders", headers=bearer("not-a-jwt"))
        denied = await client.get("/orders", headers=bearer(make_token(["other"])))

    assert (anonymous.status_code, anonymous.headers["WWW-Authenticate"]) == (401, BARE_CHALLENGE)
    assert anonymous.json() == {"detail": "a bearer token is required"}
    assert invalid.status_code == 401
    assert 'error="invalid_token"' in invalid.headers["WWW-Authenticate"]
    assert denied.status_code == 403
    assert denied.headers["WWW-Authenticate"] == (
        'Bearer realm="keyturn", error="insufficient_scope", '
        'error_description="token lacks required scope(s): orders:read", scope="orders:read"'
    )


async def test_fastapi_dependency_outage_is_503() -> None:
    async with client_for(fastapi_app(DownVerifier())) as client:
        response = await client.get("/orders", headers=bearer("a.b.c"))

    assert (response.status_code, response.headers["Retry-After"]) == (503, "7")


async def test_fastapi_openapi_shows_the_bearer_scheme(verifier: OfflineVerifier) -> None:
    async with client_for(fastapi_app(verifier)) as client:
        document = (await client.get("/openapi.json")).json()

    scheme = document["components"]["securitySchemes"]["KeyturnBearer"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert document["paths"]["/orders"]["get"]["security"] == [{"KeyturnBearer": []}]
    assert "security" not in document["paths"]["/health"]["get"]


async def test_fastapi_dependency_reuses_the_backends_verification(
    verifier: OfflineVerifier, make_token: MakeToken
) -> None:
    app = FastAPI(middleware=[authentication_middleware(verifier)])

    @app.get("/orders")
    async def list_orders(
        token: Annotated[VerifiedToken, Depends(require_scopes("orders:read"))],
    ) -> dict[str, str]:
        return {"subject": token.subject}

    async with client_for(app) as client:
        allowed = await client.get("/orders", headers=bearer(make_token()))
        anonymous = await client.get("/orders")

    assert allowed.json() == {"subject": "key:k1"}
    assert (anonymous.status_code, anonymous.headers["WWW-Authenticate"]) == (401, BARE_CHALLENGE)


async def test_fastapi_dependency_without_verifier_or_backend_is_a_configuration_error() -> None:
    app = FastAPI()

    @app.get("/orders")
    async def list_orders(
        token: Annotated[VerifiedToken, Depends(require_scopes("orders:read"))],
    ) -> dict[str, str]:
        return {"subject": token.subject}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match="needs verifier"):
            await client.get("/orders")
