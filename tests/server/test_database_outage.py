"""Issue 18, defect 2, through the HTTP layer: a PostgreSQL that stops answering, twice.

The server's storage reaches PostgreSQL through `tests.blackhole.BlackHoleProxy`. While
the proxy swallows everything, token requests and ``/readyz`` answer 503 with
``Retry-After`` within the configured bounds (``KEYTURN_DATABASE_TIMEOUT``,
``KEYTURN_DATABASE_POOL_TIMEOUT``), never hang and never 401, and validation keeps
answering from memory. Once the proxy forwards again, writes and ``/readyz`` work by
themselves, with no restart: the issue saw the pool stuck at 16/16 and every write at
503 after the second episode. Waits poll with deadlines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy.engine import make_url

from keyturn.server.app import build_admin_app, build_public_app
from tests.blackhole import BlackHoleProxy

from .conftest import MakeClient, OpenState, bearer, create_key, v1_tokens

pytestmark = pytest.mark.postgresql

DATABASE_TIMEOUT = 0.5
POOL_TIMEOUT = 0.3
#: One failing request's bound: a pool wait, a connect, a statement or two (with the
#: client's 0.5 s margin), and room for a loaded two-core machine.
REQUEST_BOUND = POOL_TIMEOUT + DATABASE_TIMEOUT + 2 * (DATABASE_TIMEOUT + 0.5) + 3.0
RECOVERY_BOUND = 10.0
POOL_SIZE = 8
BURST = 12  # more concurrent requests than the pool has connections


@pytest.fixture
async def proxy(postgresql_database_url: str) -> AsyncIterator[BlackHoleProxy]:
    url = make_url(postgresql_database_url)
    hole = BlackHoleProxy(url.host or "127.0.0.1", url.port or 5432)
    await hole.start()
    try:
        yield hole
    finally:
        await hole.close()


async def _until(condition: Callable[[], Awaitable[bool]], deadline: float) -> None:
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > deadline:
            pytest.fail(f"not within {deadline} s")
        await asyncio.sleep(0.02)  # a polling interval, not a wait for something


async def test_requests_fail_fast_during_two_outages_and_recover_by_themselves(
    postgresql_database_url: str,
    proxy: BlackHoleProxy,
    open_state: OpenState,
    make_client: MakeClient,
) -> None:
    url = make_url(postgresql_database_url).set(host="127.0.0.1", port=proxy.port)
    state = await open_state(
        url.render_as_string(hide_password=False),
        database_pool_size=POOL_SIZE,
        database_timeout=DATABASE_TIMEOUT,
        database_pool_timeout=POOL_TIMEOUT,
    )
    public = make_client(build_public_app(state))
    admin = make_client(build_admin_app(state))
    key = (await create_key(admin, name="outage"))["key"]
    token = (await v1_tokens(public, key))["access_token"]

    async def token_request() -> tuple[float, httpx.Response]:
        started = time.monotonic()
        response = await asyncio.wait_for(
            public.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(key, "")),
            timeout=REQUEST_BOUND + 5,  # a hang fails the test instead of blocking it
        )
        return time.monotonic() - started, response

    for _episode in range(2):
        await asyncio.gather(*(v1_tokens(public, key) for _ in range(BURST)))  # pool warm
        proxy.black_hole = True

        outcomes = await asyncio.gather(*(token_request() for _ in range(BURST)))
        ready = await asyncio.wait_for(public.get("/readyz"), timeout=REQUEST_BOUND + 5)

        for took, response in outcomes:
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"]
            assert took < REQUEST_BOUND
        assert ready.status_code == 503
        assert ready.headers["Retry-After"]
        validated = await public.get("/v1/validate", headers=bearer(token))
        assert validated.status_code == 200  # from memory, during the outage

        proxy.black_hole = False

        async def recovered() -> bool:
            issued = await public.post(
                "/v1/token", data={"grant_type": "client_credentials"}, auth=(key, "")
            )
            return issued.status_code == 200 and (await public.get("/readyz")).status_code == 200

        await _until(recovered, RECOVERY_BOUND)

    # No connection left stuck: every connection of the pool serves a request at once (a
    # stuck one would make a request wait out the pool timeout and answer 503). As many
    # requests as the pool holds, so the check does not hang on how fast this machine
    # turns a queued request around.
    outcomes = await asyncio.gather(*(token_request() for _ in range(POOL_SIZE)))
    assert [response.status_code for _, response in outcomes] == [200] * POOL_SIZE


async def test_the_settings_reach_the_pool_and_the_driver(
    postgresql_database_url: str, open_state: OpenState
) -> None:
    state = await open_state(
        postgresql_database_url, database_timeout=2.5, database_pool_timeout=0.7
    )
    engine = state.storage.engine

    async with engine.connect() as conn:
        timeout = (await conn.exec_driver_sql("SHOW statement_timeout")).scalar_one()
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        command_timeout = raw.driver_connection._config.command_timeout

    assert engine.sync_engine.pool.timeout() == 0.7  # type: ignore[attr-defined]
    assert timeout == "2500ms"
    assert command_timeout == pytest.approx(3.0)
