"""Key records cached in memory, key uses written in batches (issue 19), on SQLite and PostgreSQL.

Two services on one database stand for two instances; the injected clock moves time. A
key revoked or expired on one instance is refused by the other at once (the database
decides when the issuance is recorded); a secret rotated out stops working on the other
within ``key_cache_ttl`` (the server's ``KEYTURN_POLL_INTERVAL``), at once on the first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from tests.service.conftest import START, make_service

from keyturn.core.records import ApiKeyRecord
from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.errors import InvalidGrantError, StorageUnavailableError
from keyturn.service import KeyturnService
from keyturn.service.keycache import KeyCache, KeyUsage
from keyturn.storage.base import Storage
from keyturn.testing import FakeClock

TTL = timedelta(seconds=2)


async def _instance(storage: Storage, clock: FakeClock) -> KeyturnService:
    service = make_service(storage, clock, key_cache_ttl=TTL)
    await service.start()
    return service


def _count_lookups(service: KeyturnService, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every ``find_by_hash`` the service's storage answers."""
    keys = service.storage.keys
    find = keys.find_by_hash
    calls: list[bytes] = []

    async def counted(key_hash: bytes, **kwargs: Any) -> ApiKeyRecord | None:
        calls.append(key_hash)
        return await find(key_hash, **kwargs)

    monkeypatch.setattr(keys, "find_by_hash", counted)
    return calls


async def test_a_cached_key_is_not_read_again_within_the_bound(
    storage: Storage, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await _instance(storage, clock)
    created = await service.create_key()
    lookups = _count_lookups(service, monkeypatch)

    for _ in range(3):
        await service.authenticate(created.secret, issue_refresh_token=False)
        clock.advance(0.5)
    assert len(lookups) == 1
    clock.advance(1)  # 2.5 s after the read: stale
    await service.authenticate(created.secret, issue_refresh_token=False)
    assert len(lookups) == 2


async def test_unknown_keys_are_looked_up_every_time(
    service: KeyturnService, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _count_lookups(service, monkeypatch)
    unknown = generate_secret(SecretKind.API_KEY).value
    for _ in range(2):
        with pytest.raises(InvalidGrantError):
            await service.authenticate(unknown)
    assert len(lookups) == 2


async def test_revocation_and_expiry_stop_the_key_at_once_on_every_instance(
    storage: Storage, clock: FakeClock
) -> None:
    """The issuance's audit row is written only while the key is live in the database."""
    here, there = await _instance(storage, clock), await _instance(storage, clock)
    revoked, expired = await here.create_key(), await here.create_key()
    for created in (revoked, expired):
        await here.authenticate(created.secret, issue_refresh_token=False)
        await there.authenticate(created.secret, issue_refresh_token=False)  # cached there

    await here.revoke_key(revoked.record.id)
    await here.expire_key(expired.record.id)

    for service in (here, there):
        for created in (revoked, expired):
            with pytest.raises(InvalidGrantError):
                await service.authenticate(created.secret, issue_refresh_token=False)
    issued = await storage.audit.list(limit=20, action="token.issued")
    assert len(issued) == 4  # none for the refused requests


async def test_a_refresh_token_is_never_issued_to_a_key_revoked_or_expired_elsewhere(
    storage: Storage, clock: FakeClock
) -> None:
    here, there = await _instance(storage, clock), await _instance(storage, clock)
    revoked, expired = await here.create_key(), await here.create_key()
    for created in (revoked, expired):
        await there.authenticate(created.secret)  # cached there

    await here.revoke_key(revoked.record.id)
    await here.expire_key(expired.record.id)

    # The stored token's write checks the key in the database, whatever the cache holds.
    for created in (revoked, expired):
        with pytest.raises(InvalidGrantError):
            await there.authenticate(created.secret)


async def test_rotation_without_grace_ends_the_old_secret_within_the_bound(
    storage: Storage, clock: FakeClock
) -> None:
    here, there = await _instance(storage, clock), await _instance(storage, clock)
    created = await here.create_key()
    await here.authenticate(created.secret, issue_refresh_token=False)
    await there.authenticate(created.secret, issue_refresh_token=False)

    rotated = await here.rotate_key(created.record.id, grace=timedelta(0))

    with pytest.raises(InvalidGrantError):
        await here.authenticate(created.secret, issue_refresh_token=False)
    await there.authenticate(rotated.secret, issue_refresh_token=False)
    clock.advance(1)  # inside the bound, the other instance still trusts its copy
    await there.authenticate(created.secret, issue_refresh_token=False)
    clock.advance(1)
    with pytest.raises(InvalidGrantError):
        await there.authenticate(created.secret, issue_refresh_token=False)


async def test_key_uses_are_written_in_batches_once_per_resolution(
    service: KeyturnService, storage: Storage, clock: FakeClock
) -> None:
    created = await service.create_key()
    key_id = created.record.id

    await service.authenticate(created.secret, issue_refresh_token=False)
    assert (await storage.keys.get(key_id)).last_used_at is None  # type: ignore[union-attr]
    assert (await service.get_key(key_id)).last_used_at == START  # this instance knows
    assert await service.flush_key_usage() == 1
    assert (await storage.keys.get(key_id)).last_used_at == START  # type: ignore[union-attr]

    clock.advance(30)
    await service.authenticate(created.secret, issue_refresh_token=False)
    assert await service.flush_key_usage() == 0  # within the resolution (a minute)
    clock.advance(31)
    await service.authenticate(created.secret, issue_refresh_token=False)
    assert await service.flush_key_usage() == 1
    stored = await storage.keys.get(key_id)
    assert stored is not None
    assert stored.last_used_at == START + timedelta(seconds=61)


async def test_without_a_poller_a_request_flushes_uses_older_than_the_resolution(
    service: KeyturnService, storage: Storage, clock: FakeClock
) -> None:
    first, second = await service.create_key(), await service.create_key()
    await service.authenticate(first.secret, issue_refresh_token=False)
    clock.advance(61)

    await service.authenticate(second.secret, issue_refresh_token=False)

    for created, at in ((first, START), (second, START + timedelta(seconds=61))):
        stored = await storage.keys.get(created.record.id)
        assert stored is not None
        assert stored.last_used_at == at


def _record(key_id: str, key_hash: bytes, **fields: Any) -> ApiKeyRecord:
    return ApiKeyRecord(id=key_id, key_hash=key_hash, created_at=START, **fields)


def test_the_cache_is_bounded_and_drops_the_oldest_entry() -> None:
    cache = KeyCache(TTL, max_entries=2)
    for n in range(3):
        cache.put(bytes([n]) * 32, _record(f"k{n}", bytes([n]) * 32), START)

    assert len(cache) == 2
    assert cache.get(bytes([0]) * 32, START) is None
    assert cache.get(bytes([2]) * 32, START) is not None


def test_a_previous_secret_leaves_the_cache_when_its_grace_ends() -> None:
    cache = KeyCache(TTL)
    old, new = b"o" * 32, b"n" * 32
    grace_end = START + timedelta(seconds=1)
    record = _record("k", new, previous_hash=old, previous_expires_at=grace_end)
    cache.put(old, record, START)

    assert cache.get(old, START) is record
    assert cache.get(old, grace_end) is None


def test_a_clock_that_went_back_reads_again() -> None:
    cache = KeyCache(TTL)
    cache.put(b"h" * 32, _record("k", b"h" * 32), START)

    assert cache.get(b"h" * 32, START - timedelta(seconds=1)) is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(timedelta(0))
    cache.put(b"h" * 32, _record("k", b"h" * 32), START)

    assert len(cache) == 0
    assert not cache.enabled


async def test_a_failed_flush_keeps_the_use_for_the_next() -> None:
    usage = KeyUsage(timedelta(minutes=1))
    usage.note(_record("k", b"h" * 32), START)

    class Down:
        async def mark_used(self, key_id: str, *, at: object) -> None:
            raise StorageUnavailableError("down")

    with pytest.raises(StorageUnavailableError):
        await usage.flush(Down())  # type: ignore[arg-type]
    assert usage.pending == 1
