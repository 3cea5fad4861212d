"""``keyturn.compat.jwthenticator`` runs the same flows as JWThenticator's own client.

The unchanged ``jwthenticator_driver.py`` (the script that proves JWThenticator 1.6.3's
client against Keyturn) runs with ``jwthenticator_shim/`` first on its path, so its
``from jwthenticator.client import Client, InternalClient`` imports Keyturn's drop-in:
migrating is that change of import. The transcript must equal the original client's, line
for line, except the version line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import keyturn
from tests.compat.test_jwthenticator_client import DRIVER, expected_transcript
from tests.serve_fixtures import KeyturnServer

SHIM = Path(__file__).with_name("jwthenticator_shim")
KEYTURN_SRC = Path(keyturn.__file__).resolve().parents[1]


def compat_transcript(alg: str) -> str:
    original = expected_transcript(alg)
    assert original.startswith("jwthenticator: 1.6.3\n")
    return original.replace("jwthenticator: 1.6.3", "jwthenticator: 0+keyturn.compat", 1)


@pytest.mark.parametrize(
    ("env", "slash", "alg"),
    [
        pytest.param({}, "", "ES256", id="es256"),
        pytest.param(
            {"URL_PREFIX": "/auth/", "KEYTURN_SIGNING_ALGORITHM": "EdDSA"},
            "/",
            "EdDSA",
            id="eddsa-legacy-url-prefix-slash",
        ),
    ],
)
def test_the_compat_client_runs_jwthenticators_flows(
    keyturn_server: Callable[..., KeyturnServer], env: dict[str, str], slash: str, alg: str
) -> None:
    server = keyturn_server(env=env)
    result = subprocess.run(  # noqa: S603 -- this interpreter and the shared driver
        [sys.executable, str(DRIVER), server.public + slash, server.admin + slash],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join([str(SHIM), str(KEYTURN_SRC)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout == compat_transcript(alg)
    assert server.stop() == 0
    assert "Traceback" not in server.log()
