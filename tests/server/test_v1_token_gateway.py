"""``POST /v1/token`` on the gateway path: one raw-ASGI endpoint, two dispatchers (issue 19).

`V1TokenEndpoint` is in Starlette's routes and in the exact table the request telemetry
consults first: a token request never enters Starlette's router, and the same request
routed by Starlette (the exact table emptied) gets the same answer from the same object.
The grant's behaviour itself is asserted by ``test_v1*.py``; here the body reader
(`read_params`, `parse_form`) and the DPoP ``htu`` of the request as received.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request

from keyturn.errors import RequestRejectedError
from keyturn.server.app import build_public_app
from keyturn.server.dpop import endpoint_urls
from keyturn.server.gateway.endpoints import V1TokenEndpoint
from keyturn.server.requests import parse_form
from keyturn.server.state import KeyturnState
from tests.server.conftest import REMOTE, MakeClient, OpenState, create_key
from tests.server.test_gateway_routes import _comparable, exact_routes, starlette_only

FORM = "application/x-www-form-urlencoded"


def spy_on_starlette(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths that reach ``app``'s Starlette app (behind the request telemetry)."""
    entered: list[str] = []
    inner = app.app

    async def spy(scope, receive, send):  # type: ignore[no-untyped-def]
        entered.append(scope["path"])
        await inner(scope, receive, send)

    monkeypatch.setattr(app, "app", spy)
    return entered


async def test_token_requests_never_enter_starlettes_router(
    sqlite_state: KeyturnState,
    sqlite_admin: httpx.AsyncClient,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build_public_app(sqlite_state)
    client = make_client(app, peer=REMOTE)
    key = (await create_key(sqlite_admin, scopes=["read"]))["key"]
    entered = spy_on_starlette(app, monkeypatch)
    grant = {"grant_type": "client_credentials"}

    by_basic = await client.post("/v1/token", data=grant, auth=(key, ""))
    by_post = await client.post("/v1/token", data={**grant, "client_secret": key, "scope": "read"})
    by_json = await client.post("/v1/token", json={**grant, "client_secret": key})
    refused = await client.post("/v1/token", data=grant, auth=("kt_wrong_key_0123456789", ""))

    assert [r.status_code for r in (by_basic, by_post, by_json, refused)] == [200, 200, 200, 401]
    assert by_basic.json()["token_type"] == "Bearer"
    assert by_post.json()["scope"] == "read"
    assert by_json.headers["cache-control"] == "no-store"
    assert refused.headers["www-authenticate"] == 'Basic realm="keyturn"'
    assert entered == []  # Starlette's router never ran
    route, endpoint = exact_routes(app).table["POST", "/v1/token"]
    assert isinstance(endpoint, V1TokenEndpoint)
    assert route.path == "/v1/token"


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        pytest.param(b"grant_type=client_credentials", FORM, 401, id="no-credentials"),
        pytest.param(b"grant_type=password", FORM, 400, id="unsupported-grant"),
        pytest.param(b"scope=read", FORM, 400, id="no-grant-type"),
        pytest.param(b"grant_type=refresh_token", FORM, 400, id="no-refresh-token"),
        pytest.param(b"grant_type=a&grant_type=b", FORM, 400, id="repeated"),
        pytest.param(b"grant_type", FORM, 400, id="malformed-form"),
        pytest.param(b"grant_type=%00", FORM, 400, id="nul"),
        pytest.param(b"grant_type=%FF", FORM, 400, id="not-utf8"),
        pytest.param(b"", FORM, 400, id="empty-form"),
        pytest.param(b'{"grant_type": 1}', "application/json", 400, id="json-not-strings"),
        pytest.param(b"[1", "application/json", 400, id="json-malformed"),
        pytest.param(b"grant_type=client_credentials", "text/plain", 415, id="media-type"),
        pytest.param(b"grant_type=client_credentials", None, 415, id="no-media-type"),
        pytest.param(b"a=" + b"x" * 70_000, FORM, 413, id="too-large"),
        pytest.param(
            b"grant_type=client_credentials&client_id=x&client_assertion=y",
            FORM,
            401,
            id="assertion-type-missing",
        ),
    ],
)
async def test_refusals_match_the_same_request_routed_by_starlette(
    sqlite_state: KeyturnState,
    make_client: MakeClient,
    content: bytes,
    content_type: str | None,
    status: int,
) -> None:
    exact = make_client(build_public_app(sqlite_state), peer=REMOTE)
    slow = make_client(starlette_only(build_public_app(sqlite_state)), peer=REMOTE)
    headers = {"X-Request-ID": "token-1"}
    if content_type is not None:
        headers["Content-Type"] = content_type

    answered = await exact.post("/v1/token", content=content, headers=headers)
    expected = await slow.post("/v1/token", content=content, headers=headers)

    assert answered.status_code == status
    assert answered.headers["x-request-id"] == "token-1"
    assert _comparable(answered) == _comparable(expected)


async def test_a_refusal_carries_a_fresh_dpop_nonce_while_nonces_are_on(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, dpop_nonce=True)
    client = make_client(build_public_app(state), peer=REMOTE)

    refused = await client.post("/v1/token", data={"grant_type": "client_credentials"})
    too_large = await client.post(
        "/v1/token", content=b"x" * 70_000, headers={"Content-Type": FORM}
    )

    assert (refused.status_code, too_large.status_code) == (401, 413)
    assert refused.headers.get("dpop-nonce")
    assert too_large.headers.get("dpop-nonce")


def test_parse_form_keeps_blanks_and_refuses_repeats_nul_and_malformed_bodies() -> None:
    assert parse_form(b"") == {}
    assert parse_form(b"a=&b=%C3%A9+x") == {"a": "", "b": "é x"}
    assert parse_form(b"a=%FF") == {"a": "\ufffd"}  # an escape is decoded as parse_qsl does
    for body, message in [
        (b"a=1&a=2", "parameter 'a' is repeated"),
        (b"a=%00", "text may not contain U+0000 (NUL)"),
        (b"a", "the form body is malformed"),
        (b"a=\xff", "the form body is malformed"),
        (b"&".join(b"f%d=1" % i for i in range(101)), "the form body is malformed"),
    ]:
        with pytest.raises(RequestRejectedError) as caught:
            parse_form(body)
        assert (caught.value.status_code, caught.value.message) == (400, message)


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param({"headers": [(b"host", b"kt.test:8443")]}, id="host-header"),
        pytest.param({"scheme": "https", "server": ("10.0.0.1", 443)}, id="default-port"),
        pytest.param({"scheme": "http", "server": ("10.0.0.1", 8080)}, id="other-port"),
        pytest.param({"query_string": b"a=1", "root_path": "/r"}, id="query-and-root-path"),
    ],
)
def test_the_htu_as_received_is_starlettes_request_url(
    sqlite_state: KeyturnState, scope: dict[str, Any]
) -> None:
    whole = {
        "type": "http",
        "method": "POST",
        "path": "/v1/token",
        "headers": [],
        "scheme": "http",
        "server": ("kt.test", 80),
        **scope,
    }
    settings = sqlite_state.settings

    external, received = endpoint_urls(settings, whole, "/v1/token")

    assert external == f"{settings.issuer.rstrip('/')}{settings.url_prefix}/v1/token"
    assert received == str(Request(whole).url.replace(query="", fragment=""))
    assert "a=1" not in received
