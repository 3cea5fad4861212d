"""`keyturn.testing`: the service runs on `InMemoryStorage` as on a database.

The storage contract itself runs on it in ``tests/storage/`` (its ``storage`` fixture);
this checks the use the module is for: a `KeyturnService` with no database.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from keyturn.core.keywrap import KeyEncryptionKey, KeyWrapper
from keyturn.core.secrets import Pepper
from keyturn.errors import InvalidGrantError
from keyturn.service import KeyturnService, ServiceConfig
from keyturn.testing import FakeClock, InMemoryStorage


@pytest.fixture
def clock() -> FakeClock:
    """The service's clock."""
    return FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def service(clock: FakeClock) -> KeyturnService:
    """A started service over an empty `InMemoryStorage`."""
    svc = KeyturnService(
        InMemoryStorage(),
        pepper=Pepper(b"p" * 32),
        key_wrapper=KeyWrapper([KeyEncryptionKey(b"k" * 32)]),
        config=ServiceConfig(issuer="https://kt.test", audience="api"),
        clock=clock,
    )
    await svc.start()
    return svc


async def test_a_key_authenticates_refreshes_and_a_reused_refresh_token_revokes_the_family(
    service: KeyturnService, clock: FakeClock
) -> None:
    created = await service.create_key(name="ci")
    pair = await service.authenticate(created.secret)
    assert pair.refresh_token is not None

    rotated = await service.refresh(pair.refresh_token)

    assert rotated.refresh_token is not None
    assert rotated.access.jti != pair.access.jti
    clock.advance(minutes=1)  # past the reuse grace: a replay now is theft
    with pytest.raises(InvalidGrantError):  # reuse of a rotated token (RFC 9700 §4.14.2)
        await service.refresh(pair.refresh_token)
    with pytest.raises(InvalidGrantError):  # ... revoked its successor too
        await service.refresh(rotated.refresh_token)


async def test_a_revoked_key_no_longer_authenticates(service: KeyturnService) -> None:
    created = await service.create_key()
    await service.authenticate(created.secret)

    await service.revoke_key(created.record.id, reason="leaked")

    with pytest.raises(InvalidGrantError):
        await service.authenticate(created.secret)
    actions = [stored.event.action for stored in await service.storage.audit.list(limit=10)]
    assert "key.revoked" in actions


def test_importing_keyturn_testing_loads_no_database_driver() -> None:
    """The in-memory storage is for tests without a database: no SQL stack comes with it."""
    script = (
        "import sys, keyturn.testing; "
        "print(sorted(m for m in ('sqlalchemy', 'asyncpg', 'aiosqlite') if m in sys.modules))"
    )
    result = subprocess.run(  # noqa: S603 -- our own interpreter and a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
