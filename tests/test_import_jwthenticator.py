"""``keyturn import jwthenticator``: dry run, delta sync, and bad input refused in one line.

The JWThenticator database is written here with JWThenticator 1.6.3's own table layout
and hashing (hex SHA-512 of the key; a refresh token is SHA-512 of a uuid4, in plaintext);
``tests/compat/test_move_from_jwthenticator.py`` runs the real server instead.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from keyturn.cli import app
from keyturn.core.jwthenticator_tokens import jwthenticator_kid
from keyturn.storage.migrate import upgrade
from tests.storage_fixtures import (
    create_postgresql_database,
    drop_postgresql_database,
    run_in_own_loop,
)

pytestmark = pytest.mark.postgresql

runner = CliRunner()
NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
TABLES = (
    "CREATE TABLE keys (id SERIAL PRIMARY KEY, created TIMESTAMP, expires_at TIMESTAMP, "
    "key_hash VARCHAR(256) UNIQUE, identifier UUID NOT NULL)",
    "CREATE TABLE refresh_tokens (id SERIAL PRIMARY KEY, created TIMESTAMP, "
    "expires_at TIMESTAMP, token VARCHAR(512), key_id INTEGER REFERENCES keys(id))",
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def jwthenticator_jwt(key: rsa.RSAPrivateKey = RSA_KEY) -> str:
    """A token as JWThenticator signs it (kid: SHA-1 of the DER public key)."""
    now = int(datetime.now(UTC).timestamp())
    claims = {"token_id": str(uuid.uuid4()), "identifier": str(uuid.uuid4())}
    return jwt.encode(
        claims | {"iat": now, "exp": now + 90000},
        key,
        algorithm="RS256",
        headers={"kid": jwthenticator_kid(key.public_key())},
    )


async def _execute(url: URL, *statements: str, args: list[tuple[Any, ...]] | None = None) -> None:
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        for statement in statements:
            if args is None:
                await conn.execute(statement)
            else:
                await conn.executemany(statement, args)
    finally:
        await conn.close()


async def _fetch(url: URL, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def add_keys(url: URL, count: int, *, expires_in: timedelta = timedelta(days=2)) -> list[str]:
    """Register ``count`` keys the way JWThenticator's KeyManager does; return the keys."""
    keys = [f"key-{uuid.uuid4().hex}" for _ in range(count)]
    rows = [
        (NOW, NOW + expires_in, hashlib.sha512(key.encode()).hexdigest(), uuid.uuid4())
        for key in keys
    ]
    run_in_own_loop(
        lambda: _execute(
            url,
            "INSERT INTO keys (created, expires_at, key_hash, identifier) VALUES ($1, $2, $3, $4)",
            args=rows,
        )
    )
    return keys


def add_tokens(url: URL, key_ids: list[int], *, expires_in: timedelta = timedelta(days=1)) -> None:
    """One refresh token per key id, as TokenManager.create_refresh_token makes them."""
    rows = [
        (NOW, NOW + expires_in, hashlib.sha512(uuid.uuid4().bytes).hexdigest(), key_id)
        for key_id in key_ids
    ]
    run_in_own_loop(
        lambda: _execute(
            url,
            "INSERT INTO refresh_tokens (created, expires_at, token, key_id) "
            "VALUES ($1, $2, $3, $4)",
            args=rows,
        )
    )


@pytest.fixture
def database(postgresql_admin_url: URL) -> Iterator[URL]:
    """One database holding JWThenticator's tables and (schema keyturn) Keyturn's."""
    url = run_in_own_loop(lambda: create_postgresql_database(postgresql_admin_url))
    try:
        run_in_own_loop(lambda: _execute(url, *TABLES))
        run_in_own_loop(lambda: upgrade(url.render_as_string(hide_password=False)))
        yield url
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(postgresql_admin_url, url))


@pytest.fixture
def keyturn_env(database: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keyturn set up on ``database``, with JWThenticator's RSA key file; returns its path."""
    key_file = tmp_path / "jwt_rsa.pem"
    key_file.write_bytes(_pem(RSA_KEY))
    monkeypatch.setenv("KEYTURN_DATABASE_URL", database.render_as_string(hide_password=False))
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(tmp_path / "kt"))
    monkeypatch.setenv("RSA_PRIVATE_KEY_PATH", str(key_file))
    return key_file


def invoke(database: URL | str, *args: str) -> Any:
    source = database if isinstance(database, str) else database.render_as_string(False)
    return runner.invoke(app, ["import", "jwthenticator", "--from", source, *args])


def keyturn_rows(database: URL) -> dict[str, int]:
    tables = ("api_keys", "refresh_tokens", "signing_keys", "audit_events", "server_settings")
    counts = {}
    for table in tables:
        query = f"SELECT count(*) FROM keyturn.{table}"  # noqa: S608 -- fixed names
        rows = run_in_own_loop(lambda q=query: _fetch(database, q))
        counts[table] = rows[0][0]
    return counts


EMPTY = {
    "api_keys": 0,
    "refresh_tokens": 0,
    "signing_keys": 0,
    "audit_events": 0,
    "server_settings": 0,
}


def one_error_line(result: Any, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return str(lines[0])


# -- what is imported ---------------------------------------------------------------------------


def test_dry_run_counts_and_skips_with_reasons_and_writes_nothing(
    database: URL, keyturn_env: Path
) -> None:
    add_keys(database, 3)
    add_keys(database, 1, expires_in=-timedelta(hours=1))
    add_tokens(database, [1, 2])
    add_tokens(database, [3], expires_in=-timedelta(minutes=1))
    add_tokens(database, [4])  # unexpired, but its key has expired

    result = invoke(database, "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True
    assert summary["keys"] == {"new": 3, "renewed": 0, "unchanged": 0, "skipped": {"expired": 1}}
    assert summary["refresh_tokens"] == {
        "new": 2,
        "unchanged": 0,
        "skipped": {"expired": 1, "its key expired": 1},
    }
    assert summary["signing_key"]["jwthenticator_kid"] == jwthenticator_kid(RSA_KEY.public_key())
    assert keyturn_rows(database) == EMPTY


def test_import_is_idempotent_and_a_second_run_is_a_delta_sync(
    database: URL, keyturn_env: Path
) -> None:
    add_keys(database, 2)
    add_tokens(database, [1, 2])
    first = invoke(database, "--json", "--check-jwt", jwthenticator_jwt())
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["keys"]["new"] == 2
    stored = keyturn_rows(database)

    # During the cut-over window JWThenticator keeps running: a key is re-registered
    # (its expiry renewed), a new key is registered and authenticates.
    run_in_own_loop(
        lambda: _execute(
            database, "UPDATE keys SET expires_at = expires_at + interval '1 day' WHERE id = 1"
        )
    )
    add_keys(database, 1)
    add_tokens(database, [3])
    second = invoke(database, "--json")

    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["keys"] == {"new": 1, "renewed": 1, "unchanged": 1, "skipped": {}}
    assert summary["refresh_tokens"] == {"new": 1, "unchanged": 2, "skipped": {}}
    after = keyturn_rows(database)
    assert after["api_keys"] == stored["api_keys"] + 1
    assert after["refresh_tokens"] == stored["refresh_tokens"] + 1
    assert after["signing_keys"] == stored["signing_keys"] == 2  # active + legacy kid
    third = json.loads(invoke(database, "--json").stdout)
    assert (third["keys"]["new"], third["refresh_tokens"]["new"]) == (0, 0)


def test_into_the_embedded_sqlite_database(
    database: URL, keyturn_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyturn's own database may be another one than JWThenticator's (here SQLite)."""
    monkeypatch.delenv("KEYTURN_DATABASE_URL")
    add_keys(database, 2)
    add_tokens(database, [1])
    dry = invoke(database, "--json", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["keys"]["new"] == 2
    assert not (keyturn_env.parent / "kt").exists()  # a dry run creates no database

    result = invoke(database, "--json")

    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    keys = json.loads(listed.stdout)["keys"]
    assert sorted(key["id"] for key in keys) == ["jwt1", "jwt2"]
    assert all(key["legacy_hash"] for key in keys)
    assert keyturn_rows(database)["api_keys"] == 0  # nothing went to the source database


def test_the_output_for_people(database: URL, keyturn_env: Path) -> None:
    add_keys(database, 1)

    result = invoke(database, "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "keys            1 new, 0 renewed, 0 unchanged"
    assert lines[-1] == "dry run: nothing was written"


def test_a_progress_bar_goes_to_stderr_when_asked(database: URL, keyturn_env: Path) -> None:
    add_keys(database, 3)

    result = invoke(database, "--json", "--progress")

    assert result.exit_code == 0, result.output
    assert "importing" in result.stderr
    assert json.loads(result.stdout)["keys"]["new"] == 3  # stdout stays pure JSON


def test_the_source_is_read_in_a_read_only_transaction(
    database: URL, keyturn_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write slipped into the source's transaction is refused by PostgreSQL."""
    from keyturn.importers import jwthenticator as importer

    async def writes(conn: Any) -> None:
        import sqlalchemy as sa

        await conn.execute(sa.text("CREATE TABLE stolen (id int)"))

    monkeypatch.setattr(importer, "_check_tables", writes)

    result = invoke(database, "--dry-run")

    assert result.exit_code != 0
    tables = run_in_own_loop(
        lambda: _fetch(database, "SELECT 1 FROM pg_tables WHERE tablename = 'stolen'")
    )
    assert tables == []


# -- bad input: one line, non-zero, Keyturn's database unchanged ---------------------------------


def test_a_wrong_url(database: URL, keyturn_env: Path) -> None:
    wrong = database.set(database="no_such_database_" + uuid.uuid4().hex[:8])

    line = one_error_line(invoke(wrong))

    assert "cannot read the JWThenticator database" in line
    assert keyturn_rows(database) == EMPTY


def test_an_unparsable_url(database: URL, keyturn_env: Path) -> None:
    line = one_error_line(invoke("not a url"), exit_code=2)

    assert "invalid settings" in line
    assert keyturn_rows(database) == EMPTY


def test_a_database_that_is_not_jwthenticators(
    database: URL, keyturn_env: Path, postgresql_admin_url: URL
) -> None:
    line = one_error_line(invoke(postgresql_admin_url))  # the maintenance database

    assert "not a JWThenticator database: it has no table 'keys'" in line
    assert keyturn_rows(database) == EMPTY


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        pytest.param(
            "ALTER TABLE keys DROP COLUMN identifier",
            "not a JWThenticator 1.6.3 table: 'keys' lacks column(s) identifier",
            id="missing-column",
        ),
        pytest.param(
            "INSERT INTO refresh_tokens (created, expires_at, token, key_id) "
            "VALUES (now(), now() + interval '1 day', NULL, 1)",
            "half-written table 'refresh_tokens': row id 1 has no usable token",
            id="token-without-value",
        ),
        pytest.param(
            "INSERT INTO keys (created, expires_at, key_hash, identifier) "
            "VALUES (now(), NULL, repeat('a', 128), gen_random_uuid())",
            "half-written table 'keys': row id 2 has no expires_at",
            id="key-without-expiry",
        ),
    ],
)
def test_a_half_written_table(
    database: URL, keyturn_env: Path, statement: str, message: str
) -> None:
    add_keys(database, 1)
    run_in_own_loop(lambda: _execute(database, statement))

    line = one_error_line(invoke(database))

    assert message in line
    assert keyturn_rows(database) == EMPTY


def test_a_key_file_that_did_not_sign_the_tokens(database: URL, keyturn_env: Path) -> None:
    add_keys(database, 1)
    keyturn_env.write_bytes(_pem(OTHER_KEY))

    line = one_error_line(invoke(database, "--check-jwt", jwthenticator_jwt(RSA_KEY)))

    assert "the signing key does not match the tokens" in line
    assert keyturn_rows(database) == EMPTY


def test_a_key_file_that_does_not_match_jwthenticators_public_key(
    database: URL, keyturn_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = tmp_path / "jwt_rsa.pub.pem"
    public.write_bytes(
        OTHER_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    monkeypatch.setenv("RSA_PUBLIC_KEY_PATH", str(public))

    line = one_error_line(invoke(database))

    assert "does not match JWThenticator's public key" in line
    assert keyturn_rows(database) == EMPTY


def test_an_ecdsa_key_is_not_jwthenticators(database: URL, keyturn_env: Path) -> None:
    from keyturn.core.signing import SigningKey

    keyturn_env.write_bytes(SigningKey.generate("ES256").private_pem())

    line = one_error_line(invoke(database))

    assert "not the RSA key JWThenticator signs with" in line
    assert keyturn_rows(database) == EMPTY
