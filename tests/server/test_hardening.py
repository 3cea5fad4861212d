"""Errors and limits on every listener: hostile bodies (T-IN), outages, rate limits, guards.

No row here may produce a 500, a 401 for an outage, or a change in the database.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from keyturn.errors import StorageUnavailableError
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.server.requests import MAX_BODY_BYTES
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import metadata
from keyturn.testing import FakeClock

from .conftest import (
    ADMIN_TOKEN,
    IDENTIFIER,
    LEGACY_KEY,
    LOOPBACK,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    create_key,
    legacy_tokens,
    register_legacy_key,
    v1_tokens,
)

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
JSON = {"content-type": "application/json"}


@pytest.fixture
async def state(open_state: OpenState, database_url: str) -> KeyturnState:
    """Keys get refresh tokens (KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS=true), so every
    token route, the refresh grant included, is exercised."""
    return await open_state(database_url, client_credentials_refresh_tokens=True)


@pytest.fixture
async def sqlite_state(open_state: OpenState, sqlite_database_url: str) -> KeyturnState:
    """Like ``state``, on SQLite only."""
    return await open_state(sqlite_database_url, client_credentials_refresh_tokens=True)


PUBLIC_JSON_ROUTES = ["/authenticate", "/refresh", "/validate", "/v1/token", "/v1/revoke"]
ADMIN_JSON_ROUTES = [
    "/register_key",
    "/is_key_registered",
    "/v1/admin/keys",
    "/v1/admin/keys/AAAAAAAAAAAAAAAA/revoke",
    "/v1/admin/keys/AAAAAAAAAAAAAAAA/rotate",
    "/v1/introspect",
]


def problem(status: int, title: str, detail: str, error: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 body as the server writes it."""
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "error": error,
        **extra,
    }


def too_large() -> dict[str, Any]:
    return problem(
        413, "Content Too Large", "the body may be at most 65536 bytes", "payload_too_large"
    )


# -- body size, media type and JSON traps (T-IN-01, -03, -04, -09) -------------------------


@pytest.mark.parametrize("path", PUBLIC_JSON_ROUTES + ADMIN_JSON_ROUTES)
async def test_a_body_over_64_kib_is_413_problem(
    sqlite_state: KeyturnState, make_client: MakeClient, path: str
) -> None:
    """T-IN-01: refused from Content-Length, before the body is read."""
    app = build_public_app(sqlite_state) if path in PUBLIC_JSON_ROUTES else None
    client = make_client(app or build_admin_app(sqlite_state))
    body = json.dumps({"key": "k" * MAX_BODY_BYTES, "identifier": IDENTIFIER})

    response = await client.post(path, content=body, headers=JSON)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == too_large()


@pytest.mark.parametrize("path", ["/authenticate", "/v1/token"])
async def test_a_streamed_body_over_64_kib_is_413_problem(
    sqlite_public: httpx.AsyncClient, path: str
) -> None:
    """Without a Content-Length the cap applies while reading (chunked upload)."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 4096

    response = await sqlite_public.post(path, content=chunks(), headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == too_large()


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/authenticate", "send the body as application/json"),
        ("/validate", "send the body as application/json"),
        ("/v1/token", "send the body as application/x-www-form-urlencoded (or application/json)"),
        ("/v1/revoke", "send the body as application/x-www-form-urlencoded (or application/json)"),
    ],
)
async def test_text_plain_is_415_problem(
    sqlite_public: httpx.AsyncClient, path: str, detail: str
) -> None:
    response = await sqlite_public.post(
        path, content=b'{"key": "k"}', headers={"content-type": "text/plain"}
    )

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == problem(
        415, "Unsupported Media Type", detail, "unsupported_media_type"
    )


@pytest.mark.parametrize("path", ["/register_key", "/v1/admin/keys"])
async def test_text_plain_is_415_on_the_admin_listener(
    sqlite_admin: httpx.AsyncClient, path: str
) -> None:
    response = await sqlite_admin.post(path, content=b"{}", headers={"content-type": "text/plain"})

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


HOSTILE_BODIES = {
    "truncated": (b'{"key": ', JSON),
    "json-array": (b"[1, 2, 3]", JSON),
    "json-string": (b'"str"', JSON),
    "json-null": (b"null", JSON),
    "nan": (b'{"key": NaN, "identifier": NaN, "token": NaN}', JSON),
    "infinity": (b'{"key": -Infinity}', JSON),
    "huge-number": (b'{"key": ' + b"9" * 5000 + b"}", JSON),
    "deep-nesting-1e5": (b"[" * 100_000, JSON),
    "deep-nesting-in-limit": (b'{"key": ' + b"[" * 50_000 + b"]" * 10 + b"}", JSON),
    "lone-surrogate": (
        json.dumps({"key": "\ud800", "identifier": IDENTIFIER, "token": "\udfff"}).encode(),
        JSON,
    ),
    "utf-8-bom": (b'\xef\xbb\xbf{"key": "k"}', JSON),
    "utf-16": (json.dumps({"key": "k"}).encode("utf-16"), JSON),
    "nul-bytes": (json.dumps({"key": "a\x00b", "identifier": "\x00"}).encode(), JSON),
    "one-megabyte-key": (json.dumps({"key": "k" * 1_000_000, "token": "t"}).encode(), JSON),
    "wrong-types": (b'{"key": 1, "identifier": true, "token": [], "name": {}}', JSON),
    "form-garbage": (b"%%%&&&===", {"content-type": "application/x-www-form-urlencoded"}),
    "form-repeated": (
        b"grant_type=client_credentials&grant_type=refresh_token&token=a&token=b",
        {"content-type": "application/x-www-form-urlencoded"},
    ),
    "text-plain": (b"key=value", {"content-type": "text/plain"}),
    "no-content-type": (b"\x00\x01\x02", {}),
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
async def test_hostile_bodies_are_4xx_on_every_json_route(
    sqlite_state: KeyturnState, make_client: MakeClient, name: str
) -> None:
    """T-IN-03/04/05/09: a 4xx, never a 500, and no state change."""
    content, headers = HOSTILE_BODIES[name]
    public = make_client(build_public_app(sqlite_state), peer=REMOTE)
    admin = make_client(build_admin_app(sqlite_state))
    before = await row_counts(sqlite_state)

    statuses = {
        path: (await client.post(path, content=content, headers=headers)).status_code
        for client, paths in ((public, PUBLIC_JSON_ROUTES), (admin, ADMIN_JSON_ROUTES))
        for path in paths
    }

    # /v1/revoke and /v1/introspect answer 200 for a token they do not know (RFC 7009/7662).
    allowed = {"/v1/revoke", "/v1/introspect"}
    assert {
        path: status
        for path, status in statuses.items()
        if not (400 <= status < 500 or (status == 200 and path in allowed))
    } == {}
    assert await row_counts(sqlite_state) == before


async def test_a_lone_surrogate_is_400_empty_object(sqlite_public: httpx.AsyncClient) -> None:
    """T-IN-04: it would otherwise fail later, when the key is encoded for hashing."""
    body = json.dumps({"key": "\ud800", "identifier": IDENTIFIER})

    response = await sqlite_public.post("/authenticate", content=body, headers=JSON)

    assert (response.status_code, response.json()) == (400, {})


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        pytest.param(
            {"key": "k" * 60_000, "identifier": IDENTIFIER},
            {"key": ["Value should have at most 1024 items after validation, not 60000"]},
            id="60-kb-key",
        ),
        pytest.param(
            {"key": LEGACY_KEY, "identifier": "1" * 10_000},
            {"identifier": ["String should have at most 64 characters"]},
            id="10-kb-identifier",
        ),
        pytest.param(
            {"key": LEGACY_KEY, "identifier": IDENTIFIER + "\x00"},
            {"identifier": ["Value error, Not a valid UUID."]},
            id="nul-in-identifier",
        ),
    ],
)
async def test_oversized_fields_are_400_with_messages(
    sqlite_public: httpx.AsyncClient, body: dict[str, Any], messages: dict[str, list[str]]
) -> None:
    """T-IN-09: schema limits, never a database error."""
    response = await sqlite_public.post("/authenticate", json=body)

    assert response.status_code == 400
    assert response.json() == messages


async def test_a_one_megabyte_key_is_413(sqlite_public: httpx.AsyncClient) -> None:
    """T-IN-09: the body cap stops it before JSON parsing."""
    response = await sqlite_public.post(
        "/authenticate", json={"key": "k" * 1_000_000, "identifier": IDENTIFIER}
    )

    assert response.status_code == 413


async def test_too_many_form_fields_is_400(sqlite_public: httpx.AsyncClient) -> None:
    content = "&".join(f"f{n}=v" for n in range(200))

    response = await sqlite_public.post(
        "/v1/token",
        content=content,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "the form body is malformed",
    }


# -- SQL injection (T-IN-08) ---------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE api_keys;--",
    '" OR ""="',
    "\\",
    "%",
    "_",
    "$1",
    "1; DELETE FROM refresh_tokens",
    "kt_' OR 1=1--_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
]


async def row_counts(state: KeyturnState) -> dict[str, int]:
    """Rows per table, straight from the database."""
    counts = {}
    async with state.storage.engine.connect() as conn:
        for table in metadata.sorted_tables:
            result = await conn.execute(sa.select(sa.func.count()).select_from(table))
            counts[table.name] = result.scalar_one()
    return counts


async def test_sql_injection_changes_nothing(
    state: KeyturnState, public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """T-IN-08 in every string field and path parameter: uniform 4xx/200, same rows."""
    await register_legacy_key(admin)
    key = await create_key(admin, identifier=IDENTIFIER)
    before = await row_counts(state)

    seen: set[tuple[str, int]] = set()
    for text in INJECTIONS:
        requests = [
            public.post("/authenticate", json={"key": text, "identifier": IDENTIFIER}),
            public.post("/authenticate", json={"key": LEGACY_KEY, "identifier": text}),
            public.post("/refresh", json={"refresh_token": text, "identifier": IDENTIFIER}),
            public.post("/validate", json={"jwt": text}),
            public.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(text, "")),
            public.post("/v1/token", data={"grant_type": "refresh_token", "refresh_token": text}),
            public.post("/v1/token", data={"grant_type": text, "scope": "read"}),
            public.post("/v1/revoke", data={"token": text}),
            public.get("/v1/validate", params={"scope": "read"}, headers=bearer(text)),
            admin.post("/is_key_registered", json={"key": text}),
            admin.get(f"/v1/admin/keys/{text}"),
            admin.post(f"/v1/admin/keys/{text}/rotate", json={}),
            admin.get("/v1/admin/keys", params={"after": text, "identifier": text}),
            admin.get("/v1/admin/audit", params={"action": text, "target_id": text}),
            admin.post("/v1/introspect", data={"token": text}),
        ]
        for request in requests:
            response = await request
            assert response.status_code < 500, (text, response.request.url, response.text)
            seen.add((response.request.url.path, response.status_code))

    assert await row_counts(state) == before
    assert ("/authenticate", 401) in seen
    assert (
        await public.post(
            "/v1/token", data={"grant_type": "client_credentials"}, auth=(key["key"], "")
        )
    ).status_code == 200


# -- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_unknown_routes_are_404_problem(
    sqlite_state: KeyturnState, make_client: MakeClient, listener: str
) -> None:
    app = build_public_app(sqlite_state) if listener == "public" else build_admin_app(sqlite_state)
    client = make_client(app)

    response = await client.get("/nope/../../etc/passwd")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == problem(
        404, "Not Found", "GET /etc/passwd is not served here", "not_found"
    )


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/authenticate", "POST"),
        ("DELETE", "/v1/token", "POST"),
        ("POST", "/v1/validate", "GET, HEAD"),
        ("PUT", "/.well-known/jwks.json", "GET, HEAD"),
    ],
)
async def test_a_wrong_method_is_405_problem(
    sqlite_public: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await sqlite_public.request(method, path)

    assert response.status_code == 405
    # Starlette joins a set of methods: the order is not stable between runs.
    assert set(response.headers["allow"].split(", ")) == set(allow.split(", "))
    assert response.json() == problem(
        405, "Method Not Allowed", f"{method} {path} is not served here", "method_not_allowed"
    )


# -- storage outages: 503 + Retry-After, never 401 -----------------------------------------


def _dead_storage(kind: str, tmp_path: Path) -> SQLStorage:
    if kind == "postgresql-refused":
        return SQLStorage(create_engine("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2))
    (tmp_path / "not-a-dir").write_text("")
    return SQLStorage(create_engine(f"sqlite:///{tmp_path}/not-a-dir/data/keyturn.db"))


@pytest.fixture(params=["postgresql-refused", "sqlite-unopenable"])
async def outage(
    request: pytest.FixtureRequest,
    sqlite_state: KeyturnState,
    make_client: MakeClient,
    tmp_path: Path,
) -> AsyncIterator[dict[str, str]]:
    """Issue tokens, then swap the state's storage for one that cannot be reached."""
    public = make_client(build_public_app(sqlite_state), peer=REMOTE)
    admin = make_client(build_admin_app(sqlite_state))
    await register_legacy_key(admin)
    key = await create_key(admin, identifier=IDENTIFIER)
    legacy = await legacy_tokens(public)
    v1 = await v1_tokens(public, key["key"])
    live = sqlite_state.storage
    dead = _dead_storage(request.param, tmp_path)
    sqlite_state.storage = sqlite_state.service.storage = dead
    try:
        yield {
            "key": key["key"],
            "key_id": key["record"]["id"],
            "jwt": legacy["jwt"],
            "legacy_refresh": legacy["refresh_token"],
            "access": v1["access_token"],
            "refresh": v1["refresh_token"],
        }
    finally:
        sqlite_state.storage = sqlite_state.service.storage = live
        await dead.close()


async def test_an_outage_is_503_on_the_legacy_token_routes(
    sqlite_public: httpx.AsyncClient, outage: dict[str, str]
) -> None:
    """Never 401: JWThenticator's client throws its credentials away on a 401."""
    responses = [
        await sqlite_public.post(
            "/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
        ),
        await sqlite_public.post(
            "/refresh",
            json={"refresh_token": outage["legacy_refresh"], "identifier": IDENTIFIER},
        ),
    ]

    for response in responses:
        assert response.status_code == 503
        assert response.json() == {}
        assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
async def test_an_outage_is_503_on_the_token_endpoint(
    sqlite_public: httpx.AsyncClient, outage: dict[str, str], grant: str
) -> None:
    form = {"grant_type": grant}
    if grant == "client_credentials":
        form["client_secret"] = outage["key"]
    else:
        form["refresh_token"] = outage["refresh"]

    response = await sqlite_public.post("/v1/token", data=form)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert {k: response.headers[k] for k in NO_STORE} == NO_STORE
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert set(body) == {"error", "error_description"}
    assert outage["key"] not in response.text


async def test_an_outage_is_503_on_revoke_and_admin(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient, outage: dict[str, str]
) -> None:
    revoke = await sqlite_public.post("/v1/revoke", data={"token": outage["refresh"]})
    keys = await sqlite_admin.get("/v1/admin/keys")
    register = await sqlite_admin.post(
        "/register_key", json={"key": "another-key-0123456789", "identifier": IDENTIFIER}
    )
    registered = await sqlite_admin.post("/is_key_registered", json={"key": LEGACY_KEY})

    assert (revoke.status_code, revoke.headers["retry-after"]) == (503, "1")
    assert (keys.status_code, keys.headers["retry-after"]) == (503, "1")
    assert keys.headers["content-type"] == "application/problem+json"
    assert keys.json()["error"] == "temporarily_unavailable"
    assert (register.status_code, register.json()) == (503, {})
    assert (registered.status_code, registered.json()) == (503, {})


async def test_validation_keeps_working_during_an_outage(
    sqlite_public: httpx.AsyncClient, outage: dict[str, str]
) -> None:
    """Tokens are checked in memory; a gateway keeps admitting valid ones."""
    legacy = await sqlite_public.post("/validate", json={"jwt": outage["jwt"]})
    gateway = await sqlite_public.get("/v1/validate", headers=bearer(outage["access"]))

    assert (legacy.status_code, legacy.json()) == (200, {"result": True})
    assert gateway.status_code == 200


async def test_readyz_is_503_while_healthz_stays_200(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient, outage: dict[str, str]
) -> None:
    for client in (sqlite_public, sqlite_admin):
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")

        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "1"
        assert ready.headers["content-type"] == "application/problem+json"
        assert ready.json()["error"] == "temporarily_unavailable"
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


async def test_readyz_is_200_when_the_database_answers(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    for client in (public, admin):
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


async def test_a_failure_after_the_key_lookup_is_503_not_401(
    state: KeyturnState,
    public: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refresh-token write fails after the key was found: retryable, key kept."""
    await register_legacy_key(admin)
    key = await create_key(admin)

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StorageUnavailableError("cannot store the refresh token: the connection was lost")

    monkeypatch.setattr(state.storage.refresh_tokens, "add", unavailable)
    legacy = await public.post("/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER})
    v1 = await public.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=(key["key"], "")
    )

    assert (legacy.status_code, legacy.json(), legacy.headers["retry-after"]) == (503, {}, "1")
    assert (v1.status_code, v1.headers["retry-after"]) == (503, "1")
    assert v1.json() == {
        "error": "temporarily_unavailable",
        "error_description": "cannot store the refresh token: the connection was lost",
    }


# -- rate limits (T-BF-04) -----------------------------------------------------------------


@pytest.fixture
async def limited(open_state: OpenState, database_url: str) -> KeyturnState:
    """A state allowing 2 token requests per key and 3 per address, per minute."""
    return await open_state(database_url, rate_limit_per_key=2, rate_limit_per_address=3)


async def test_legacy_authenticate_is_429_empty_object_then_recovers(
    limited: KeyturnState, make_client: MakeClient, clock: FakeClock
) -> None:
    """429 + Retry-After, never 401 (JWThenticator's client would drop its key)."""
    public = make_client(build_public_app(limited), peer=REMOTE)
    await register_legacy_key(make_client(build_admin_app(limited)))
    body = {"key": LEGACY_KEY, "identifier": IDENTIFIER}

    allowed = [await public.post("/authenticate", json=body) for _ in range(2)]
    refused = await public.post("/authenticate", json=body)
    clock.advance(60)
    again = await public.post("/authenticate", json=body)

    assert [r.status_code for r in allowed] == [200, 200]
    assert (refused.status_code, refused.json()) == (429, {})
    assert refused.headers["retry-after"] == "60"
    assert again.status_code == 200


async def test_a_limited_key_does_not_lock_out_other_keys_or_addresses(
    limited: KeyturnState, make_client: MakeClient
) -> None:
    """Per key across addresses; a legitimate key elsewhere is unaffected."""
    admin = make_client(build_admin_app(limited))
    attacked, other = await create_key(admin), await create_key(admin)
    clients = [
        make_client(build_public_app(limited), peer=(f"198.51.100.{n}", 1000)) for n in range(4)
    ]
    form = {"grant_type": "client_credentials"}

    statuses = [
        (await client.post("/v1/token", data=form, auth=(attacked["key"], ""))).status_code
        for client in clients
    ]
    refused = await clients[3].post("/v1/token", data=form, auth=(attacked["key"], ""))
    unaffected = await clients[3].post("/v1/token", data=form, auth=(other["key"], ""))

    assert statuses == [200, 200, 429, 429]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert {k: refused.headers[k] for k in NO_STORE} == NO_STORE
    assert refused.json() == {
        "error": "rate_limited",
        "error_description": "too many requests; retry later",
    }
    assert unaffected.status_code == 200


async def test_failed_attempts_from_one_address_are_429_not_401(
    limited: KeyturnState, make_client: MakeClient
) -> None:
    """Brute force from one address with ever-new keys hits the per-address limit."""
    public = make_client(build_public_app(limited), peer=REMOTE)

    statuses = [
        (
            await public.post(
                "/authenticate", json={"key": f"guess-{n:04d}-xxxxxxxx", "identifier": IDENTIFIER}
            )
        ).status_code
        for n in range(5)
    ]

    assert statuses == [401, 401, 401, 429, 429]


async def test_x_forwarded_for_does_not_reset_the_address_limit(
    limited: KeyturnState, make_client: MakeClient
) -> None:
    """T-BF-06: the limiter keys on the peer the server saw."""
    public = make_client(build_public_app(limited), peer=REMOTE)

    statuses = [
        (
            await public.post(
                "/refresh",
                json={"refresh_token": f"ktr_guess{n}", "identifier": IDENTIFIER},
                headers={"X-Forwarded-For": f"10.0.0.{n}", "X-Real-IP": f"10.0.0.{n}"},
            )
        ).status_code
        for n in range(5)
    ]

    assert statuses == [401, 401, 401, 429, 429]


# -- T-CACHE-01 ----------------------------------------------------------------------------


async def test_every_token_response_says_no_store(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """RFC 6749 §5.1; the legacy bodies stay unchanged."""
    await register_legacy_key(admin)
    key = await create_key(admin)
    legacy = await legacy_tokens(public)
    v1 = await v1_tokens(public, key["key"])
    responses = {
        "authenticate": await public.post(
            "/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
        ),
        "refresh": await public.post(
            "/refresh", json={"refresh_token": legacy["refresh_token"], "identifier": IDENTIFIER}
        ),
        "client_credentials": await public.post(
            "/v1/token", data={"grant_type": "client_credentials"}, auth=(key["key"], "")
        ),
        "refresh_token": await public.post(
            "/v1/token", data={"grant_type": "refresh_token", "refresh_token": v1["refresh_token"]}
        ),
        "token-error": await public.post("/v1/token", data={"grant_type": "nope"}),
        "revoke": await public.post("/v1/revoke", data={"token": "x"}),
        "admin-create": await admin.post("/v1/admin/keys", json={}),
        "admin-rotate": await admin.post(f"/v1/admin/keys/{key['record']['id']}/rotate"),
    }

    assert {
        name: {k: response.headers.get(k) for k in NO_STORE} for name, response in responses.items()
    } == dict.fromkeys(responses, NO_STORE)
    assert responses["authenticate"].status_code == 200


# -- the admin guard (T-OPS-03) ------------------------------------------------------------

ADMIN_401 = problem(
    401, "Unauthorized", "the admin API needs the admin bearer token", "unauthorized"
)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="plain"),
        pytest.param({"X-Forwarded-For": "127.0.0.1"}, id="x-forwarded-for"),
        pytest.param({"X-Real-IP": "127.0.0.1"}, id="x-real-ip"),
        pytest.param({"Forwarded": "for=127.0.0.1"}, id="forwarded"),
        pytest.param({"Host": "localhost"}, id="host-localhost"),
    ],
)
async def test_the_admin_listener_refuses_remote_peers(
    sqlite_state: KeyturnState, make_client: MakeClient, headers: dict[str, str]
) -> None:
    admin = make_client(build_admin_app(sqlite_state), peer=REMOTE)
    before = await row_counts(sqlite_state)

    responses = [
        await admin.get("/v1/admin/keys", headers=headers),
        await admin.post(
            "/register_key", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}, headers=headers
        ),
        await admin.get("/openapi.json", headers=headers),
    ]

    for response in responses:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="keyturn-admin"'
        assert response.json() == ADMIN_401
    assert await row_counts(sqlite_state) == before


async def test_admin_health_checks_are_open_to_remote_peers(
    sqlite_state: KeyturnState, make_client: MakeClient
) -> None:
    admin = make_client(build_admin_app(sqlite_state), peer=REMOTE)

    assert (await admin.get("/healthz")).status_code == 200
    assert (await admin.get("/readyz")).status_code == 200
    health = await admin.get("/health")  # JWThenticator's internal API had it (probes)
    assert (health.status_code, health.json()) == (200, {"result": True})


@pytest.mark.parametrize(
    "case",
    [
        pytest.param((LOOPBACK, None, 401), id="loopback-without-token"),
        pytest.param((LOOPBACK, "Bearer wrong", 401), id="loopback-wrong-token"),
        pytest.param((LOOPBACK, f"Basic {ADMIN_TOKEN}", 401), id="loopback-basic-scheme"),
        pytest.param((LOOPBACK, f"Bearer {ADMIN_TOKEN}", 200), id="loopback-right-token"),
        pytest.param((REMOTE, f"bearer {ADMIN_TOKEN}", 200), id="remote-right-token"),
        pytest.param((REMOTE, f"Bearer {ADMIN_TOKEN}x", 401), id="remote-longer-token"),
    ],
)
async def test_a_configured_admin_token_is_required_even_from_loopback(
    open_state: OpenState,
    sqlite_database_url: str,
    make_client: MakeClient,
    case: tuple[tuple[str, int], str | None, int],
) -> None:
    peer, authorization, status = case
    state = await open_state(sqlite_database_url, admin_token=ADMIN_TOKEN)
    admin = make_client(build_admin_app(state), peer=peer)
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await admin.get("/v1/admin/keys", headers=headers)

    assert response.status_code == status
    if status == 401:
        assert response.json() == ADMIN_401
