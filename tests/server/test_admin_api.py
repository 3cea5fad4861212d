"""The admin API: keys, signing keys and the audit trail; RFC 9457 problems for errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyturn.core.tokens import peek_unverified_claims
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import (
    IDENTIFIER,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    create_key,
    v1_tokens,
)

START_ISO = "2026-03-01T12:00:00Z"


def problem(status: int, title: str, detail: str, error: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "error": error,
        **extra,
    }


def assert_problem(response: httpx.Response, expected: dict[str, Any]) -> None:
    assert response.status_code == expected["status"]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == expected


# -- create, get, list ---------------------------------------------------------------------


async def test_create_returns_the_secret_once_with_the_record(admin: httpx.AsyncClient) -> None:
    response = await admin.post(
        "/v1/admin/keys",
        json={
            "name": "billing",
            "identifier": IDENTIFIER,
            "scopes": ["write", "read", "read"],
            "metadata": {"team": "payments"},
            "expires_at": "2027-01-01T00:00:00Z",
        },
    )

    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"key", "record"}
    key_id = body["record"]["id"]
    assert body["key"].startswith(f"kt_{key_id}_")
    assert body["record"] == {
        "id": key_id,
        "name": "billing",
        "identifier": IDENTIFIER,
        "roles": [],
        "scopes": ["read", "write"],
        "extra_claims": {},
        "metadata": {"team": "payments"},
        "legacy": False,
        "created_at": START_ISO,
        "expires_at": "2027-01-01T00:00:00Z",
        "last_used_at": None,
        "revoked_at": None,
        "revoked_reason": None,
        "rotation_grace_until": None,
        "dpop_required": False,
    }


async def test_get_and_list_never_show_the_secret_or_its_hash(
    state: KeyturnState, admin: httpx.AsyncClient
) -> None:
    created = await create_key(admin, name="a")
    secret = created["key"]
    key_id = created["record"]["id"]
    stored = await state.storage.keys.get(key_id)
    assert stored is not None

    shown = await admin.get(f"/v1/admin/keys/{key_id}")
    listed = await admin.get("/v1/admin/keys")

    assert shown.status_code == 200
    assert shown.json() == created["record"]
    assert listed.json() == {"keys": [created["record"]], "next_after": None}
    for response in (shown, listed):
        text = response.text
        assert secret not in text
        assert secret.rsplit("_", 1)[1] not in text
        assert "hash" not in text
        assert stored.key_hash.hex() not in text


async def test_listing_pages_through_every_key(admin: httpx.AsyncClient) -> None:
    created = [(await create_key(admin, name=f"k{n}"))["record"]["id"] for n in range(5)]

    pages: list[list[str]] = []
    after: str | None = None
    while True:
        params = {"limit": "2"} | ({"after": after} if after else {})
        body = (await admin.get("/v1/admin/keys", params=params)).json()
        pages.append([key["id"] for key in body["keys"]])
        after = body["next_after"]
        if after is None:
            break

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [key_id for page in pages for key_id in page] == sorted(created)


async def test_listing_filters_by_identifier_and_revocation(admin: httpx.AsyncClient) -> None:
    mine = await create_key(admin, identifier=IDENTIFIER)
    revoked = await create_key(admin, identifier=IDENTIFIER)
    await create_key(admin)
    await admin.post(f"/v1/admin/keys/{revoked['record']['id']}/revoke", json={})

    every = await admin.get("/v1/admin/keys", params={"identifier": IDENTIFIER})
    live = await admin.get(
        "/v1/admin/keys", params={"identifier": IDENTIFIER, "include_revoked": "false"}
    )

    assert sorted(k["id"] for k in every.json()["keys"]) == sorted(
        [mine["record"]["id"], revoked["record"]["id"]]
    )
    assert [k["id"] for k in live.json()["keys"]] == [mine["record"]["id"]]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "claim 'limit': must be between 1 and 1000 (value 0)"),
        ({"limit": "1001"}, "claim 'limit': must be between 1 and 1000 (value 1001)"),
        ({"limit": "-1"}, "limit must be a non-negative integer"),
        ({"limit": "ten"}, "limit must be a non-negative integer"),
        ({"limit": "9" * 13}, "limit must be a non-negative integer"),
    ],
)
async def test_listing_with_a_bad_limit_is_400_problem(
    sqlite_admin: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await sqlite_admin.get("/v1/admin/keys", params=params)

    assert_problem(response, problem(400, "Bad Request", detail, "invalid_request"))


async def test_an_unknown_key_is_404_problem(sqlite_admin: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/admin/keys/AAAAAAAAAAAAAAAA"),
        ("POST", "/v1/admin/keys/AAAAAAAAAAAAAAAA/revoke"),
    ]:
        response = await sqlite_admin.request(method, path)

        assert_problem(
            response,
            problem(404, "Not Found", "no API key with id 'AAAAAAAAAAAAAAAA'", "not_found"),
        )
    rotate = await sqlite_admin.post("/v1/admin/keys/nope/rotate")
    assert_problem(
        rotate, problem(404, "Not Found", "no usable API key with id 'nope'", "not_found")
    )


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param({"bogus": 1}, {"bogus": ["Unknown field."]}, id="unknown-field"),
        pytest.param(
            {"expires_at": "tomorrow"},
            {"expires_at": ["Input should be a valid datetime or date, input is too short"]},
            id="expires-at-word",
        ),
        pytest.param(
            {"expires_at": "10000-01-01T00:00:00Z"},
            {
                "expires_at": [
                    "Input should be a valid datetime or date, invalid date separator, expected `-`"
                ]
            },
            id="expires-at-year-10000",
        ),
        pytest.param(
            {"expires_at": 1e30},
            {
                "expires_at": [
                    "Input should be a valid datetime, "
                    "dates after 9999 are not supported as unix timestamps"
                ]
            },
            id="expires-at-1e30",
        ),
        pytest.param(
            {"scopes": ['a"b']},
            {"scopes.0": ["String should match pattern '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$'"]},
            id="scope-grammar",
        ),
        pytest.param(
            {"roles": ["x"] * 33},
            {"roles": ["List should have at most 32 items after validation, not 33"]},
            id="too-many-roles",
        ),
    ],
)
async def test_create_with_bad_fields_is_400_problem_with_errors(
    sqlite_admin: httpx.AsyncClient, body: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    """T-TIME-10 and T-AZ-03: field errors, nothing created."""
    response = await sqlite_admin.post("/v1/admin/keys", json=body)

    assert_problem(
        response,
        problem(
            400,
            "Bad Request",
            "the body has missing, unknown or invalid fields",
            "invalid_request",
            errors=errors,
        ),
    )
    assert (await sqlite_admin.get("/v1/admin/keys")).json()["keys"] == []


async def test_create_with_a_past_expiry_is_400_problem(sqlite_admin: httpx.AsyncClient) -> None:
    response = await sqlite_admin.post(
        "/v1/admin/keys", json={"expires_at": "2020-01-01T00:00:00Z"}
    )

    assert_problem(
        response,
        problem(
            400,
            "Bad Request",
            "claim 'expires_at': must be in the future (value '2020-01-01T00:00:00+00:00')",
            "invalid_request",
        ),
    )


async def test_create_with_malformed_json_is_400_problem(sqlite_admin: httpx.AsyncClient) -> None:
    response = await sqlite_admin.post(
        "/v1/admin/keys", content=b"{", headers={"content-type": "application/json"}
    )

    assert_problem(
        response, problem(400, "Bad Request", "the body is not valid UTF-8 JSON", "invalid_request")
    )


# -- revoke and rotate ---------------------------------------------------------------------


async def test_revoking_a_key_ends_its_authentication_and_its_tokens(
    open_state: OpenState, database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(database_url, client_credentials_refresh_tokens=True)
    public = make_client(build_public_app(state), peer=REMOTE)
    admin = make_client(build_admin_app(state))
    created = await create_key(admin)
    key_id = created["record"]["id"]
    tokens = await v1_tokens(public, created["key"])

    response = await admin.post(f"/v1/admin/keys/{key_id}/revoke", json={"reason": "leaked"})

    assert response.status_code == 200
    assert response.json() == {
        **created["record"],
        "last_used_at": START_ISO,
        "revoked_at": START_ISO,
        "revoked_reason": "leaked",
    }
    token = await public.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=(created["key"], "")
    )
    assert token.status_code == 401
    validate = await public.get("/v1/validate", headers=bearer(tokens["access_token"]))
    assert validate.status_code == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refreshed = await public.post("/v1/token", data=refresh, auth=(key_id, created["key"]))
    assert refreshed.json()["error"] == "invalid_client"  # the key no longer authenticates
    assert (await public.post("/v1/token", data=refresh)).json()["error"] == "invalid_grant"


async def test_revoke_takes_an_empty_body(sqlite_admin: httpx.AsyncClient) -> None:
    key_id = (await create_key(sqlite_admin))["record"]["id"]

    response = await sqlite_admin.post(f"/v1/admin/keys/{key_id}/revoke")

    assert response.status_code == 200
    assert response.json()["revoked_reason"] == ""


async def test_rotating_keeps_the_old_secret_until_the_grace_ends(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, clock: FakeClock
) -> None:
    created = await create_key(admin)
    key_id = created["record"]["id"]

    response = await admin.post(f"/v1/admin/keys/{key_id}/rotate", json={"grace_seconds": 60})

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    assert rotated["key"] != created["key"]
    assert rotated["key"].startswith(f"kt_{key_id}_")
    assert rotated["record"]["id"] == key_id
    assert rotated["record"]["rotation_grace_until"] == "2026-03-01T12:01:00Z"
    form = {"grant_type": "client_credentials"}
    assert (await public.post("/v1/token", data=form, auth=(created["key"], ""))).status_code == 200
    assert (await public.post("/v1/token", data=form, auth=(rotated["key"], ""))).status_code == 200
    clock.advance(61)
    old = await public.post("/v1/token", data=form, auth=(created["key"], ""))
    new = await public.post("/v1/token", data=form, auth=(rotated["key"], ""))
    assert (old.status_code, old.json()["error"]) == (401, "invalid_client")
    assert new.status_code == 200


async def test_rotating_with_a_negative_grace_is_400_problem(
    sqlite_admin: httpx.AsyncClient,
) -> None:
    key_id = (await create_key(sqlite_admin))["record"]["id"]

    response = await sqlite_admin.post(
        f"/v1/admin/keys/{key_id}/rotate", json={"grace_seconds": -1}
    )

    assert_problem(
        response,
        problem(
            400,
            "Bad Request",
            "the body has missing, unknown or invalid fields",
            "invalid_request",
            errors={"grace_seconds": ["Input should be greater than or equal to 0"]},
        ),
    )


# -- signing keys --------------------------------------------------------------------------


async def test_signing_keys_are_listed_without_private_material(
    state: KeyturnState, admin: httpx.AsyncClient
) -> None:
    [kid] = [key["kid"] for key in state.service.jwks()["keys"]]

    response = await admin.get("/v1/admin/signing-keys")

    assert response.status_code == 200
    assert response.json() == {
        "signing_keys": [
            {
                "kid": kid,
                "alg": "ES256",
                "state": "active",
                "created_at": START_ISO,
                "activated_at": START_ISO,
                "retired_at": None,
                "publish_until": None,
            }
        ]
    }


async def test_a_signing_key_rotation_publishes_before_it_signs(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """T-ROT-03: the new key is in the JWKS at once, pending until it is due."""
    created = await create_key(admin)
    before = await v1_tokens(public, created["key"])
    old_kid = peek_unverified_claims(before["access_token"])[0]["kid"]

    response = await admin.post("/v1/admin/signing-keys/rotate")

    assert response.status_code == 201
    new_kid = response.json()["kid"]
    assert response.json() == {"kid": new_kid, "activated": False}
    listed = {
        k["kid"]: k["state"]
        for k in (await admin.get("/v1/admin/signing-keys")).json()["signing_keys"]
    }
    assert listed == {old_kid: "active", new_kid: "pending"}
    published = {k["kid"] for k in (await public.get("/.well-known/jwks.json")).json()["keys"]}
    assert published == {old_kid, new_kid}
    after = await v1_tokens(public, created["key"])
    assert peek_unverified_claims(after["access_token"])[0]["kid"] == old_kid


async def test_an_immediate_signing_key_rotation_keeps_old_tokens_valid(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    """T-ROT-01: tokens signed by the retired key stay valid until they expire."""
    created = await create_key(admin)
    before = await v1_tokens(public, created["key"])

    response = await admin.post("/v1/admin/signing-keys/rotate", params={"immediately": "true"})

    assert response.status_code == 201
    assert response.json()["activated"] is True
    after = await v1_tokens(public, created["key"])
    assert peek_unverified_claims(after["access_token"])[0]["kid"] == response.json()["kid"]
    for token in (before["access_token"], after["access_token"]):
        assert (await public.get("/v1/validate", headers=bearer(token))).status_code == 200
    states = sorted(
        k["state"] for k in (await admin.get("/v1/admin/signing-keys")).json()["signing_keys"]
    )
    assert states == ["active", "retired"]


# -- audit ---------------------------------------------------------------------------------


async def test_the_audit_trail_lists_events_newest_first(
    public: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    created = await create_key(admin)
    key_id = created["record"]["id"]
    await v1_tokens(public, created["key"])
    await admin.post(
        f"/v1/admin/keys/{key_id}/revoke", json={"reason": "done"}, headers={"X-Request-Id": "r-1"}
    )

    response = await admin.get("/v1/admin/audit")

    assert response.status_code == 200
    events = response.json()["events"]
    assert [e["action"] for e in events] == [
        "key.revoked",
        "token.issued",
        "key.created",
        "signing_key.created",
        "server_setting.claimed",
    ]
    assert response.json()["next_before"] is None
    assert events[0] == {
        "id": events[0]["id"],
        "at": START_ISO,
        "action": "key.revoked",
        "outcome": "success",
        "actor": "admin",
        "target_type": "key",
        "target_id": key_id,
        "request_id": "r-1",
        "detail": {"reason": "done"},
    }
    assert created["key"] not in response.text


async def test_the_audit_trail_pages_and_filters(admin: httpx.AsyncClient) -> None:
    ids = [(await create_key(admin))["record"]["id"] for _ in range(3)]

    first = (await admin.get("/v1/admin/audit", params={"limit": "2"})).json()
    second = (
        await admin.get("/v1/admin/audit", params={"limit": "2", "before": first["next_before"]})
    ).json()
    filtered = (
        await admin.get("/v1/admin/audit", params={"action": "key.created", "target_id": ids[0]})
    ).json()

    assert [e["target_id"] for e in first["events"]] == [ids[2], ids[1]]
    assert [e["target_id"] for e in second["events"]][:1] == [ids[0]]
    assert [(e["action"], e["target_id"]) for e in filtered["events"]] == [("key.created", ids[0])]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "limit must be between 1 and 1000"),
        ({"limit": "5000"}, "limit must be between 1 and 1000"),
        ({"before": "x"}, "before must be a non-negative integer"),
    ],
)
async def test_the_audit_trail_rejects_bad_queries(
    sqlite_admin: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await sqlite_admin.get("/v1/admin/audit", params=params)

    assert_problem(response, problem(400, "Bad Request", detail, "invalid_request"))
