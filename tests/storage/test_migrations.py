"""Migrations: every revision upgrades an empty database and the one before it, and the
result matches the tables the code uses."""

from __future__ import annotations

import asyncio
import sys
from importlib.resources import files

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from keyturn.storage.engine import create_engine
from keyturn.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import metadata

from .factories import api_key, event

# Oldest first: (revision, the revision it upgrades from; None for an empty database).
STEPS = [
    (script.revision, script.down_revision)
    for script in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]


def _schema_differences(connection: sa.Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_schema_differences)
    finally:
        await engine.dispose()


def test_the_revisions_form_one_line_ending_at_head() -> None:
    assert STEPS[0][1] is None
    assert [previous for _, previous in STEPS[1:]] == [revision for revision, _ in STEPS[:-1]]
    assert STEPS[-1][0] == head_revision()


async def test_upgrade_creates_the_whole_schema_on_an_empty_database(
    empty_database_url: str,
) -> None:
    assert await current_revision(empty_database_url) is None

    await upgrade(empty_database_url)

    assert await current_revision(empty_database_url) == head_revision()
    assert await _differences(empty_database_url) == []


async def test_upgrade_again_changes_nothing(empty_database_url: str) -> None:
    await upgrade(empty_database_url)
    storage = SQLStorage(create_engine(empty_database_url))
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))

        await upgrade(empty_database_url)

        assert await storage.keys.get("k1") is not None
    finally:
        await storage.close()
    assert await current_revision(empty_database_url) == head_revision()


@pytest.mark.parametrize(("revision", "previous"), STEPS, ids=[step[0] for step in STEPS])
async def test_each_revision_upgrades_the_database_of_the_one_before(
    empty_database_url: str, revision: str, previous: str | None
) -> None:
    if previous is not None:
        await upgrade(empty_database_url, previous)
        assert await current_revision(empty_database_url) == previous

    await upgrade(empty_database_url, revision)

    assert await current_revision(empty_database_url) == revision


async def test_concurrent_upgrades_from_two_processes_both_succeed(
    empty_database_url: str,
) -> None:
    """T-REL-08: two instances migrating one empty database at once."""
    script = (
        "import asyncio, sys\n"
        "from keyturn.storage.migrate import upgrade\n"
        "asyncio.run(upgrade(sys.argv[1]))\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", script, empty_database_url)
        for _ in range(2)
    ]

    codes = [await process.wait() for process in processes]

    assert codes == [0, 0]
    assert await current_revision(empty_database_url) == head_revision()
    assert await _differences(empty_database_url) == []


async def test_open_with_migrate_prepares_an_empty_database(empty_database_url: str) -> None:
    """The zero-setup default: migrate on start, then serve."""
    storage = await SQLStorage.open(empty_database_url, migrate=True)
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        assert await storage.keys.get("k1") is not None
    finally:
        await storage.close()


def test_the_migration_scripts_ship_in_the_package() -> None:
    migrations = files("keyturn.storage") / "migrations"

    assert (migrations / "env.py").is_file()
    assert (migrations / "script.py.mako").is_file()
    assert (migrations / "versions" / "0001_initial.py").is_file()
