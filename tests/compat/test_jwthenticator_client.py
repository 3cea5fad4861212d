"""The unchanged JWThenticator 1.6.3 client against a running Keyturn.

``jwthenticator==1.6.3`` pins ``cryptography<=43.0.4``, ``asyncpg ^0.28`` and
``pg8000==1.16.6``, which clash with Keyturn's own dependencies, so it is installed with
plain ``pip install jwthenticator==1.6.3`` (its own declared dependencies, nothing
changed) into a separate virtualenv, built once and kept in ``.cache/`` at the repository
root (gitignored; delete it to rebuild). ``jwthenticator_driver.py`` runs inside that
virtualenv: ``InternalClient`` against the admin listener, ``Client`` against the public
one, and an aiohttp service guarded by ``server_utils.authenticate``. Its transcript is
compared line by line.

JWThenticator's client reads ``exp`` from the JWT without verifying it, passing
``algorithms=["RS256"]`` only because PyJWT asks for a list, so Keyturn's default ES256
tokens (and EdDSA ones) work unchanged: no ``KEYTURN_SIGNING_ALGORITHM=RS256`` needed.

When PyPI cannot be reached the test skips, saying so -- except under ``CI=true``, where
it fails. Importing jwthenticator needs no environment variables (its ``consts`` read
``DB_*``, ``JWT_*`` and friends with defaults), so the driver runs with a minimal one.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.serve_fixtures import KeyturnServer

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("jwthenticator_driver.py")
REQUIREMENT = "jwthenticator==1.6.3"
PYTHON_TAG = f"py{sys.version_info.major}.{sys.version_info.minor}"
VENV = REPO / ".cache" / f"jwthenticator-1.6.3-{PYTHON_TAG}"
INSTALL_TIMEOUT = 600
#: Lines of pip output that mean "the index cannot be reached", not "the install is broken".
_NETWORK_TROUBLE = (
    "Could not find a version that satisfies",
    "No matching distribution found",
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ReadTimeoutError",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the JWThenticator compatibility test may not skip)")
    pytest.skip(reason)


def _build_venv() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / ".complete"
    if marker.exists() and marker.read_text() == REQUIREMENT:
        return python
    subprocess.run(  # noqa: S603 -- this interpreter, a fixed argv
        [sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120
    )
    try:
        subprocess.run(  # noqa: S603 -- the venv's pip, a fixed requirement
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                REQUIREMENT,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            env={**os.environ, "PIP_NO_INPUT": "1"},
        )
    except subprocess.CalledProcessError as exc:
        output = f"{exc.stdout}\n{exc.stderr}"
        if any(sign in output for sign in _NETWORK_TROUBLE):
            _unavailable(f"cannot install {REQUIREMENT}: PyPI not reachable: {exc.stderr[-500:]}")
        pytest.fail(f"pip install {REQUIREMENT} failed:\n{output}")
    except subprocess.TimeoutExpired:
        _unavailable(f"pip install {REQUIREMENT} took over {INSTALL_TIMEOUT} s: PyPI too slow")
    marker.write_text(REQUIREMENT)
    return python


@pytest.fixture(scope="session")
def jwthenticator_python() -> Path:
    """The interpreter of a virtualenv holding the unchanged ``jwthenticator==1.6.3``."""
    VENV.parent.mkdir(exist_ok=True)
    # A lock while building: concurrent pytest sessions (and xdist workers) in one checkout
    # share the cache directory; a complete venv is only read afterwards.
    with (VENV.parent / f"{VENV.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_venv()  # closing the file releases the lock


def expected_transcript(alg: str) -> str:
    return "\n".join(
        [
            "jwthenticator: 1.6.3",
            "InternalClient.register_key: ok",
            "InternalClient.register_key again: ok",
            "InternalClient.is_key_registered: True",
            "InternalClient.is_key_registered unknown: False",
            "InternalClient.register_key on the public listener: RegisterKeyError(404,)",
            f"Client.authenticate: jwt alg={alg} expired=False",
            "jwt identifier claim: True",
            "Client.refresh: new jwt=True same refresh token=True expired=False",
            'Client.get_with_auth: 200 {"method": "GET", "body": ""}',
            'Client.post_with_auth: 200 {"method": "POST", "body": "hello"}',
            'Client.request_with_auth PUT: 200 {"method": "PUT", "body": ""}',
            "get_with_auth after a refused token: 200 refreshed=True",
            "Client with an expired jwt: expired=True",
            '  get_with_auth: 200 {"method": "GET", "body": ""}',
            'Client with only a key: get_with_auth: 200 {"method": "GET", "body": ""}',
            'Client with only a refresh token: get_with_auth: 200 {"method": "GET", "body": ""}',
            "service without Authorization: 403 {}",
            "service with a malformed Authorization: 400 {}",
            "service with Bearer junk: 401 {}",
            "Client.authenticate with an unknown key: AuthenticationError key kept=False",
            "Client.refresh with an unknown refresh token: RefreshError refresh token kept=False",
            "done: ok",
            "",
        ]
    )


@pytest.mark.parametrize(
    ("env", "slash", "alg"),
    [
        pytest.param({}, "", "ES256", id="es256"),
        pytest.param({}, "/", "ES256", id="es256-trailing-slash"),
        pytest.param({"KEYTURN_URL_PREFIX": "/auth"}, "", "ES256", id="url-prefix"),
        pytest.param({"URL_PREFIX": "/auth/"}, "/", "ES256", id="legacy-url-prefix-slash"),
        pytest.param({"KEYTURN_SIGNING_ALGORITHM": "RS256"}, "", "RS256", id="rs256"),
        pytest.param({"KEYTURN_SIGNING_ALGORITHM": "EdDSA"}, "/", "EdDSA", id="eddsa"),
    ],
)
def test_jwthenticator_client_against_keyturn(
    keyturn_server: Callable[..., KeyturnServer],
    jwthenticator_python: Path,
    env: dict[str, str],
    slash: str,
    alg: str,
) -> None:
    """InternalClient, Client and the server_utils.authenticate decorator, unchanged,
    with the server URL given with or without a path prefix and a trailing slash."""
    server = keyturn_server(env=env)
    result = subprocess.run(  # noqa: S603 -- the venv's interpreter and our driver
        [str(jwthenticator_python), str(DRIVER), server.public + slash, server.admin + slash],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=jwthenticator_python.parent,
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout == expected_transcript(alg)
    assert server.stop() == 0
    assert "Traceback" not in server.log()
