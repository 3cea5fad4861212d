"""The raw-ASGI fast path for gateway validation answers exactly as Starlette would."""

from __future__ import annotations

import httpx
import pytest

from keyturn.server.app import GatewayFastPath, build_public_app
from keyturn.server.state import KeyturnState
from tests.server.conftest import (
    REMOTE,
    MakeClient,
    bearer,
    legacy_tokens,
    register_legacy_key,
)


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    return response.status_code, headers, response.content


@pytest.mark.parametrize("path", ["/validate_request", "/v1/validate"])
async def test_fast_path_matches_the_starlette_handler(
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    path: str,
) -> None:
    app = build_public_app(sqlite_state)
    assert isinstance(app, GatewayFastPath)
    fast, slow = make_client(app, peer=REMOTE), make_client(app.app, peer=REMOTE)
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(fast))["jwt"]

    headers = {**bearer(jwt), "X-Request-ID": "gw-req-1"}
    answered = await fast.get(path, headers=headers)
    expected = await slow.get(path, headers=headers)

    assert answered.status_code == 200
    assert answered.headers["x-request-id"] == "gw-req-1"
    assert _comparable(answered) == _comparable(expected)


async def test_fast_path_serves_without_entering_starlette(
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build_public_app(sqlite_state)
    assert isinstance(app, GatewayFastPath)
    client = make_client(app, peer=REMOTE)
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(client))["jwt"]
    entered: list[str] = []
    inner = app.app

    async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
        entered.append(scope["path"])
        await inner(scope, receive, send)

    monkeypatch.setattr(app, "app", spy)

    assert (await client.get("/v1/validate", headers=bearer(jwt))).status_code == 200
    assert (await client.get("/v1/validate", headers=bearer("junk"))).status_code == 401
    assert (await client.get("/v1/validate?scope=x", headers=bearer(jwt))).status_code == 403

    assert entered == ["/v1/validate", "/v1/validate"]  # failures render in Starlette


@pytest.mark.parametrize(
    ("body", "status", "content_type"),
    [
        pytest.param("valid", 200, None, id="valid"),
        pytest.param("valid", 415, "text/plain", id="valid-token-wrong-content-type"),
        pytest.param({"jwt": "junk"}, 401, None, id="bad-token"),
        pytest.param({"jwt": "x", "extra": 1}, 400, None, id="unknown-field"),
        pytest.param({}, 400, None, id="missing-field"),
        pytest.param("[1, 2", 400, None, id="not-json"),
        pytest.param({"jwt": "x" * 70_000}, 413, None, id="too-large"),
    ],
)
async def test_post_validate_fast_path_matches_starlette(
    *,
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    body: object,
    status: int,
    content_type: str | None,
) -> None:
    """Answered in the fast path or replayed into Starlette: the same response either way."""
    app = build_public_app(sqlite_state)
    assert isinstance(app, GatewayFastPath)
    fast, slow = make_client(app, peer=REMOTE), make_client(app.app, peer=REMOTE)
    await register_legacy_key(sqlite_admin)
    if body == "valid":
        body = {"jwt": (await legacy_tokens(fast))["jwt"]}
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}

    headers = {"X-Request-ID": "gw-req-2"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    answered = await fast.post("/validate", headers=headers, **kwargs)  # type: ignore[arg-type]
    expected = await slow.post("/validate", headers=headers, **kwargs)  # type: ignore[arg-type]

    assert answered.status_code == status
    assert answered.headers["x-request-id"] == "gw-req-2"
    assert _comparable(answered) == _comparable(expected)


@pytest.mark.parametrize("path", ["/jwks", "/.well-known/jwks.json"])
async def test_jwks_fast_path_matches_starlette_and_follows_rotation(
    sqlite_state: KeyturnState, make_client: MakeClient, path: str
) -> None:
    app = build_public_app(sqlite_state)
    assert isinstance(app, GatewayFastPath)
    fast, slow = make_client(app, peer=REMOTE), make_client(app.app, peer=REMOTE)
    headers = {"X-Request-ID": "jwks-1"}

    before = await fast.get(path, headers=headers)
    assert _comparable(before) == _comparable(await slow.get(path, headers=headers))
    await sqlite_state.service.rotate_signing_key()
    after = await fast.get(path, headers=headers)

    assert before.status_code == after.status_code == 200
    assert after.headers["x-request-id"] == "jwks-1"
    assert _comparable(after) == _comparable(await slow.get(path, headers=headers))
    assert len(after.json()["keys"]) == len(before.json()["keys"]) + 1
