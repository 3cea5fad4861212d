"""The service's signing-key lifecycle (`keyturn.service.signing`), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from keyturn.service import KeyturnService
from keyturn.storage.base import Storage
from keyturn.testing import FakeClock


async def test_two_instances_on_an_empty_database_make_one_signing_key(
    storage: Storage, clock: FakeClock
) -> None:
    """T-ROT-05."""
    from tests.service.conftest import make_service

    first, second = make_service(storage, clock), make_service(storage, clock)

    await asyncio.gather(first.start(), second.start())

    records = await storage.signing_keys.list()
    assert len(records) == 1
    assert first.key_set.kids == second.key_set.kids == {records[0].kid}


async def test_restart_keeps_the_signing_key(storage: Storage, clock: FakeClock) -> None:
    """T-KEY-04: tokens issued before a restart still validate after it."""
    from tests.service.conftest import make_service

    before = make_service(storage, clock)
    await before.start()
    created = await before.create_key()
    token = (await before.authenticate(created.secret)).access.token

    after = make_service(storage, clock)
    await after.start()

    assert after.jwks() == before.jwks()
    assert after.validate(token).client_id == created.record.id


async def test_signing_key_rotation_publishes_before_signing(
    service: KeyturnService, clock: FakeClock
) -> None:
    """T-ROT-01/03: pending is published first, old keys stay until their tokens expire."""
    old_kid = next(iter(service.key_set.kids))
    created = await service.create_key()
    old_token = (await service.authenticate(created.secret)).access.token

    new_kid = await service.rotate_signing_key()

    assert service.key_set.kids == {old_kid, new_kid}
    assert (await service.authenticate(created.secret)).access.kid == old_kid
    assert await service.activate_due_signing_keys() == []

    clock.advance(service.config.signing_key_publish_delay.total_seconds())
    assert await service.activate_due_signing_keys() == [new_kid]

    assert (await service.authenticate(created.secret)).access.kid == new_kid
    assert service.validate(old_token).kid == old_kid
    clock.advance(service.config.access_lifetime_seconds + service.config.leeway + 1)
    await service.maintain()
    assert service.key_set.kids == {new_kid}
