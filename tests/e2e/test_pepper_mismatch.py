"""Two ``keyturn serve`` processes on one database with different peppers: the second
refuses to start, saying why, instead of answering 401 to every stored key."""

from __future__ import annotations

import base64
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.serve_fixtures import (
    START_DEADLINE,
    KeyturnServer,
    free_port,
    keyturn_command,
    server_environment,
)

Serve = Callable[..., KeyturnServer]
MESSAGE = (
    "error: this instance's KEYTURN_PEPPER differs from the one this database was set up "
    "with (every stored API key and refresh token would be refused); give every instance "
    "the same pepper, or the same KEYTURN_PEPPER_FILE (see docs/deployment.md)"
)


def _secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def _token_status(server: KeyturnServer, key: str) -> int:
    response = httpx.post(
        f"{server.public}/v1/token",
        data={"grant_type": "client_credentials"},
        auth=(key, ""),
        timeout=10,
    )
    return response.status_code


def test_a_second_instance_with_another_pepper_exits_1_naming_the_problem(
    keyturn_server: Serve, backend_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"  # holds the SQLite database; PostgreSQL is in backend_env
    shared = {**backend_env, "KEYTURN_KEK": _secret(), "KEYTURN_RATE_LIMIT_ENABLED": "false"}
    first_pepper, other_pepper = _secret(), _secret()
    first = keyturn_server(env={**shared, "KEYTURN_PEPPER": first_pepper}, data_dir=data_dir)
    created = httpx.post(f"{first.admin}/v1/admin/keys", json={}, timeout=10)
    assert created.status_code == 201, created.text
    env = server_environment(
        {
            **shared,
            "KEYTURN_PEPPER": other_pepper,
            "KEYTURN_DATA_DIR": str(data_dir),
            "KEYTURN_PUBLIC_PORT": str(free_port()),
            "KEYTURN_ADMIN_PORT": str(free_port()),
        }
    )

    second = subprocess.run(  # noqa: S603 -- this interpreter, a fixed argv
        keyturn_command("serve"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE,
        check=False,
    )

    assert second.returncode == 1, second
    assert second.stdout == ""
    assert second.stderr.strip().splitlines()[-1] == MESSAGE
    assert "Traceback" not in second.stderr
    for pepper in (first_pepper, other_pepper):
        assert pepper not in second.stderr
    # The first instance is untouched: its keys still work.
    assert _token_status(first, created.json()["key"]) == 200
    assert first.stop() == 0
