"""The pepper check at start: a database is bound to the pepper it was set up with."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from tests.service.conftest import CONFIG, PEPPER, START, WRAPPER, make_service
from tests.storage.factories import api_key, audit_actions, event

from keyturn.core.secrets import Pepper, SecretKind
from keyturn.errors import PepperMismatchError
from keyturn.service import PEPPER_FINGERPRINT_SETTING, KeyturnService
from keyturn.storage.engine import create_engine
from keyturn.storage.migrate import upgrade
from keyturn.storage.sql import SQLStorage
from keyturn.storage.sql.rows import api_key_values
from keyturn.storage.tables import api_keys
from keyturn.testing import FakeClock

OTHER_PEPPER = Pepper(b"q" * 32)
#: ``api_keys``' columns at revision 0002 (0005 added ``dpop_required``).
_COLUMNS_0002 = frozenset(api_keys.c.keys()) - {"dpop_required"}
MESSAGE = (
    "this instance's KEYTURN_PEPPER differs from the one this database was set up with "
    "(every stored API key and refresh token would be refused); give every instance the "
    "same pepper, or the same KEYTURN_PEPPER_FILE (see docs/deployment.md)"
)


def service_with(storage: SQLStorage, pepper: Pepper, clock: FakeClock) -> KeyturnService:
    return KeyturnService(storage, pepper=pepper, key_wrapper=WRAPPER, config=CONFIG, clock=clock)


async def test_first_start_records_the_pepper_fingerprint(
    storage: SQLStorage, clock: FakeClock
) -> None:
    await make_service(storage, clock).start()

    stored = await storage.claim_setting(
        PEPPER_FINGERPRINT_SETTING, "probe", at=START, audit=event("probe")
    )
    assert stored == PEPPER.fingerprint()
    assert (await audit_actions(storage))[0] == "server_setting.claimed"


async def test_a_restart_with_the_same_pepper_keeps_working(
    storage: SQLStorage, clock: FakeClock
) -> None:
    before = make_service(storage, clock)
    await before.start()
    created = await before.create_key()

    after = make_service(storage, clock)
    await after.start()

    assert (await after.authenticate(created.secret)).access.token
    assert (await audit_actions(storage)).count("server_setting.claimed") == 1


async def test_a_start_with_another_pepper_is_refused(
    storage: SQLStorage, clock: FakeClock
) -> None:
    first = make_service(storage, clock)
    await first.start()
    await first.create_key()
    actions = await audit_actions(storage)

    with pytest.raises(PepperMismatchError) as exc_info:
        await service_with(storage, OTHER_PEPPER, clock).start()

    assert exc_info.value.message == MESSAGE
    assert await audit_actions(storage) == actions  # refused before writing anything


async def test_the_refusal_names_neither_pepper_nor_fingerprint(
    storage: SQLStorage, clock: FakeClock
) -> None:
    await make_service(storage, clock).start()

    with pytest.raises(PepperMismatchError) as exc_info:
        await service_with(storage, OTHER_PEPPER, clock).start()

    text = f"{exc_info.value} {exc_info.value!r}"
    for pepper, raw in ((PEPPER, b"p" * 32), (OTHER_PEPPER, b"q" * 32)):
        assert pepper.fingerprint() not in text
        assert raw.decode() not in text


async def test_instances_racing_with_different_peppers_let_exactly_one_start(
    storage: SQLStorage, clock: FakeClock
) -> None:
    first, second = make_service(storage, clock), service_with(storage, OTHER_PEPPER, clock)

    results = await asyncio.gather(first.start(), second.start(), return_exceptions=True)

    assert sorted(type(result).__name__ for result in results) == [
        "NoneType",
        "PepperMismatchError",
    ]


async def test_a_database_from_before_the_check_adopts_the_running_pepper(
    empty_database_url: str, clock: FakeClock
) -> None:
    """Upgrading to 0003 leaves the fingerprint unset: the next start records its own,
    and keys hashed with that pepper before the upgrade keep working."""
    await upgrade(empty_database_url, "0002")
    secret = "a-legacy-key-from-before-the-upgrade"
    old = api_key("k1", key_hash=PEPPER.hash(secret, SecretKind.API_KEY), legacy=True)
    # Written as 0002's table has it: today's repositories know later columns.
    values = {k: v for k, v in api_key_values(old).items() if k in _COLUMNS_0002}
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.insert(api_keys).values(values))
    finally:
        await engine.dispose()
    await upgrade(empty_database_url)
    storage = SQLStorage(create_engine(empty_database_url))
    try:
        service = make_service(storage, clock)
        await service.start()

        assert (await service.authenticate(secret, identifier="svc")).access.token
        with pytest.raises(PepperMismatchError):
            await service_with(storage, OTHER_PEPPER, clock).start()
    finally:
        await storage.close()
