"""U+0000 in text a request carries is a 400, on SQLite and PostgreSQL alike.

PostgreSQL cannot store NUL in text: a NUL in an admin query, path or body value, or in an
OAuth-style parameter, used to reach it and fail as a 500 ("invalid byte sequence for
encoding UTF8: 0x00"), while SQLite stored it. No route needs one, so the edge refuses it
before any storage call; JWThenticator's routes never let one reach the database.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyturn.server.requests import NO_NUL

from .conftest import IDENTIFIER

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    "url",
    [
        "/v1/admin/keys?after=%00",
        "/v1/admin/keys?identifier=a%00",
        "/v1/admin/users?after=%00",
        "/v1/admin/audit?action=%00&target_id=%00",
        "/v1/admin/keys/a%00b",
        "/v1/admin/users/a%00b",
        "/v1/admin/keys?%00=x",
    ],
)
async def test_nul_in_an_admin_query_or_path_is_a_400(admin: httpx.AsyncClient, url: str) -> None:
    response = await admin.get(url)

    assert response.status_code == 400, response.text
    assert response.json()["detail"] == NO_NUL


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/admin/keys", {"name": "a\u0000"}),
        ("/v1/admin/keys", {"metadata": {"a\u0000": "b"}}),
        ("/v1/admin/keys", {"extra_claims": {"tags": ["x", "\u0000"]}}),
        ("/v1/admin/users", {"email": "a\u0000@b.c", "password": "correct horse battery staple"}),
    ],
)
async def test_nul_in_an_admin_body_is_a_400(
    admin: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await admin.post(path, json=body)

    assert response.status_code == 400, response.text
    assert response.json()["detail"] == NO_NUL


async def test_an_escaped_backslash_before_u0000_is_not_a_nul(admin: httpx.AsyncClient) -> None:
    """``"\\\\u0000"`` is a backslash and five characters, which PostgreSQL stores fine."""
    response = await admin.post("/v1/admin/keys", json={"name": "a\\u0000"})

    assert response.status_code == 201, response.text
    assert response.json()["record"]["name"] == "a\\u0000"


@pytest.mark.parametrize("path", ["/v1/login", "/login", "/v1/token", "/v1/logout", "/v1/revoke"])
async def test_nul_in_a_form_is_a_400(public: httpx.AsyncClient, path: str) -> None:
    form = "email=a%00%40b.c&password=x&grant_type=refresh_token&refresh_token=a%00&token=%00"

    response = await public.post(path, content=form, headers=FORM)

    assert response.status_code == 400, response.text
    body = response.json()
    assert NO_NUL in (body.get("detail"), body.get("error_description"))


async def test_jwthenticator_routes_answer_nul_as_they_always_did(
    public: httpx.AsyncClient,
) -> None:
    """A key is hashed before any lookup (an unknown key: 401 ``{}``), an identifier must be a
    UUID (400 with its field message): no NUL reaches the database, nothing changes."""
    unknown = await public.post("/authenticate", json={"key": "a\u0000", "identifier": IDENTIFIER})
    not_uuid = await public.post(
        "/authenticate", json={"key": "a-key", "identifier": IDENTIFIER + "\u0000"}
    )

    assert (unknown.status_code, unknown.json()) == (401, {})
    assert (not_uuid.status_code, not_uuid.json()) == (
        400,
        {"identifier": ["Value error, Not a valid UUID."]},
    )
