"""Keyturn's own PostgreSQL schema (``KEYTURN_DATABASE_SCHEMA``) beside other applications."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url
from typer.testing import CliRunner

from keyturn.cli import app
from keyturn.storage.migrate import current_revision, head_revision, upgrade
from keyturn.storage.schema import SchemaClashError, SchemaMissingError, check_schema_name
from keyturn.storage.sql import SQLStorage
from tests.storage.factories import api_key, event
from tests.storage_fixtures import (
    create_postgresql_database,
    drop_postgresql_database,
    run_in_own_loop,
)

pytestmark = pytest.mark.postgresql

runner = CliRunner()
#: JWThenticator 1.6.3's tables, as its models create them.
JWTHENTICATOR_DDL = (
    "CREATE TABLE keys (id SERIAL PRIMARY KEY, created TIMESTAMP, expires_at TIMESTAMP, "
    "key_hash VARCHAR(256) UNIQUE, identifier CHAR(32) NOT NULL)",
    "CREATE TABLE refresh_tokens (id SERIAL PRIMARY KEY, created TIMESTAMP, "
    "expires_at TIMESTAMP, token VARCHAR(512), key_id INTEGER REFERENCES keys(id))",
    "INSERT INTO keys (created, expires_at, key_hash, identifier) "
    "VALUES (now(), now(), 'ab', '00000000000000000000000000000001')",
)


async def _tables(url: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(make_url(url).render_as_string(hide_password=False))
    try:
        rows = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await conn.close()
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["table_schema"], set()).add(row["table_name"])
    return found


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def pg_url(postgresql_admin_url: URL) -> Iterator[str]:
    """A new PostgreSQL database with no tables at all, dropped afterwards."""
    database = run_in_own_loop(lambda: create_postgresql_database(postgresql_admin_url))
    try:
        yield database.render_as_string(hide_password=False)
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(postgresql_admin_url, database))


async def test_tables_go_in_the_keyturn_schema_beside_jwthenticators(pg_url: str) -> None:
    await _execute(pg_url, *JWTHENTICATOR_DDL)

    await upgrade(pg_url)

    tables = await _tables(pg_url)
    assert tables["public"] == {"keys", "refresh_tokens"}
    assert {"api_keys", "refresh_tokens", "signing_keys", "alembic_version"} <= tables["keyturn"]
    assert await current_revision(pg_url) == head_revision()
    storage = await SQLStorage.open(pg_url)
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.created"))
        assert (await storage.keys.get("k1")) is not None
    finally:
        await storage.close()


async def test_a_database_made_before_schemas_keeps_using_public(pg_url: str) -> None:
    await upgrade(pg_url, schema="public")  # the layout every earlier version made

    storage = await SQLStorage.open(pg_url, migrate=True)  # default schema: keyturn
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.created"))
    finally:
        await storage.close()

    tables = await _tables(pg_url)
    assert "keyturn" not in tables
    assert "api_keys" in tables["public"]
    assert await current_revision(pg_url) == head_revision()


async def test_foreign_tables_in_the_target_schema_are_one_clear_error(pg_url: str) -> None:
    await _execute(pg_url, *JWTHENTICATOR_DDL)

    with pytest.raises(SchemaClashError) as exc_info:
        await upgrade(pg_url, schema="public")

    assert "refresh_tokens" in exc_info.value.message
    assert "\n" not in exc_info.value.message
    assert (await _tables(pg_url))["public"] == {"keys", "refresh_tokens"}


def test_db_upgrade_reports_a_clash_in_one_line(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_execute(pg_url, *JWTHENTICATOR_DDL))
    monkeypatch.setenv("KEYTURN_DATABASE_SCHEMA", "public")

    result = runner.invoke(app, ["db", "upgrade", "--database-url", pg_url])

    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: the database already holds tables")
    assert "Traceback" not in result.output
    assert asyncio.run(_tables(pg_url))["public"] == {"keys", "refresh_tokens"}


@pytest.mark.parametrize("name", ["", "Keyturn", "pg_temp", "1abc", "a;drop", "a" * 64])
def test_schema_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        check_schema_name(name)


async def test_opening_a_database_without_keyturn_tables_says_run_db_upgrade(
    pg_url: str,
) -> None:
    await _execute(pg_url, *JWTHENTICATOR_DDL)

    with pytest.raises(SchemaMissingError) as exc_info:
        await SQLStorage.open(pg_url)

    assert "run `keyturn db upgrade` first" in exc_info.value.message
    assert "keyturn" not in await _tables(pg_url)


def test_cli_on_a_database_without_keyturn_tables_is_one_line(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asyncio.run(_execute(pg_url, *JWTHENTICATOR_DDL))
    monkeypatch.setenv("KEYTURN_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(tmp_path / "kt"))
    # The secrets are given, so the command gets as far as the database.
    monkeypatch.setenv("KEYTURN_KEK", secrets.token_urlsafe(32))
    monkeypatch.setenv("KEYTURN_PEPPER", secrets.token_urlsafe(32))

    result = runner.invoke(app, ["keys", "list"])

    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert "has no Keyturn tables: run `keyturn db upgrade`" in result.output
