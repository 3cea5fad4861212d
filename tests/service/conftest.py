"""Fixtures for the service tests: a started service over each storage backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyturn.core.keywrap import KeyEncryptionKey, KeyWrapper
from keyturn.core.secrets import Pepper
from keyturn.service import KeyturnService, ServiceConfig
from keyturn.storage.base import Storage
from keyturn.testing import FakeClock

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PEPPER = Pepper(b"p" * 32)
WRAPPER = KeyWrapper([KeyEncryptionKey(b"k" * 32)])
CONFIG = ServiceConfig(issuer="https://kt.test", audience="api")


@pytest.fixture
def clock() -> FakeClock:
    """A clock standing at START until a test moves it."""
    return FakeClock(START)


def make_service(storage: Storage, clock: FakeClock, **config: object) -> KeyturnService:
    """A service over ``storage`` with the suite's pepper, KEK and config overrides."""
    settings = ServiceConfig(**{**_config_fields(CONFIG), **config})  # type: ignore[arg-type]
    return KeyturnService(storage, pepper=PEPPER, key_wrapper=WRAPPER, config=settings, clock=clock)


def _config_fields(config: ServiceConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


@pytest.fixture
async def service(storage: Storage, clock: FakeClock) -> KeyturnService:
    """A started service (one active signing key) over a fresh database."""
    svc = make_service(storage, clock)
    await svc.start()
    return svc
