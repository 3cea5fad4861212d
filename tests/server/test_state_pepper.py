"""`KeyturnState.open` refuses a pepper other than the one the database was set up with."""

from __future__ import annotations

import base64

import pytest

from keyturn.errors import PepperMismatchError
from tests.server.conftest import PEPPER, OpenState

OTHER_PEPPER = base64.urlsafe_b64encode(b"q" * 32).decode().rstrip("=")


async def test_reopening_with_the_same_pepper_works(
    open_state: OpenState, database_url: str
) -> None:
    first = await open_state(database_url, pepper=PEPPER)
    kid = first.service.key_set.kids

    again = await open_state(database_url, pepper=PEPPER)

    assert again.service.key_set.kids == kid


async def test_opening_with_another_pepper_is_refused(
    open_state: OpenState, database_url: str
) -> None:
    await open_state(database_url, pepper=PEPPER)

    with pytest.raises(PepperMismatchError, match="give every instance the same pepper"):
        await open_state(database_url, pepper=OTHER_PEPPER)
