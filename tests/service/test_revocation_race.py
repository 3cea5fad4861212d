"""Issue 18, defect 1: a key revoked while authentications race it keeps no live token.

Two service instances, each with its own storage, share one database (SQLite file or
PostgreSQL), as two processes behind a load balancer do. Many authentications on both
race one revocation. Instance ``b``'s clock stands one second ahead: its racing
authentications stamp an ``iat`` after ``revoked_at``, the case that used to escape the
``iat <= revoked_at`` rule for the token's whole lifetime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from tests.service.conftest import START
from tests.service.test_users import PASSWORD, make_users_service

from keyturn.errors import InvalidGrantError, RevokedTokenError
from keyturn.service import KeyturnService
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.testing import FakeClock

RACERS = 40

Instances = tuple[KeyturnService, KeyturnService, FakeClock]


@pytest.fixture
async def two_instances(database_url: str) -> AsyncIterator[Instances]:
    """Instances ``a`` (clock at START) and ``b`` (one second ahead) on one database."""
    stores = [SQLStorage(create_engine(database_url, pool_size=4)) for _ in range(2)]
    try:
        a = make_users_service(stores[0], FakeClock(START))
        await a.start()
        b_clock = FakeClock(START + timedelta(seconds=1))
        b = make_users_service(stores[1], b_clock)
        await b.start()
        yield a, b, b_clock
    finally:
        for store in stores:
            await store.close()


async def _token(service: KeyturnService, secret: str) -> str | None:
    try:
        return (await service.authenticate(secret)).access.token
    except InvalidGrantError:  # the revocation won: no token, as it must be
        return None


async def _legacy_refresh(service: KeyturnService, refresh_token: str) -> str | None:
    try:
        return (await service.refresh(refresh_token)).access.token
    except InvalidGrantError:
        return None


class Gate:
    """Holds every call of an async method after it returned, until ``opened`` is set.

    Models requests that read the key before the revocation committed and go on (sign,
    store) after it: the interleaving the issue measured, made certain.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self._count = 0

    def wrap(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def held(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            self._count += 1
            if self._count >= self.expected:
                self.arrived.set()
            await self.opened.wait()
            return result

        return held


async def test_every_token_of_a_key_revoked_mid_race_is_refused_everywhere(
    two_instances: Instances, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = two_instances
    created = await a.create_key(name="raced")
    legacy = await b.authenticate(created.secret, rotating=False)
    assert legacy.refresh_token is not None
    gate = Gate(RACERS + RACERS // 4)
    monkeypatch.setattr(b.storage.keys, "find_by_hash", gate.wrap(b.storage.keys.find_by_hash))
    found = gate.wrap(b.storage.refresh_tokens.find_with_key)
    monkeypatch.setattr(b.storage.refresh_tokens, "find_with_key", found)

    held_tokens = [asyncio.ensure_future(_token(b, created.secret)) for _ in range(RACERS)]
    held = [
        *held_tokens,
        *(
            asyncio.ensure_future(_legacy_refresh(b, legacy.refresh_token))
            for _ in range(RACERS // 4)
        ),
    ]
    free = [asyncio.ensure_future(_token(a, created.secret)) for _ in range(RACERS // 2)]
    await asyncio.wait_for(gate.arrived.wait(), timeout=30)  # all of b's read the live key
    revoked = await a.revoke_key(created.record.id)  # a's racers still in flight
    gate.opened.set()
    outcomes = await asyncio.gather(*held, *free)
    assert revoked.revoked_at is not None
    # Those that read the live key but stored their refresh token after the revocation
    # committed get nothing: the store checks the key in the same statement/transaction.
    assert [task.result() for task in held_tokens] == [None] * RACERS
    tokens = [legacy.access.token, *(token for token in outcomes if token is not None)]
    # Legacy refreshes write nothing: those that read the key before the revocation answer.
    assert len(tokens) > 1, "no token got in around the revocation: nothing raced"

    # After the revocation committed, no instance issues anything for the key.
    for service in (a, b):
        assert await _token(service, created.secret) is None
        assert await _legacy_refresh(service, legacy.refresh_token) is None

    # Every token issued during the race is refused by both instances, whatever its iat.
    for service in (a, b):
        await service.reload_revocations()
        for token in tokens:
            with pytest.raises(RevokedTokenError):
                service.validate(token)


async def test_a_revoked_keys_tokens_stay_refused_until_they_expire(
    two_instances: Instances,
) -> None:
    """The entry outlives the latest token stamped a little after the revocation."""
    a, b, clock = two_instances
    created = await a.create_key(name="raced")
    late = (await b.authenticate(created.secret)).access.token  # iat one second later
    await a.revoke_key(created.record.id)
    lifetime = b.config.access_token_lifetime + timedelta(seconds=b.config.leeway)

    clock.advance(lifetime.total_seconds() - 1)  # the token's last accepted second
    await b.reload_revocations()
    await b.maintain()

    with pytest.raises(RevokedTokenError):
        b.validate(late)


async def test_an_enabled_user_gets_tokens_that_pass_again(
    two_instances: Instances,
) -> None:
    """Users keep the iat rule: disabling refuses earlier tokens, not later ones."""
    a, b, _ = two_instances
    user = await a.create_user("race@example.com", PASSWORD)
    before = (await a.login("race@example.com", PASSWORD)).access.token
    await a.disable_user(user.id)
    await a.enable_user(user.id)
    after = (await b.login("race@example.com", PASSWORD)).access.token

    for service in (a, b):
        await service.reload_revocations()
        with pytest.raises(RevokedTokenError):
            service.validate(before)
        assert service.validate(after).subject == f"user:{user.id}"
