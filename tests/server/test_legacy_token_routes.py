"""``POST /authenticate`` and ``POST /refresh``: one endpoint, by the exact router or Starlette.

Each request goes to the public app (its telemetry asks `ExactRoutes` first) and to a public
app whose exact table is empty (Starlette's router hands the request to the same kind of
endpoint); the two responses must be the same bytes. A spy on the Starlette app behind
the telemetry tells which requests reached Starlette's router.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.server.gateway.router import ExactRoutes
from keyturn.server.logs import sane_request_id
from keyturn.service import TokenPair
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage

from .conftest import (
    IDENTIFIER,
    LEGACY_KEY,
    REMOTE,
    OpenState,
)
from .test_metrics import requests, scrape

AUTH = {"key": LEGACY_KEY, "identifier": IDENTIFIER}
GENERATED = re.compile(r"[0-9a-f]{32}")
BASE_URL = "http://kt.test"
Call = tuple[str, str, dict[str, Any]]


@dataclass
class Paths:
    """The public app seen two ways, and what happened behind it."""

    fast: httpx.AsyncClient  # the public app: the exact router in front of Starlette's
    slow: httpx.AsyncClient  # a public app that routes everything through Starlette's
    refresh_token: str
    entered: list[str] = field(default_factory=list)  # paths the exact router passed on
    calls: list[Call] = field(default_factory=list)  # service calls, secret and arguments
    rate_hits: list[str] = field(default_factory=list)  # rate-limit buckets charged


OpenPaths = Callable[..., Awaitable[Paths]]


@pytest.fixture
async def open_paths(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenPaths]:
    """Open `Paths` over a state; their clients are closed at teardown."""
    clients: list[httpx.AsyncClient] = []

    async def open_(state: KeyturnState, *, fixed_pair: bool = True, **transport: Any) -> Paths:
        """Register `LEGACY_KEY`, and record the service calls and rate-limit hits of both paths.

        With ``fixed_pair`` the service answers `LEGACY_KEY` and its refresh token with one
        fixed `TokenPair`, so successful responses can be compared byte for byte; any other
        secret goes to the real service. ``transport`` goes to `httpx.ASGITransport`.
        """
        await state.service.register_key(LEGACY_KEY, IDENTIFIER)
        pair = await state.service.authenticate(LEGACY_KEY, identifier=IDENTIFIER, rotating=False)
        assert pair.refresh_token is not None
        app, slow_app = build_public_app(state), build_public_app(state)
        exact, slow_exact = app.exact, slow_app.exact  # type: ignore[attr-defined]
        assert isinstance(exact, ExactRoutes)
        assert isinstance(slow_exact, ExactRoutes)
        slow_exact.table.clear()
        inner = app.app  # type: ignore[attr-defined]

        def client(asgi: Any) -> httpx.AsyncClient:
            over = httpx.ASGITransport(app=asgi, client=REMOTE, **transport)
            clients.append(httpx.AsyncClient(transport=over, base_url=BASE_URL))
            return clients[-1]

        paths = Paths(client(app), client(slow_app), pair.refresh_token)

        async def spy(scope: Any, receive: Any, send: Any) -> None:
            paths.entered.append(scope["path"])
            await inner(scope, receive, send)

        app.app = spy  # type: ignore[attr-defined]
        service, limiter = state.service, state.limiter
        real_authenticate, real_refresh = service.authenticate, service.refresh
        real_hit = limiter.hit

        async def authenticate(key: str, **kwargs: Any) -> TokenPair:
            paths.calls.append(("authenticate", key, kwargs))
            if fixed_pair and key == LEGACY_KEY:
                return pair
            return await real_authenticate(key, **kwargs)

        async def refresh(token: str, **kwargs: Any) -> TokenPair:
            paths.calls.append(("refresh", token, kwargs))
            if fixed_pair and token == paths.refresh_token:
                return pair
            return await real_refresh(token, **kwargs)

        async def hit(bucket: str, **kwargs: Any) -> int | None:
            paths.rate_hits.append(bucket)
            return await real_hit(bucket, **kwargs)

        monkeypatch.setattr(service, "authenticate", authenticate)
        monkeypatch.setattr(service, "refresh", refresh)
        monkeypatch.setattr(limiter, "hit", hit)
        return paths

    try:
        yield open_
    finally:
        for opened in clients:
            await opened.aclose()


@pytest.fixture
async def paths(sqlite_state: KeyturnState, open_paths: OpenPaths) -> Paths:
    """`Paths` over the SQLite state, with the fixed token pair."""
    return await open_paths(sqlite_state)


def well_formed(paths: Paths, route: str) -> dict[str, str]:
    """A body the routes accept: `AUTH`, or the fixed pair's refresh token."""
    if route.endswith("/authenticate"):
        return AUTH
    return {"refresh_token": paths.refresh_token, "identifier": IDENTIFIER}


def _request(body: object) -> dict[str, Any]:
    """httpx arguments: bytes as they are, a tuple of bytes streamed in chunks, else JSON."""
    if isinstance(body, bytes):
        return {"content": body}
    if isinstance(body, tuple):

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in body:
                yield chunk

        return {"content": chunks()}
    return {"json": body}


async def post_both(
    paths: Paths, route: str, body: object, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, httpx.Response]:
    """The same request by the exact router, then by Starlette's; asserts the same answer.

    The ``X-Request-ID`` is compared only when the request gave a sane one (else each
    side made its own); the ``Date`` header is left out.
    """
    fast = await paths.fast.post(route, headers=headers, **_request(body))
    slow = await paths.slow.post(route, headers=headers, **_request(body))
    sent = (headers or {}).get("X-Request-ID")
    given = sent is not None and sane_request_id(sent.encode()) == sent.encode()
    ignored = {"date"} if given else {"date", "x-request-id"}

    def wire(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
        kept = [(k, v) for k, v in response.headers.multi_items() if k not in ignored]
        return response.status_code, kept, response.content

    assert wire(fast) == wire(slow)
    if not given:
        assert GENERATED.fullmatch(fast.headers["x-request-id"])
        assert GENERATED.fullmatch(slow.headers["x-request-id"])
    return fast, slow


@pytest.mark.parametrize(
    ("route", "body", "headers", "status"),
    [
        pytest.param("/authenticate", AUTH, None, 200, id="authenticate"),
        pytest.param("/refresh", "refresh", None, 200, id="refresh"),
        pytest.param(
            "/authenticate", {**AUTH, "key": "not-a-registered-key-012345"}, None, 401, id="bad-key"
        ),
        pytest.param(
            "/refresh",
            {"refresh_token": "not-a-refresh-token", "identifier": IDENTIFIER},
            None,
            401,
            id="bad-refresh-token",
        ),
        pytest.param("/authenticate", AUTH, {"X-Request-ID": "gw-42"}, 200, id="request-id"),
        pytest.param(
            "/authenticate", AUTH, {"X-Request-ID": "bad id\t"}, 200, id="insane-request-id"
        ),
        pytest.param("/authenticate", json.dumps(AUTH).encode(), None, 200, id="no-content-type"),
        pytest.param(
            "/authenticate",
            AUTH,
            {"Content-Type": "Application/JSON; charset=utf-8"},
            200,
            id="json-with-charset",
        ),
        pytest.param(
            "/authenticate",
            {**AUTH, "identifier": IDENTIFIER.upper()},
            None,
            200,
            id="identifier-canonicalised",
        ),
        pytest.param(
            "/authenticate",
            (json.dumps(AUTH).encode()[:10], json.dumps(AUTH).encode()[10:]),
            None,
            200,
            id="chunked-body",
        ),
    ],
)
async def test_a_well_formed_request_is_answered_by_the_exact_router_as_by_starlette(
    paths: Paths, route: str, body: object, headers: dict[str, str] | None, status: int
) -> None:
    """The same response, service call and rate-limit hits; Starlette never entered."""
    if body == "refresh":
        body = well_formed(paths, route)

    fast, slow = await post_both(paths, route, body, headers)

    assert fast.status_code == status
    assert paths.entered == []
    half = len(paths.rate_hits) // 2  # address and key buckets, or address only (refresh)
    assert half == (2 if route == "/authenticate" else 1)
    assert paths.rate_hits[:half] == paths.rate_hits[half:]
    fast_call, slow_call = paths.calls
    assert fast_call[2].pop("request_id") == fast.headers["x-request-id"]
    assert slow_call[2].pop("request_id") == slow.headers["x-request-id"]
    assert fast_call == slow_call


@pytest.mark.parametrize(
    ("route", "body", "headers", "status"),
    [
        pytest.param("/authenticate", {**AUTH, "scope": "x"}, None, 400, id="unknown-field"),
        pytest.param("/authenticate", {"key": LEGACY_KEY}, None, 400, id="missing-field"),
        pytest.param("/authenticate", {**AUTH, "identifier": "nope"}, None, 400, id="bad-uuid"),
        pytest.param("/authenticate", [1, 2], None, 400, id="not-an-object"),
        pytest.param("/authenticate", b'{"key": "k",', None, 400, id="bad-json"),
        pytest.param("/authenticate", b'{"key": NaN}', None, 400, id="json-constant"),
        pytest.param("/authenticate", b"\xff\xfe", None, 400, id="not-utf8"),
        pytest.param("/authenticate", b"", None, 400, id="empty-body"),
        pytest.param(
            "/authenticate",
            json.dumps(AUTH).encode(),
            {"Content-Type": "text/plain"},
            415,
            id="wrong-content-type",
        ),
        pytest.param(
            "/authenticate",
            json.dumps(AUTH).encode(),
            {"Content-Type": "application/vnd.api+json"},
            200,
            id="other-json-type",
        ),
        pytest.param("/authenticate", {**AUTH, "key": "k" * 70_000}, None, 413, id="too-large"),
        pytest.param(
            "/authenticate", (b" " * 40_000, b" " * 40_000), None, 413, id="too-large-streamed"
        ),
        pytest.param(
            "/refresh",
            {"refresh_token": "r", "identifier": IDENTIFIER, "x": 1},
            None,
            400,
            id="refresh-unknown-field",
        ),
    ],
)
async def test_a_refused_body_is_answered_before_any_rate_limit_hit_or_service_call(
    paths: Paths, route: str, body: object, headers: dict[str, str] | None, status: int
) -> None:
    """The same answer both ways; nothing was charged or called for a refused body."""
    first = await paths.fast.post(route, json=well_formed(paths, route))
    assert (first.status_code, paths.entered) == (200, [])  # the exact router takes the route
    paths.calls.clear()
    paths.rate_hits.clear()

    fast, _ = await post_both(paths, route, body, headers)

    assert fast.status_code == status
    assert paths.entered == []
    if status >= 400:  # refused before any rate-limit hit or service call, on both paths
        assert (paths.calls, paths.rate_hits) == ([], [])


async def test_a_rate_limited_request_is_answered_as_starlette_would(
    open_state: OpenState, sqlite_database_url: str, open_paths: OpenPaths
) -> None:
    """429 ``{}`` with the same ``Retry-After``, by the exact router."""
    state = await open_state(sqlite_database_url, rate_limit_per_address=1)
    paths = await open_paths(state)
    assert (await paths.fast.post("/authenticate", json=AUTH)).status_code == 200

    fast, _ = await post_both(paths, "/authenticate", AUTH)

    assert (fast.status_code, fast.json(), fast.headers["retry-after"]) == (429, {}, "60")
    assert paths.entered == []


@pytest.mark.parametrize("route", ["/authenticate", "/refresh"])
async def test_a_storage_outage_is_answered_as_starlette_would(
    sqlite_state: KeyturnState, open_paths: OpenPaths, tmp_path: Path, route: str
) -> None:
    """503 ``{}`` + ``Retry-After``, never 401, by the exact router."""
    paths = await open_paths(sqlite_state, fixed_pair=False)
    (tmp_path / "not-a-dir").write_text("")
    dead = SQLStorage(create_engine(f"sqlite:///{tmp_path}/not-a-dir/k.db"))
    live = sqlite_state.storage
    sqlite_state.storage = sqlite_state.service.storage = dead
    try:
        fast, _ = await post_both(paths, route, well_formed(paths, route))
    finally:
        sqlite_state.storage = sqlite_state.service.storage = live
        await dead.close()

    assert (fast.status_code, fast.json(), fast.headers["retry-after"]) == (503, {}, "1")
    assert paths.entered == []


async def test_an_unexpected_error_is_the_same_500_problem(
    sqlite_state: KeyturnState,
    open_paths: OpenPaths,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Never a traceback to the client: the problem document Starlette's handler sends."""
    paths = await open_paths(sqlite_state, raise_app_exceptions=False)

    async def broken(key: str, **kwargs: Any) -> TokenPair:
        raise RuntimeError(key)

    monkeypatch.setattr(sqlite_state.service, "authenticate", broken)

    with caplog.at_level(logging.ERROR, logger="keyturn.server"):
        fast, _ = await post_both(paths, "/authenticate", AUTH, {"X-Request-ID": "boom-1"})

    assert fast.status_code == 500
    assert fast.json()["error"] == "server_error"
    assert LEGACY_KEY not in fast.text
    assert paths.entered == []
    assert [r.getMessage() for r in caplog.records if r.name == "keyturn.server"] == [
        "unhandled error on POST /authenticate: RuntimeError"
    ] * 2


async def test_the_exact_router_counts_logs_and_binds_each_request(
    sqlite_state: KeyturnState, open_paths: OpenPaths, caplog: pytest.LogCaptureFixture
) -> None:
    """Counted under the route template and status, the same INFO access line, the id bound."""
    paths = await open_paths(sqlite_state)
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_admin_app(sqlite_state)), base_url=BASE_URL
    )
    calls = [
        ("/authenticate", AUTH),
        ("/refresh", {"refresh_token": "x", "identifier": IDENTIFIER}),
    ]
    structlog.contextvars.clear_contextvars()
    before = await scrape(admin)
    with caplog.at_level(logging.INFO, logger="keyturn.access"):
        answers = [await paths.fast.post(route, json=body) for route, body in calls]
        bound = structlog.contextvars.get_contextvars().get("request_id")
        fast_lines = access_lines(caplog)
        caplog.clear()
        for route, body in calls:
            await paths.slow.post(route, json=body)
        slow_lines = access_lines(caplog)
    after = await scrape(admin)
    await admin.aclose()

    assert [answer.status_code for answer in answers] == [200, 401]
    assert paths.entered == []
    assert bound == answers[-1].headers["x-request-id"]  # for the service's log lines
    for route, status in (("/authenticate", "200"), ("/refresh", "401")):
        counted = requests(after, route, status, "POST") - requests(before, route, status, "POST")
        assert counted == 2  # the exact router's and Starlette's
    assert (
        fast_lines
        == slow_lines
        == [
            (logging.INFO, "public", "POST", "/authenticate", 200),
            (logging.INFO, "public", "POST", "/refresh", 401),
        ]
    )


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[object, ...]]:
    """The access lines captured: level and fields (the duration checked, then left out)."""
    lines = []
    for record in caplog.records:
        if record.name == "keyturn.access":
            fields = vars(record)
            assert isinstance(fields["duration_ms"], float)
            assert "request_id" not in fields  # it comes from the bound context
            lines.append(
                (
                    record.levelno,
                    *(fields[name] for name in ("listener", "method", "route", "status")),
                )
            )
    return lines


async def test_a_url_prefix_moves_the_exact_routes_with_the_routes(
    open_state: OpenState, sqlite_database_url: str, open_paths: OpenPaths
) -> None:
    """``/auth/authenticate`` is answered here; ``/authenticate`` is Starlette's 404."""
    state = await open_state(sqlite_database_url, url_prefix="/auth")
    paths = await open_paths(state)

    fast, _ = await post_both(paths, "/auth/authenticate", AUTH)
    unprefixed, _ = await post_both(paths, "/authenticate", AUTH)

    assert (fast.status_code, unprefixed.status_code) == (200, 404)
    assert paths.entered == ["/authenticate"]
