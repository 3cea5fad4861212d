"""Interop: oauth4webapi (npm, run by Node) drives Keyturn's DPoP and private_key_jwt.

An independent implementation of RFC 9449 and RFC 7523 (panva's oauth4webapi) discovers
the RFC 8414 metadata, gets DPoP-bound tokens with HTTP Basic and with ``private_key_jwt``
-- against a server that demands nonces (§8), so it must handle ``use_dpop_nonce`` -- and
presents the token at ``/v1/validate`` as a protected-resource request (its own ``htm``,
``htu`` and ``ath``). npm installs the pinned package once per session; without Node or
npm the test is skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import pytest

from keyturn.core.signing import SigningKey, jwk_thumbprint
from keyturn.core.tokens import peek_unverified_claims

from .conftest import ISSUER, START, make_settings
from .live import live_listener

OAUTH4WEBAPI: Final = "oauth4webapi@3.8.9"
SCRIPT: Final = Path(__file__).with_name("oauth4webapi_dpop.mjs")
#: npm and Node on a loaded machine: generous, never a timed assertion.
DEADLINE: Final = 300


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI reaches the npm registry, so this is a failure")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def oauth4webapi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with oauth4webapi installed and the test's script beside it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed to run oauth4webapi")
    folder = tmp_path_factory.mktemp("oauth4webapi")
    (folder / "package.json").write_text('{"private": true, "type": "module"}\n')
    install = subprocess.run(  # noqa: S603 -- fixed arguments
        [str(npm), "install", "--no-audit", "--no-fund", "--silent", OAUTH4WEBAPI],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    if install.returncode != 0:
        _unavailable(f"npm install {OAUTH4WEBAPI} failed: {install.stderr[-500:]}")
    shutil.copy(SCRIPT, folder / SCRIPT.name)
    return folder


def test_oauth4webapi_gets_dpop_bound_tokens_and_passes_validate(
    oauth4webapi: Path, tmp_path: Path, sqlite_database_url: str
) -> None:
    device = SigningKey.generate("ES256")
    settings = make_settings(sqlite_database_url, tmp_path, dpop_nonce=True)
    with live_listener("public", settings) as live:
        service = live.state.service
        secret_key = live.call(lambda: service.create_key(scopes=["read"]))
        keyless = live.call(
            lambda: service.create_key(scopes=["read"], public_keys=[device.verification_key])
        )
        # The server's clock stands at START; oauth4webapi corrects for it (clockSkew).
        skew = int(START.timestamp() - time.time())
        pem = base64.b64encode(device.private_pem()).decode("ascii")
        run = subprocess.run(  # noqa: S603 -- fixed arguments
            [
                str(shutil.which("node")),
                SCRIPT.name,
                live.base_url,
                ISSUER,
                secret_key.record.id,
                str(secret_key.secret),
                keyless.record.id,
                pem,
                str(skew),
            ],
            cwd=oauth4webapi,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    jkt = jwk_thumbprint(seen["jwk"])

    assert seen["algs"] == ["ES256", "RS256", "EdDSA"]
    for grant in ("basic", "private_key_jwt"):
        assert seen[grant]["token_type"].lower() == "dpop"
        claims = peek_unverified_claims(seen[grant]["access_token"])[1]
        assert claims["cnf"] == {"jkt": jkt}
    assert peek_unverified_claims(seen["private_key_jwt"]["access_token"])[1]["client_id"] == (
        keyless.record.id
    )
    assert seen["validate"] == {"status": 200, "subject": f"key:{secret_key.record.id}"}
