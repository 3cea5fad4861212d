"""The gateway's hot routes: one endpoint each, reached by the exact router or by Starlette.

`ExactRoutes` (inside the request telemetry) hands these paths to the very endpoint
objects Starlette's router holds; the answers themselves are asserted here whole, through
the public app, and compared with the same request routed by Starlette.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from keyturn.server.app import build_public_app
from keyturn.server.gateway.endpoints import GatewayEndpoint
from keyturn.server.gateway.router import ExactRoutes
from keyturn.server.state import KeyturnState
from tests.server.conftest import (
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    legacy_tokens,
    register_legacy_key,
)

#: (method, path) of every route the exact router takes.
HOT_ROUTES = [
    ("GET", "/validate_request"),
    ("GET", "/v1/validate"),
    ("POST", "/validate"),
    ("GET", "/jwks"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/authenticate"),
    ("POST", "/refresh"),
    ("POST", "/v1/token"),
]


def exact_routes(app: Any) -> ExactRoutes:
    """The `ExactRoutes` the public app's telemetry consults before Starlette's router."""
    exact = app.exact
    assert isinstance(exact, ExactRoutes)
    return exact


def starlette_only(app: Any) -> Any:
    """``app`` with its exact table emptied: every request goes through Starlette's router."""
    exact_routes(app).table.clear()
    return app


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    return response.status_code, headers, response.content


@pytest.mark.parametrize("prefix", ["", "/auth"])
async def test_the_exact_router_hands_the_hot_paths_to_starlettes_endpoint_objects(
    open_state: OpenState, sqlite_database_url: str, prefix: str
) -> None:
    state = await open_state(sqlite_database_url, url_prefix=prefix)
    app = build_public_app(state)
    exact = exact_routes(app)
    held = {
        (method, route.path): route.endpoint
        for route in app.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in route.methods or ()
    }

    assert sorted(exact.table) == sorted((m, f"{prefix}{path}") for m, path in HOT_ROUTES)
    for key, (route, endpoint) in exact.table.items():
        assert isinstance(endpoint, GatewayEndpoint)
        assert endpoint is held[key] is route.endpoint
        assert route.path == key[1]  # the template the telemetry counts


@pytest.mark.parametrize("path", ["/validate_request", "/v1/validate"])
async def test_a_valid_token_is_answered_as_starlette_routes_it(
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    path: str,
) -> None:
    exact = make_client(build_public_app(sqlite_state), peer=REMOTE)
    slow = make_client(starlette_only(build_public_app(sqlite_state)), peer=REMOTE)
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(exact))["jwt"]

    headers = {**bearer(jwt), "X-Request-ID": "gw-req-1"}
    answered = await exact.get(path, headers=headers)
    expected = await slow.get(path, headers=headers)

    assert answered.status_code == 200
    assert answered.headers["x-request-id"] == "gw-req-1"
    assert _comparable(answered) == _comparable(expected)


async def test_failures_and_scopes_are_answered_by_the_same_endpoint(
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build_public_app(sqlite_state)
    client = make_client(app, peer=REMOTE)
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(client))["jwt"]
    entered: list[str] = []
    inner = app.app  # type: ignore[attr-defined]

    async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
        entered.append(scope["path"])
        await inner(scope, receive, send)

    monkeypatch.setattr(app, "app", spy)

    assert (await client.get("/v1/validate", headers=bearer(jwt))).status_code == 200
    assert (await client.get("/v1/validate", headers=bearer("junk"))).status_code == 401
    assert (await client.get("/v1/validate?scope=x", headers=bearer(jwt))).status_code == 403
    malformed = await client.get("/v1/validate?scope=%22", headers=bearer(jwt))
    assert malformed.status_code == 401
    assert 'error="invalid_request"' in malformed.headers["www-authenticate"]
    assert (await client.get("/validate_request")).status_code == 401

    assert entered == []  # Starlette's router never ran


@pytest.mark.parametrize(
    ("body", "status", "content_type"),
    [
        pytest.param("valid", 200, None, id="valid"),
        pytest.param("valid", 415, "text/plain", id="valid-token-wrong-content-type"),
        pytest.param("valid-utf16", 400, None, id="valid-token-in-utf16"),
        pytest.param({"jwt": "junk"}, 401, None, id="bad-token"),
        pytest.param({"jwt": "x", "extra": 1}, 400, None, id="unknown-field"),
        pytest.param({}, 400, None, id="missing-field"),
        pytest.param("[1, 2", 400, None, id="not-json"),
        pytest.param({"jwt": "x" * 70_000}, 413, None, id="too-large"),
    ],
)
async def test_post_validate_answers_as_starlette_routes_it(
    *,
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    body: object,
    status: int,
    content_type: str | None,
) -> None:
    exact = make_client(build_public_app(sqlite_state), peer=REMOTE)
    slow = make_client(starlette_only(build_public_app(sqlite_state)), peer=REMOTE)
    await register_legacy_key(sqlite_admin)
    if body == "valid":
        body = {"jwt": (await legacy_tokens(exact))["jwt"]}
    elif body == "valid-utf16":  # JSON, but not UTF-8: refused like any non-UTF-8 body
        body = json.dumps({"jwt": (await legacy_tokens(exact))["jwt"]}).encode("utf-16")
    kwargs = {"content": body} if isinstance(body, str | bytes) else {"json": body}

    headers = {"X-Request-ID": "gw-req-2"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    answered = await exact.post("/validate", headers=headers, **kwargs)  # type: ignore[arg-type]
    expected = await slow.post("/validate", headers=headers, **kwargs)  # type: ignore[arg-type]

    assert answered.status_code == status
    assert answered.headers["x-request-id"] == "gw-req-2"
    assert _comparable(answered) == _comparable(expected)


@pytest.mark.parametrize(
    ("path", "content_type", "cache_control"),
    [
        ("/jwks", "application/json", "max-age=300"),
        ("/.well-known/jwks.json", "application/jwk-set+json", "public, max-age=300"),
    ],
)
async def test_jwks_follows_rotation(
    sqlite_state: KeyturnState,
    make_client: MakeClient,
    path: str,
    content_type: str,
    cache_control: str,
) -> None:
    exact = make_client(build_public_app(sqlite_state), peer=REMOTE)
    slow = make_client(starlette_only(build_public_app(sqlite_state)), peer=REMOTE)
    headers = {"X-Request-ID": "jwks-1"}

    before = await exact.get(path, headers=headers)
    assert _comparable(before) == _comparable(await slow.get(path, headers=headers))
    await sqlite_state.service.rotate_signing_key()
    after = await exact.get(path, headers=headers)

    assert before.status_code == after.status_code == 200
    assert after.headers["x-request-id"] == "jwks-1"
    assert (after.headers["content-type"], after.headers["cache-control"]) == (
        content_type,
        cache_control,
    )
    assert _comparable(after) == _comparable(await slow.get(path, headers=headers))
    assert after.json() == sqlite_state.service.jwks()
    assert len(after.json()["keys"]) == len(before.json()["keys"]) + 1
