"""JWThenticator's REST API, exactly as its client expects it.

See ``docs/migrate-from-jwthenticator.md``.

Where JWThenticator crashed (500) Keyturn answers 401; everything else keeps its shape.
"""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest

from keyturn.core.tokens import peek_unverified_claims
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock
from tests.security.forge import forge

from .conftest import (
    AUDIENCE,
    IDENTIFIER,
    ISSUER,
    LEGACY_KEY,
    OTHER_IDENTIFIER,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    create_key,
    legacy_tokens,
    register_legacy_key,
    resign,
)

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def wire(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Everything a client can observe about a response but its own request id (T-BF-01)."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]
    return response.status_code, response.content, headers


# -- /authenticate -------------------------------------------------------------------------


async def test_authenticate_returns_exactly_jwt_and_refresh_token(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register_legacy_key(admin)

    response = await public.post(
        "/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"jwt", "refresh_token"}
    assert body["jwt"].count(".") == 2
    assert body["refresh_token"].startswith("ktr_")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_authenticated_jwt_passes_validate(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register_legacy_key(admin)
    tokens = await legacy_tokens(public)

    response = await public.post("/validate", json={"jwt": tokens["jwt"]})

    assert response.status_code == 200
    assert response.json() == {"result": True}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{'key': 'a'}", id="single-quotes"),
        pytest.param(b'{"key": "a",}', id="trailing-comma"),
        pytest.param(b"\xff\xfe{}", id="not-utf-8"),
        pytest.param(b'{"key": NaN, "identifier": "x"}', id="nan"),
        pytest.param(b'{"key": Infinity}', id="infinity"),
        pytest.param(b"[" * 30_000 + b"]" * 30_000, id="deep-nesting"),
        pytest.param(b"[" * 60_000, id="deep-nesting-unclosed"),
        pytest.param(b'{"key": "\\ud800", "identifier": "x"', id="lone-surrogate-truncated"),
        pytest.param(b'{"key": ' + b"1" * 5000 + b"}", id="huge-number"),
    ],
)
async def test_authenticate_bad_json_is_400_empty_object(
    sqlite_public: httpx.AsyncClient, content: bytes
) -> None:
    response = await sqlite_public.post(
        "/authenticate", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == {}


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        pytest.param(
            {"key": LEGACY_KEY},
            {"identifier": ["Missing data for required field."]},
            id="missing-identifier",
        ),
        pytest.param(
            {},
            {
                "key": ["Missing data for required field."],
                "identifier": ["Missing data for required field."],
            },
            id="missing-both",
        ),
        pytest.param(
            {"key": LEGACY_KEY, "identifier": IDENTIFIER, "sub": "admin"},
            {"sub": ["Unknown field."]},
            id="unknown-field",
        ),
        pytest.param(
            {"key": LEGACY_KEY, "identifier": "not-a-uuid"},
            {"identifier": ["Value error, Not a valid UUID."]},
            id="identifier-not-uuid",
        ),
        pytest.param(
            [{"key": LEGACY_KEY, "identifier": IDENTIFIER}],
            {"_schema": ["Invalid input type."]},
            id="json-array",
        ),
        pytest.param("key", {"_schema": ["Invalid input type."]}, id="json-string"),
        pytest.param(None, {"_schema": ["Invalid input type."]}, id="json-null"),
    ],
)
async def test_authenticate_field_errors_are_400_with_messages(
    sqlite_public: httpx.AsyncClient, body: Any, messages: dict[str, list[str]]
) -> None:
    response = await sqlite_public.post(
        "/authenticate", content=json.dumps(body), headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == messages


async def test_bad_credentials_get_byte_identical_401s(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, clock: FakeClock
) -> None:
    """T-BF-01: unknown, malformed, wrong-secret, wrong-identifier, revoked, expired keys."""
    await register_legacy_key(admin)
    generated = (await create_key(admin, identifier=IDENTIFIER))["key"]
    revoked = await create_key(admin, identifier=IDENTIFIER)
    await admin.post(f"/v1/admin/keys/{revoked['record']['id']}/revoke", json={})
    prefix, key_id, secret = generated.split("_", 2)
    attempts = [
        (LEGACY_KEY + "x", IDENTIFIER),
        ("unknown-key-" + "a" * 30, IDENTIFIER),
        (f"{prefix}_{key_id}_{secret[::-1]}", IDENTIFIER),
        (f"{prefix}_{'A' * 16}_{secret}", IDENTIFIER),
        ("kt_", IDENTIFIER),
        (LEGACY_KEY, OTHER_IDENTIFIER),
        (generated, OTHER_IDENTIFIER),
        (revoked["key"], IDENTIFIER),
    ]
    attempts += [(f"random-{n:04d}-" + "z" * 20, IDENTIFIER) for n in range(20)]

    responses = [
        await public.post("/authenticate", json={"key": key, "identifier": identifier})
        for key, identifier in attempts
    ]
    clock.advance(days=121)  # past the legacy key lifetime (120 days)
    responses.append(
        await public.post("/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER})
    )

    first = wire(responses[0])
    assert first == (401, b"{}", [("content-length", "2"), ("content-type", "application/json")])
    assert [wire(r) for r in responses] == [first] * len(responses)


async def test_issued_iss_ignores_the_host_header(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """T-AUD-05: ``iss`` is the configured issuer, whatever the request says."""
    await register_legacy_key(admin)

    response = await public.post(
        "/authenticate",
        json={"key": LEGACY_KEY, "identifier": IDENTIFIER},
        headers={"Host": "evil", "X-Forwarded-Host": "evil", "Forwarded": "host=evil"},
    )

    claims = peek_unverified_claims(response.json()["jwt"])[1]
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)


async def test_identifier_is_compared_in_canonical_form(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register_legacy_key(admin)

    response = await public.post(
        "/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER.upper()}
    )

    assert response.status_code == 200


# -- /refresh ------------------------------------------------------------------------------


async def test_legacy_refresh_returns_only_jwt_and_is_reusable(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """T-RT-04: JWThenticator's client keeps using its first refresh token."""
    await register_legacy_key(admin)
    tokens = await legacy_tokens(public)
    body = {"refresh_token": tokens["refresh_token"], "identifier": IDENTIFIER}

    responses = [await public.post("/refresh", json=body) for _ in range(3)]

    for response in responses:
        assert response.status_code == 200
        assert list(response.json()) == ["jwt"]
        assert {k: response.headers[k] for k in NO_STORE} == NO_STORE
        valid = await public.post("/validate", json={"jwt": response.json()["jwt"]})
        assert valid.json() == {"result": True}


async def test_legacy_refresh_failures_are_401_empty_object(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """Wrong identifier (T-RT-06), access JWT as refresh token (T-TYP-03), forged, revoked key."""
    await register_legacy_key(admin)
    tokens = await legacy_tokens(public)
    key_id = (await admin.get("/v1/admin/keys")).json()["keys"][0]["id"]
    refresh_token = tokens["refresh_token"]
    tampered = refresh_token[:-1] + ("x" if refresh_token[-1] != "x" else "y")
    attempts = [
        {"refresh_token": tokens["refresh_token"], "identifier": OTHER_IDENTIFIER},
        {"refresh_token": tokens["jwt"], "identifier": IDENTIFIER},
        {"refresh_token": tampered, "identifier": IDENTIFIER},
        {"refresh_token": "ktr_" + "A" * 60, "identifier": IDENTIFIER},
        {"refresh_token": "garbage", "identifier": IDENTIFIER},
    ]
    responses = [await public.post("/refresh", json=body) for body in attempts]
    await admin.post(f"/v1/admin/keys/{key_id}/revoke", json={"reason": "test"})
    responses.append(
        await public.post(
            "/refresh", json={"refresh_token": tokens["refresh_token"], "identifier": IDENTIFIER}
        )
    )

    assert [(r.status_code, r.content) for r in responses] == [(401, b"{}")] * len(responses)


async def test_legacy_refresh_bad_body_is_400(sqlite_public: httpx.AsyncClient) -> None:
    response = await sqlite_public.post("/refresh", json={"refresh_token": "x"})

    assert response.status_code == 400
    assert response.json() == {"identifier": ["Missing data for required field."]}


# -- /validate and /validate_request -------------------------------------------------------


def _hostile_tokens(valid: str) -> dict[str, str]:
    """Tokens that crashed JWThenticator (500) or must simply fail, signed for real."""
    header, _, _ = valid.partition(".")
    issued_at = peek_unverified_claims(valid)[1]["iat"]
    return {
        "wrong-audience": resign(valid, aud="other-api"),
        "wrong-issuer": resign(valid, iss="https://kt.evil"),
        "nbf-in-future": resign(valid, nbf=issued_at + 3600),
        "expired": resign(valid, exp=1_000_000_000, iat=999_999_000),
        "no-exp": resign(valid, drop=("exp",)),
        "exp-as-string": resign(valid, exp="9999999999"),
        "garbage": "garbage",
        "two-segments": "a.b",
        "empty-signature": valid.rsplit(".", 1)[0] + ".",
        "flipped-signature": valid[:-3] + ("AAA" if not valid.endswith("AAA") else "BBB"),
        "alg-none": forge({"alg": "none", "typ": "at+jwt"}, {"sub": "key:x"}, b""),
        "hs256": forge({"alg": "HS256", "kid": "x", "typ": "at+jwt"}, {"sub": "x"}, b"s" * 32),
        "json-array-header": forge([1], {"sub": "x"}, b"s"),
        "header-only": header,
        "huge": "a" * 4000 + "." + "b" * 4000 + "." + "c" * 100,
    }


HOSTILE = [
    "wrong-audience",
    "wrong-issuer",
    "nbf-in-future",
    "expired",
    "no-exp",
    "exp-as-string",
    "garbage",
    "two-segments",
    "empty-signature",
    "flipped-signature",
    "alg-none",
    "hs256",
    "json-array-header",
    "header-only",
    "huge",
]


@pytest.fixture
async def forged(forging_state: KeyturnState, make_client: MakeClient) -> dict[str, str]:
    """Hostile tokens derived from a valid one issued by ``forging_state``."""
    admin = make_client(build_admin_app(forging_state))
    public = make_client(build_public_app(forging_state), peer=REMOTE)
    await register_legacy_key(admin)
    tokens = await legacy_tokens(public)
    hostile = _hostile_tokens(tokens["jwt"])
    assert list(hostile) == HOSTILE
    return {"valid": tokens["jwt"], **hostile}


@pytest.mark.parametrize("name", HOSTILE)
async def test_validate_answers_401_for_invalid_tokens(
    forging_state: KeyturnState, make_client: MakeClient, forged: dict[str, str], name: str
) -> None:
    public = make_client(build_public_app(forging_state), peer=REMOTE)
    assert (await public.post("/validate", json={"jwt": forged["valid"]})).status_code == 200

    response = await public.post("/validate", json={"jwt": forged[name]})

    assert (response.status_code, response.content) == (401, b"{}")


@pytest.mark.parametrize("name", HOSTILE)
async def test_validate_request_answers_401_invalid_token(
    forging_state: KeyturnState, make_client: MakeClient, forged: dict[str, str], name: str
) -> None:
    public = make_client(build_public_app(forging_state), peer=REMOTE)

    response = await public.get("/validate_request", headers=bearer(forged[name]))

    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="keyturn", error="invalid_token", error_description="'
    )


async def test_validate_request_accepts_a_valid_bearer(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await register_legacy_key(admin)
    tokens = await legacy_tokens(public)

    response = await public.get("/validate_request", headers=bearer(tokens["jwt"]))

    assert response.status_code == 200
    assert response.json() == {}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-without-token"),
        pytest.param({"Authorization": "Bearer a b"}, id="two-tokens"),
    ],
)
async def test_validate_request_without_a_bearer_is_401_bare_challenge(
    sqlite_public: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """RFC 6750 §3.1: no error code when the request carried no usable credentials."""
    response = await sqlite_public.get("/validate_request", headers=headers)

    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["www-authenticate"] == 'Bearer realm="keyturn"'


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        pytest.param(
            {"token": "x"},
            {"jwt": ["Missing data for required field."], "token": ["Unknown field."]},
            id="wrong-field",
        ),
        pytest.param(
            {"jwt": "a" * 20_000},
            {"jwt": ["Value should have at most 8192 items after validation, not 20000"]},
            id="over-8-kib",
        ),
        pytest.param({"jwt": 1}, {"jwt": ["Input should be a valid string"]}, id="number"),
    ],
)
async def test_validate_bad_body_is_400(
    sqlite_public: httpx.AsyncClient, body: dict[str, Any], messages: dict[str, list[str]]
) -> None:
    response = await sqlite_public.post("/validate", json=body)

    assert response.status_code == 400
    assert response.json() == messages


# -- health and keys -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/health"])
async def test_health_routes_answer_result_true(
    sqlite_public: httpx.AsyncClient, path: str
) -> None:
    response = await sqlite_public.get(path)

    assert response.status_code == 200
    assert response.json() == {"result": True}


async def test_jwks_lists_the_public_signing_keys(
    sqlite_state: KeyturnState, sqlite_public: httpx.AsyncClient
) -> None:
    response = await sqlite_public.get("/jwks")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "max-age=300"
    assert response.json() == sqlite_state.service.jwks()
    [key] = response.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["alg"], key["use"]) == ("ES256", "sig")


# -- the internal API: /register_key and /is_key_registered --------------------------------


async def test_register_key_is_201_result_true(admin: httpx.AsyncClient) -> None:
    response = await admin.post("/register_key", json={"key": LEGACY_KEY, "identifier": IDENTIFIER})

    assert response.status_code == 201
    assert response.json() == {"result": True}


async def test_registering_again_renews_the_expiry(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, clock: FakeClock
) -> None:
    await register_legacy_key(admin)
    clock.advance(days=100)
    await register_legacy_key(admin)
    clock.advance(days=100)  # 200 days after the first registration, 100 after the second

    response = await public.post(
        "/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )

    assert response.status_code == 200


async def test_registering_a_key_to_another_identifier_is_409(admin: httpx.AsyncClient) -> None:
    """T-AZ-07: never a silent rebinding."""
    await register_legacy_key(admin)

    response = await admin.post(
        "/register_key", json={"key": LEGACY_KEY, "identifier": OTHER_IDENTIFIER}
    )

    assert response.status_code == 409
    assert set(response.json()) == {"result", "message"}
    assert response.json()["result"] is False
    assert LEGACY_KEY not in response.text


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        pytest.param({"key": LEGACY_KEY}, {"identifier": ["Missing data for required field."]}),
        pytest.param(
            {"key": LEGACY_KEY, "identifier": IDENTIFIER, "expires_at": 1},
            {"expires_at": ["Unknown field."]},
        ),
    ],
)
async def test_register_key_bad_body_is_400(
    sqlite_admin: httpx.AsyncClient, body: dict[str, Any], messages: dict[str, list[str]]
) -> None:
    response = await sqlite_admin.post("/register_key", json=body)

    assert response.status_code == 400
    assert response.json() == messages


async def test_is_key_registered_tells_registered_from_unknown(admin: httpx.AsyncClient) -> None:
    await register_legacy_key(admin)

    known = await admin.post("/is_key_registered", json={"key": LEGACY_KEY})
    unknown = await admin.post("/is_key_registered", json={"key": LEGACY_KEY + "x"})
    malformed = await admin.post("/is_key_registered", json={"key": "kt_bad"})

    assert (known.status_code, known.json()) == (200, {"result": True})
    assert (unknown.status_code, unknown.json()) == (200, {"result": False})
    assert (malformed.status_code, malformed.json()) == (200, {"result": False})


# -- which listener serves what (T-OPS-01), URL_PREFIX, DISABLE_* ---------------------------

PROBLEM_404 = {"type": "about:blank", "title": "Not Found", "status": 404, "error": "not_found"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/register_key"),
        ("POST", "/is_key_registered"),
        ("POST", "/v1/admin/keys"),
        ("GET", "/v1/admin/keys"),
        ("GET", "/v1/admin/audit"),
        ("POST", "/v1/admin/signing-keys/rotate"),
    ],
)
async def test_internal_routes_are_404_on_the_public_listener(
    sqlite_public: httpx.AsyncClient, method: str, path: str
) -> None:
    """T-OPS-01, as JWThenticator's ``test_disabled_internal_api`` expects."""
    response = await sqlite_public.request(
        method, path, json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {**PROBLEM_404, "detail": f"{method} {path} is not served here"}


async def test_legacy_admin_on_public_serves_the_internal_routes_publicly(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    """One-port compatibility mode: only the JWThenticator routes move, not /v1/admin."""
    state = await open_state(database_url, legacy_admin_on_public=True)
    public = make_client(build_public_app(state), peer=REMOTE)

    registered = await public.post(
        "/register_key", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )
    asked = await public.post("/is_key_registered", json={"key": LEGACY_KEY})
    admin_api = await public.get("/v1/admin/keys")

    assert (registered.status_code, registered.json()) == (201, {"result": True})
    assert (asked.status_code, asked.json()) == (200, {"result": True})
    assert admin_api.status_code == 404
    assert (await legacy_tokens(public))["jwt"]


async def test_disable_admin_api_wins_over_legacy_admin_on_public(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(
        sqlite_database_url, legacy_admin_on_public=True, disable_admin_api=True
    )
    public = make_client(build_public_app(state), peer=REMOTE)

    response = await public.post(
        "/register_key", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )

    assert response.status_code == 404


async def test_url_prefix_applies_to_every_route(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, url_prefix="/auth")
    public_app, admin_app = build_public_app(state), build_admin_app(state)
    public = make_client(public_app, peer=REMOTE)
    admin = make_client(admin_app)

    served = [route.path for app in (public_app, admin_app) for route in cast(Any, app).routes]
    registered = await admin.post(
        "/auth/register_key", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )
    tokens = await public.post(
        "/auth/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )
    unprefixed = await public.post(
        "/authenticate", json={"key": LEGACY_KEY, "identifier": IDENTIFIER}
    )
    checks = {
        path: (await public.get(path)).status_code
        for path in (
            "/auth/",
            "/auth/health",
            "/auth/jwks",
            "/auth/healthz",
            "/auth/readyz",
            "/auth/openapi.json",
            "/auth/docs",
            "/auth/.well-known/jwks.json",
        )
    }
    metadata = (await public.get("/auth/.well-known/oauth-authorization-server")).json()
    openapi = (await public.get("/auth/openapi.json")).json()

    assert served
    # RFC 8414 §3.1 puts the metadata of an issuer with a path under the root's well-known.
    rfc8414 = "/.well-known/oauth-authorization-server/auth"
    assert all(path.startswith("/auth/") or path == rfc8414 for path in served), served
    assert registered.status_code == 201
    assert tokens.status_code == 200
    assert (
        await public.post("/auth/validate", json={"jwt": tokens.json()["jwt"]})
    ).status_code == 200
    assert (await admin.get("/auth/v1/admin/keys")).status_code == 200
    assert unprefixed.status_code == 404
    assert (await public.get("/health")).status_code == 404
    assert checks == dict.fromkeys(checks, 200)
    assert metadata["token_endpoint"] == "https://kt.test/auth/v1/token"
    assert metadata["jwks_uri"] == "https://kt.test/auth/.well-known/jwks.json"
    assert all(path.startswith("/auth/") or path == rfc8414 for path in openapi["paths"])


async def test_disable_public_api_keeps_only_health_and_keys(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    """JWThenticator's DISABLE_EXTERNAL_API: /, /health and /jwks stay."""
    state = await open_state(sqlite_database_url, disable_public_api=True)
    public = make_client(build_public_app(state), peer=REMOTE)

    statuses = {
        (method, path): (await public.request(method, path, json={})).status_code
        for method, path in [
            ("POST", "/authenticate"),
            ("POST", "/refresh"),
            ("POST", "/validate"),
            ("GET", "/validate_request"),
            ("POST", "/v1/token"),
            ("GET", "/v1/validate"),
            ("GET", "/.well-known/jwks.json"),
            ("GET", "/"),
            ("GET", "/health"),
            ("GET", "/jwks"),
            ("GET", "/healthz"),
        ]
    }

    assert statuses == {
        ("POST", "/authenticate"): 404,
        ("POST", "/refresh"): 404,
        ("POST", "/validate"): 404,
        ("GET", "/validate_request"): 404,
        ("POST", "/v1/token"): 404,
        ("GET", "/v1/validate"): 404,
        ("GET", "/.well-known/jwks.json"): 404,
        ("GET", "/"): 200,
        ("GET", "/health"): 200,
        ("GET", "/jwks"): 200,
        ("GET", "/healthz"): 200,
    }
