"""``X-Request-ID``: a sane incoming id is kept, anything else replaced, every response has one."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
import structlog

from keyturn.server import KeyturnState, build_admin_app
from keyturn.server.logs import ACCESS_LOGGER, new_request_id, sane_request_id

from .conftest import (
    ADMIN_TOKEN,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
    legacy_tokens,
    register_legacy_key,
)

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param("a" * 129, id="too-long"),
        pytest.param("has space", id="space"),
        pytest.param('quote"d', id="quote"),
        pytest.param("", id="empty"),
        pytest.param("tab\there", id="control"),
    ],
)
def test_an_insane_request_id_is_replaced(incoming: str) -> None:
    assert GENERATED.fullmatch(sane_request_id(incoming.encode()).decode())


def test_a_sane_request_id_is_kept() -> None:
    incoming = b"nginx-1f2e:3d/4c+5b=6a@x_y.z"
    assert sane_request_id(incoming) == incoming


def test_generated_ids_are_unique() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000


async def test_every_public_response_carries_the_request_id(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient
) -> None:
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(sqlite_public))["jwt"]
    calls = [
        ("GET", "/validate_request", bearer(jwt), 200),  # the fast path
        ("GET", "/v1/validate", bearer(jwt), 200),  # the fast path
        ("GET", "/v1/validate?scope=nope", bearer(jwt), 403),
        ("GET", "/validate_request", bearer("junk"), 401),
        ("GET", "/no/such/route", {}, 404),
        ("PUT", "/v1/token", {}, 405),
        ("POST", "/v1/token", {"Content-Type": "text/plain"}, 415),
        ("GET", "/jwks", {}, 200),
    ]
    for number, (method, path, headers, status) in enumerate(calls):
        sent = f"req-{number}"
        response = await sqlite_public.request(
            method, path, headers={**headers, "X-Request-ID": sent}
        )
        assert (response.status_code, response.headers["x-request-id"]) == (status, sent)
        fresh = await sqlite_public.request(method, path, headers=headers)
        assert GENERATED.fullmatch(fresh.headers["x-request-id"])


async def test_admin_refusals_carry_a_request_id(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state: KeyturnState = await open_state(sqlite_database_url, admin_token=ADMIN_TOKEN)
    client = make_client(build_admin_app(state), peer=REMOTE)

    response = await client.get("/v1/admin/keys", headers={"X-Request-ID": "adm-1"})

    assert (response.status_code, response.headers["x-request-id"]) == (401, "adm-1")


async def test_the_audit_trail_records_the_request_id(sqlite_admin: httpx.AsyncClient) -> None:
    created = await sqlite_admin.post(
        "/v1/admin/keys", json={}, headers={"X-Request-ID": "audit-me"}
    )
    assert created.headers["x-request-id"] == "audit-me"
    insane = await sqlite_admin.post("/v1/admin/keys", json={}, headers={"X-Request-ID": "a b"})
    generated = insane.headers["x-request-id"]

    events = (await sqlite_admin.get("/v1/admin/audit")).json()["events"]

    assert [e["request_id"] for e in events if e["action"] == "key.created"] == [
        generated,
        "audit-me",
    ]


def _bound_request_id() -> object:
    return structlog.contextvars.get_contextvars().get("request_id")


async def test_a_route_that_logs_while_answering_binds_the_id_first(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient
) -> None:
    """/authenticate (an exact route whose service may log) binds the id before answering,
    even when its access line is not written."""
    await register_legacy_key(sqlite_admin)
    structlog.contextvars.clear_contextvars()
    level = ACCESS_LOGGER.level
    ACCESS_LOGGER.setLevel(logging.WARNING)
    try:
        await legacy_tokens(sqlite_public)
        bound = _bound_request_id()
    finally:
        ACCESS_LOGGER.setLevel(level)

    assert isinstance(bound, str)
    assert GENERATED.fullmatch(bound)


@pytest.mark.parametrize("path", ["/validate_request", "/v1/validate", "/jwks"])
async def test_a_quiet_route_binds_the_id_only_for_its_access_line(
    sqlite_public: httpx.AsyncClient, sqlite_admin: httpx.AsyncClient, path: str
) -> None:
    """The validate routes and the JWK Set log nothing while answering: the id is bound
    when their DEBUG access line is written, and not at all when it is not."""
    await register_legacy_key(sqlite_admin)
    jwt = (await legacy_tokens(sqlite_public))["jwt"]
    level = ACCESS_LOGGER.level
    try:
        ACCESS_LOGGER.setLevel(logging.INFO)
        structlog.contextvars.clear_contextvars()
        quiet = await sqlite_public.get(path, headers={**bearer(jwt), "X-Request-ID": "q-1"})
        unbound = _bound_request_id()
        ACCESS_LOGGER.setLevel(logging.DEBUG)
        logged = await sqlite_public.get(path, headers={**bearer(jwt), "X-Request-ID": "q-2"})
        bound = _bound_request_id()
    finally:
        ACCESS_LOGGER.setLevel(level)

    assert (quiet.status_code, logged.status_code) == (200, 200)
    assert (unbound, bound) == (None, "q-2")
