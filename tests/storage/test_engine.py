"""Engines: URL normalisation, the SQLite file's permissions and settings."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from keyturn.storage.engine import create_engine, default_sqlite_url, normalize_url
from keyturn.storage.sql import SQLStorage

from .factories import api_key, event


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@db:5432/kt", "postgresql+asyncpg://u@db:5432/kt"),
        ("postgres://u@db/kt", "postgresql+asyncpg://u@db/kt"),
        ("postgresql+asyncpg://u@db/kt", "postgresql+asyncpg://u@db/kt"),
        ("sqlite:///data/kt.db", "sqlite+aiosqlite:///data/kt.db"),
        ("sqlite:////abs/kt.db", "sqlite+aiosqlite:////abs/kt.db"),
        ("sqlite+aiosqlite:///kt.db", "sqlite+aiosqlite:///kt.db"),
    ],
)
def test_normalize_url_picks_the_async_driver(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_default_sqlite_url_is_keyturn_db_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert default_sqlite_url(Path(".keyturn")) == (
        f"sqlite+aiosqlite:///{tmp_path}/.keyturn/keyturn.db"
    )


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Run with umask 000, so only explicit modes protect new files (T-KEY-01)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
async def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    """T-KEY-03: the directory is 0700 and the file 0600, whatever the umask."""
    data_dir = tmp_path / "data"
    storage = SQLStorage(create_engine(default_sqlite_url(data_dir)))
    try:
        await storage.ping()
    finally:
        await storage.close()

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "keyturn.db").stat().st_mode) == 0o600


async def test_sqlite_connections_use_wal_and_wait_for_locks(tmp_path: Path) -> None:
    engine = create_engine(default_sqlite_url(tmp_path))
    try:
        async with engine.connect() as conn:
            settings = {
                pragma: (await conn.exec_driver_sql(f"PRAGMA {pragma}")).scalar()
                for pragma in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()

    assert settings == {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }


def test_engines_hide_bound_parameters() -> None:
    """T-LOG-03: statement errors and logs never show the values bound to them."""
    for url in ("sqlite://", "postgresql://u@127.0.0.1/x"):
        engine = create_engine(url)
        assert engine.sync_engine.hide_parameters is True
        engine.sync_engine.dispose()


async def test_in_memory_sqlite_works_for_quick_experiments() -> None:
    storage = await SQLStorage.open("sqlite://", migrate=True)
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        assert await storage.keys.get("k1") is not None
    finally:
        await storage.close()


async def test_sqlite_engines_from_elsewhere_are_refused(tmp_path: Path) -> None:
    """Without Keyturn's BEGIN IMMEDIATE hook, concurrent SQLite writers would deadlock."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    try:
        with pytest.raises(ValueError, match="create_engine"):
            SQLStorage(engine)
    finally:
        await engine.dispose()


async def test_storage_exposes_a_working_engine(sql_storage: SQLStorage) -> None:
    async with sql_storage.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
