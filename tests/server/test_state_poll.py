"""`KeyturnState`'s poll: what one instance picks up from the database others share."""

from __future__ import annotations

from datetime import timedelta

from keyturn.server import KeyturnState
from keyturn.testing import FakeClock
from tests.server.conftest import OpenState

DELAY = timedelta(minutes=10)


def signing_kid(state: KeyturnState) -> str | None:
    key = state.service.key_set.signing_key
    return None if key is None else key.kid


async def test_the_poll_activates_a_due_signing_key_on_every_instance(
    open_state: OpenState, sqlite_database_url: str, clock: FakeClock
) -> None:
    """Rotated on ``one``: published by both at once, signing on both once due."""
    one = await open_state(sqlite_database_url, signing_key_publish_delay=DELAY)
    other = await open_state(sqlite_database_url, signing_key_publish_delay=DELAY)
    old_kid = signing_kid(one)

    new_kid = await one.service.rotate_signing_key()
    await other._poll()
    published = {jwk["kid"] for jwk in other.service.jwks()["keys"]}
    clock.advance(DELAY.total_seconds() - 1)
    await one._poll()
    await other._poll()
    before = [signing_kid(one), signing_kid(other)]
    clock.advance(1)
    await other._poll()  # the first instance to poll activates it
    await one._poll()

    assert {old_kid, new_kid} <= published
    assert before == [old_kid, old_kid]
    assert [signing_kid(one), signing_kid(other)] == [new_kid, new_kid]
