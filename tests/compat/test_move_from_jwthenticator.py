"""Acceptance of issue 14: a live JWThenticator 1.6.3 fleet moves to Keyturn unnoticed.

The real ``jwthenticator==1.6.3`` server runs from its own virtualenv (the one
``test_jwthenticator_client.py`` builds in ``.cache/``) on a PostgreSQL database of its
own. Its ``InternalClient`` registers keys and its ``Client`` objects authenticate. Then
JWThenticator stops, ``keyturn db upgrade`` and ``keyturn import jwthenticator`` run
against that same database (Keyturn's tables go in schema ``keyturn``), and ``keyturn
serve`` takes over the same URL with JWThenticator's environment (``DB_*``,
``RSA_PRIVATE_KEY_PATH``). The same ``Client`` objects, still alive in the driver, then use
their old JWTs, refresh tokens and keys: nothing may answer 401, no client may drop a
credential, and ``keyturn.verify`` accepts the old JWTs through ``/jwks``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import URL

from keyturn.verify import JWKSVerifier
from tests.compat.test_jwthenticator_client import VENV, _build_venv
from tests.serve_fixtures import free_port, keyturn_command, server_environment
from tests.storage_fixtures import (
    create_postgresql_database,
    drop_postgresql_database,
    run_in_own_loop,
)

pytestmark = pytest.mark.postgresql

DRIVER = Path(__file__).with_name("jwthenticator_move_driver.py")
CLIENTS = 4
DEADLINE = 60.0


@pytest.fixture(scope="session")
def jwthenticator_venv() -> Path:
    """The interpreter of ``test_jwthenticator_client``'s ``jwthenticator==1.6.3`` venv.

    That module's own fixture holds the cache lock for its whole session, so this one
    takes it only while it builds a venv that is not there yet.
    """
    python = VENV / "bin" / "python"
    if (VENV / ".complete").exists():
        return python
    VENV.parent.mkdir(exist_ok=True)
    with (VENV.parent / f"{VENV.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_venv()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def jwthenticator_database(postgresql_admin_url: URL) -> Iterator[URL]:
    database = run_in_own_loop(lambda: create_postgresql_database(postgresql_admin_url))
    try:
        yield database
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(postgresql_admin_url, database))


def _db_environment(database: URL) -> dict[str, str]:
    """JWThenticator's own DB_* variables for ``database`` (Keyturn reads them too)."""
    env = {
        "DB_USER": database.username or "postgres",
        "DB_HOST": f"{database.host or '127.0.0.1'}:{database.port or 5432}",
        "DB_NAME": str(database.database),
    }
    if database.password:
        env["DB_PASS"] = str(database.password)
    return env


def _wait_healthy(url: str, process: subprocess.Popen[Any], log: Path) -> None:
    end = time.monotonic() + DEADLINE
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > end:
            pytest.fail(f"{url} did not answer within {DEADLINE} s:\n{log.read_text()}")
        time.sleep(0.1)  # poll interval


def _stop(process: subprocess.Popen[Any]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=20)


def _keyturn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- this interpreter, fixed arguments
        keyturn_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def _source_counts(database: URL) -> tuple[int, int]:
    conn = await asyncpg.connect(database.render_as_string(hide_password=False))
    try:
        keys = await conn.fetchval("SELECT count(*) FROM public.keys")
        tokens = await conn.fetchval("SELECT count(*) FROM public.refresh_tokens")
    finally:
        await conn.close()
    return int(keys), int(tokens)


async def _verify_via_jwks(server: str, tokens: list[str]) -> list[str]:
    async with JWKSVerifier(
        f"{server}jwks",
        issuer="http://localhost:8080",
        audience="keyturn",
        allow_insecure_http=True,
    ) as verifier:
        return [(await verifier.verify(token)).identifier or "" for token in tokens]


def test_a_live_fleet_moves_without_a_client_noticing(
    jwthenticator_venv: Path,
    jwthenticator_database: URL,
    tmp_path: Path,
) -> None:
    port = free_port()
    server = f"http://127.0.0.1:{port}/"
    db_env = _db_environment(jwthenticator_database)
    jwt_log = tmp_path / "jwthenticator.log"
    jwt_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PORT": str(port),
        # JWThenticator writes a new key pair to these paths when they do not exist.
        "RSA_PUBLIC_KEY_PATH": str(tmp_path / "jwt_rsa.pub.pem"),
        "RSA_PRIVATE_KEY_PATH": str(tmp_path / "jwt_rsa.pem"),
        **db_env,
    }
    with jwt_log.open("wb") as log:
        jwthenticator = subprocess.Popen(  # noqa: S603 -- its venv's python, fixed module
            [str(jwthenticator_venv), "-m", "jwthenticator.server"],
            env=jwt_env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    keyturn: subprocess.Popen[bytes] | None = None
    driver: subprocess.Popen[str] | None = None
    try:
        _wait_healthy(f"{server}health", jwthenticator, jwt_log)
        driver = subprocess.Popen(  # noqa: S603 -- its venv's python and our driver
            [str(jwthenticator_venv), str(DRIVER), server, str(CLIENTS)],
            env={"PATH": jwt_env["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert driver.stdout is not None
        assert driver.stdin is not None
        line = driver.stdout.readline()
        assert line, driver.stderr.read() if driver.stderr else ""
        before = json.loads(line)["before"]
        assert len(before) == CLIENTS
        assert _stop(jwthenticator) in (0, -signal.SIGTERM)

        # -- the move: Keyturn beside JWThenticator's tables, JWThenticator's environment --
        keyturn_env = server_environment(
            {
                **db_env,
                "RSA_PRIVATE_KEY_PATH": jwt_env["RSA_PRIVATE_KEY_PATH"],
                "RSA_PUBLIC_KEY_PATH": jwt_env["RSA_PUBLIC_KEY_PATH"],
                "KEYTURN_DATA_DIR": str(tmp_path / "keyturn"),
            }
        )
        upgraded = _keyturn(keyturn_env, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        dry = _keyturn(keyturn_env, "import", "jwthenticator", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["keys"]["new"] == CLIENTS
        imported = _keyturn(
            keyturn_env, "import", "jwthenticator", "--json", "--check-jwt", before[0]["jwt"]
        )
        assert imported.returncode == 0, imported.stderr
        summary = json.loads(imported.stdout)
        assert summary["keys"]["new"] == CLIENTS
        assert summary["refresh_tokens"]["new"] == CLIENTS
        assert summary["dry_run"] is False
        again = json.loads(_keyturn(keyturn_env, "import", "jwthenticator", "--json").stdout)
        assert (again["keys"]["new"], again["keys"]["unchanged"]) == (0, CLIENTS)
        assert again["refresh_tokens"]["unchanged"] == CLIENTS

        keyturn_log = tmp_path / "keyturn.log"
        with keyturn_log.open("wb") as log:
            keyturn = subprocess.Popen(  # noqa: S603 -- this interpreter, fixed arguments
                keyturn_command("serve"),
                env={
                    **keyturn_env,
                    "KEYTURN_PUBLIC_PORT": str(port),
                    "KEYTURN_ADMIN_PORT": str(free_port()),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_healthy(f"{server}healthz", keyturn, keyturn_log)

        # Gateways and services reading /jwks accept the JWTs JWThenticator issued.
        identifiers = asyncio.run(_verify_via_jwks(server, [c["jwt"] for c in before]))
        assert identifiers == [c["identifier"] for c in before]
        for client in before:  # and Keyturn's own validation route (nginx auth_request)
            checked = httpx.get(
                f"{server}v1/validate", headers={"Authorization": f"Bearer {client['jwt']}"}
            )
            assert checked.status_code == 200, checked.text

        # -- the same Client objects, after the move -------------------------------------
        driver.stdin.write("moved\n")
        driver.stdin.flush()
        line = driver.stdout.readline()
        assert line, driver.stderr.read() if driver.stderr else ""
        for seen in json.loads(line)["after"]:
            assert seen == {
                "identifier": seen["identifier"],
                "errors": [],
                "validate": 200,
                "validate_request": 200,
                "service": 200,
                "refresh": "ok",
                "refreshed_jwt_is_new": True,
                "refresh_token_kept": True,
                "service_with_refreshed_jwt": 200,
                "authenticate": "ok",
                "service_after_authenticate": 200,
                "key_kept": True,
                "refresh_token_held": True,
            }
        assert driver.wait(timeout=DEADLINE) == 0

        # Each key that authenticated now carries the peppered hash, not SHA-512.
        listed = _keyturn(keyturn_env, "keys", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        keys = json.loads(listed.stdout)["keys"]
        assert sorted(k["identifier"] for k in keys) == sorted(c["identifier"] for c in before)
        assert [k["legacy_hash"] for k in keys] == [False] * CLIENTS
        # JWThenticator's tables were only read.
        assert run_in_own_loop(lambda: _source_counts(jwthenticator_database)) == (
            CLIENTS,
            CLIENTS,
        )
        assert _stop(keyturn) == 0
        assert "Traceback" not in keyturn_log.read_text()
    finally:
        for process in (driver, jwthenticator, keyturn):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        if driver is not None:
            for pipe in (driver.stdin, driver.stdout, driver.stderr):
                if pipe is not None:
                    pipe.close()
