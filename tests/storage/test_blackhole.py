"""Issue 18, defect 2: a PostgreSQL that accepts connections but never answers.

A proxy in the test's loop (`tests.blackhole.BlackHoleProxy`) stands between the storage
and PostgreSQL and stops forwarding, twice. Every call must then fail within the bounds
(`StorageUnavailableError`, a 503), never hang; the connections that timed out are
discarded, none stays checked out, and once the proxy forwards again writes work by
themselves within the bounds, with no restart. No sleeps: every wait polls a condition
with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from keyturn.errors import StorageUnavailableError
from keyturn.storage.sql import SQLStorage
from keyturn.storage.sql.hot_postgres import PostgresHotPath
from tests.blackhole import BlackHoleProxy

from .factories import NOW, api_key, event, hash_of, refresh_token

pytestmark = pytest.mark.postgresql

#: The bounds under test, small so the test stays quick.
STATEMENT_TIMEOUT = 0.5
POOL_TIMEOUT = 0.3
CONNECT_TIMEOUT = 0.5
POOL_SIZE = 8
#: The longest one failing call may take: a checkout wait, a connect, a statement (with
#: the client's margin), a commit, and room for a loaded two-core machine.
CALL_BOUND = POOL_TIMEOUT + CONNECT_TIMEOUT + 2 * (STATEMENT_TIMEOUT + 0.5) + 3.0
#: How long writes may take to work again once the database answers.
RECOVERY_BOUND = 10.0


@pytest.fixture
async def proxy(postgresql_database_url: str) -> AsyncIterator[BlackHoleProxy]:
    url = make_url(postgresql_database_url)
    hole = BlackHoleProxy(url.host or "127.0.0.1", url.port or 5432)
    await hole.start()
    try:
        yield hole
    finally:
        await hole.close()


@pytest.fixture
async def storage_via_proxy(
    postgresql_database_url: str, proxy: BlackHoleProxy
) -> AsyncIterator[SQLStorage]:
    url = make_url(postgresql_database_url).set(host="127.0.0.1", port=proxy.port)
    store = await SQLStorage.open(
        url.render_as_string(hide_password=False),
        pool_size=POOL_SIZE,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        statement_timeout=STATEMENT_TIMEOUT,
    )
    try:
        yield store
    finally:
        await store.close()


Call = Callable[[SQLStorage, int], Awaitable[object]]

#: Writes and reads on each path: the batched asyncpg fast path (refresh tokens, key
#: lookups, audit events), the SQLAlchemy path (transactions: new keys, revoke), and the
#: health check.
CALLS: dict[str, Call] = {
    "refresh_tokens.add": lambda s, n: s.refresh_tokens.add(
        refresh_token(f"t{n}"), audit=event("token.issued")
    ),
    "keys.find_by_hash": lambda s, n: s.keys.find_by_hash(hash_of("k1"), now=NOW),
    "keys.add": lambda s, n: s.keys.add(api_key(f"k{n}"), audit=event("key.registered")),
    "refresh_tokens.revoke_family": lambda s, n: s.refresh_tokens.revoke_family(
        "t1", at=NOW, audit=event("refresh.revoked")
    ),
    "audit.record": lambda s, n: s.audit.record(event("x")),
    "ping": lambda s, n: s.ping(),
}


async def _outcome(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await asyncio.wait_for(call, timeout=CALL_BOUND + 5)  # a hang fails, never blocks
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _checked_out(storage: SQLStorage) -> int:
    pool = storage.engine.sync_engine.pool
    checked: int = pool.checkedout()  # type: ignore[attr-defined]
    return checked


async def _until(condition: Callable[[], Awaitable[bool]], deadline: float) -> float:
    """Poll ``condition`` until it holds; how long that took. Fails at ``deadline`` s."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > deadline:
            pytest.fail(f"not within {deadline} s")
        await asyncio.sleep(0.02)  # a polling interval, not a wait for something
    return time.monotonic() - started


async def test_a_database_that_stops_answering_fails_fast_twice_then_recovers(
    storage_via_proxy: SQLStorage, proxy: BlackHoleProxy
) -> None:
    storage = storage_via_proxy
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("token.issued"))
    serial = 100

    for _episode in range(2):
        # Warm: connections open and pooled (leased by the fast path too), then cut off.
        warm = []
        for call in CALLS.values():
            serial += 1
            warm.append(call(storage, serial))
        await asyncio.gather(*warm, *(storage.ping() for _ in range(POOL_SIZE)))
        pool = storage.engine.sync_engine.pool
        assert pool.checkedin() + pool.checkedout() >= 2  # type: ignore[attr-defined]
        proxy.black_hole = True
        calls = []
        for _ in range(3):  # more calls than connections: some queue for the pool
            for call in CALLS.values():
                serial += 1
                calls.append(call(storage, serial))
        outcomes = await asyncio.gather(*(_outcome(call) for call in calls))

        for took, error in outcomes:
            assert isinstance(error, StorageUnavailableError), error
            assert error.status_code == 503
            assert took < CALL_BOUND
        # Nothing leaked: every connection came back or was discarded (the fast path
        # keeps the connections it leases checked out; it drops those that failed).
        assert isinstance(storage._hot, PostgresHotPath)
        assert _checked_out(storage) == storage._hot.fast.leased

        proxy.black_hole = False

        async def writes_work() -> bool:
            nonlocal serial
            serial += 1
            try:
                await storage.refresh_tokens.add(
                    refresh_token(f"t{serial}"), audit=event("token.issued")
                )
                await storage.audit.record(event("probe"))  # the fast path
                await storage.keys.add(api_key(f"k{serial}"), audit=event("probe"))  # pooled
            except StorageUnavailableError:
                return False
            return True

        await _until(writes_work, RECOVERY_BOUND)

    # Recovered for good: a burst as large as the pool works on every path.
    results = await asyncio.gather(
        *(call(storage, 1000 + n) for n, call in enumerate(list(CALLS.values()) * 2))
    )
    assert len(results) == 2 * len(CALLS)
    await storage.ping()
    assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW + timedelta(0)) is not None


async def test_closing_during_an_outage_does_not_wait_on_the_database(
    storage_via_proxy: SQLStorage, proxy: BlackHoleProxy
) -> None:
    """Shutdown under a black hole: no pooled connection waits for a goodbye.

    A graceful close waits for the server to hang up, up to the statement bound, one
    connection after another: a full pool would hold shutdown for minutes.
    """
    storage = storage_via_proxy
    await asyncio.gather(*(storage.ping() for _ in range(POOL_SIZE)))
    await asyncio.gather(*(storage.keys.find_by_hash(hash_of("k"), now=NOW) for _ in range(8)))
    pool = storage.engine.sync_engine.pool
    opened = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
    assert opened >= 4
    proxy.black_hole = True

    started = time.monotonic()
    await asyncio.wait_for(storage.close(), timeout=opened * (STATEMENT_TIMEOUT + 0.5) + 10)

    # Far below one statement bound per connection (what graceful closes took).
    assert time.monotonic() - started < (opened / 2) * (STATEMENT_TIMEOUT + 0.5)
