"""The client and ``examples/client_script.py`` against a real ``keyturn serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import keyturn
from keyturn.client import (
    AsyncClient,
    Client,
    CredentialsRejectedError,
    KeyturnAuth,
    TokenEndpointError,
)
from keyturn.core.signing import SigningKey
from tests.serve_fixtures import KeyturnServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "client_script.py"
KEYTURN_SRC = Path(keyturn.__file__).resolve().parents[1]
IDENTIFIER = "7d3c9b1e-5f0a-4c61-9a4e-2b8f6a0d1c55"


def create_key(server: KeyturnServer, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.admin}/v1/admin/keys", json=body, timeout=10)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyturnServer]:
    """One ``keyturn serve`` for the module (as ``keyturn_server`` starts it): each test
    creates its own key, so they do not interfere."""
    base = tmp_path_factory.mktemp("keyturn")
    server = KeyturnServer.start(base / "data", base / "keyturn.log")
    try:
        yield server
    finally:
        stopped = server.stop()
        server.kill()
    assert stopped == 0
    assert "Traceback" not in server.log()


def run_example(server: KeyturnServer, store: Path) -> subprocess.CompletedProcess[str]:
    key = create_key(server, name="example", scopes=["read"])["key"]
    return subprocess.run(  # noqa: S603 -- this interpreter and our example
        [sys.executable, str(EXAMPLE)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(KEYTURN_SRC),
            "KEYTURN_URL": server.public,
            "KEYTURN_API_KEY": key,
            "KEYTURN_REFRESH_TOKEN_FILE": str(store),
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_example_script_runs_against_keyturn(server: KeyturnServer, tmp_path: Path) -> None:
    """Keyturn's defaults: no refresh token for a key; the client renews with the key."""
    store = tmp_path / "refresh-token"

    result = run_example(server, store)

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines() == [
        "async GET /v1/validate: 200",
        "subject: key:...",
        "renewed: True",
        "refresh token issued: False",
        "sync GET /v1/validate: 200",
        "httpx.Client(auth=KeyturnAuth) GET: 200",
    ]
    assert not store.exists()


def test_the_example_script_with_refresh_tokens_for_keys(tmp_path: Path) -> None:
    """KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS=true: the key's refresh tokens rotate, are
    saved, and are redeemed with the key's client authentication after a restart."""
    server = KeyturnServer.start(
        tmp_path / "data",
        tmp_path / "keyturn.log",
        env={"KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS": "true"},
    )
    store = tmp_path / "refresh-token"
    try:
        result = run_example(server, store)
    finally:
        stopped = server.stop()
        server.kill()

    assert stopped == 0

    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.splitlines() == [
        "async GET /v1/validate: 200",
        "subject: key:...",
        "renewed: True",
        "refresh token issued: True",
        "refresh token rotated: True",
        "refresh token saved: True",
        "sync GET /v1/validate: 200",
        "refresh token saved: True",
        "httpx.Client(auth=KeyturnAuth) GET: 200",
    ]
    assert store.stat().st_mode & 0o777 == 0o600
    assert store.read_text().startswith("ktr_")


def test_real_refusals_and_fallbacks(server: KeyturnServer) -> None:
    """Keyturn's own answers: a refused refresh token falls back to the key, a wrong
    identifier and a revoked key are typed errors, a scope beyond the key is another."""
    created = create_key(server, scopes=["read"], identifier=IDENTIFIER)
    persisted: list[str | None] = []
    validate = f"{server.public}/v1/validate"

    with Client(
        server.public,
        api_key=created["key"],
        refresh_token="ktr_not-a-real-token",
        identifier=IDENTIFIER,
        on_refresh_token=persisted.append,
    ) as client:
        assert client.get(validate).headers["X-Keyturn-Identifier"] == IDENTIFIER
    assert persisted == [None]  # refused, and no refresh token for a key by default

    with pytest.raises(CredentialsRejectedError) as wrong_identifier:
        Client(server.public, api_key=created["key"], identifier="someone-else").access_token()
    with pytest.raises(TokenEndpointError) as too_wide:
        Client(server.public, api_key=created["key"], scopes=["admin"]).access_token()
    revoked = httpx.post(f"{server.admin}/v1/admin/keys/{created['record']['id']}/revoke", json={})
    assert revoked.status_code == 200, revoked.text
    with pytest.raises(CredentialsRejectedError) as after_revoke:
        Client(server.public, api_key=created["key"]).access_token()

    assert wrong_identifier.value.error_code == "invalid_client"
    assert too_wide.value.error_code == "invalid_scope"
    assert after_revoke.value.status_code == 401


@pytest.mark.parametrize("listener", ["admin", "prefix"])
def test_a_client_pointed_at_the_wrong_url_is_told_to_check_server_url(
    server: KeyturnServer, listener: str
) -> None:
    """Finding 29: ``Client("http://localhost:8081", ...)`` (the admin port, or a missing
    or extra URL prefix) said "check the client's scopes and identifier"; a 404 or 405
    from the token endpoint is about the URL."""
    created = create_key(server, scopes=["read"])
    wrong = server.admin if listener == "admin" else f"{server.public}/auth"

    with pytest.raises(TokenEndpointError) as refused:
        Client(wrong, api_key=created["key"]).access_token()

    assert refused.value.status_code in (404, 405)
    assert str(refused.value) == (
        f"{wrong}/v1/token answered {refused.value.status_code}: check server_url, which "
        "must be Keyturn's public listener with its URL prefix (not the admin listener)"
    )
    with Client(server.public, api_key=created["key"]) as client:  # the key itself is fine
        assert client.access_token()


def device_key(server: KeyturnServer, device: SigningKey) -> str:
    """A key that authenticates with ``device``'s public key only; its id."""
    public_jwk = dict(device.verification_key.to_jwk())
    created = create_key(server, scopes=["read"], jwks={"keys": [public_jwk]})
    assert created["key"] is None  # no secret at all
    key_id: str = created["record"]["id"]
    return key_id


def issuer(server: KeyturnServer) -> str:
    """Keyturn's issuer identifier from its RFC 8414 metadata (here not its listener's URL,
    so the assertions name it as their audience)."""
    metadata = httpx.get(f"{server.public}/.well-known/oauth-authorization-server", timeout=10)
    value: str = metadata.json()["issuer"]
    assert value != server.public
    return value


def test_private_key_jwt_with_the_client(server: KeyturnServer, tmp_path: Path) -> None:
    """RFC 7523 §2.2 against Keyturn: each renewal signs a new assertion (a replayed one
    would be refused), from a PEM file as `keyturn keys keypair` writes it."""
    device = SigningKey.generate("ES256")
    pem = tmp_path / "device.pem"
    pem.write_bytes(device.private_pem())
    key_id = device_key(server, device)
    validate = f"{server.public}/v1/validate"

    with Client(
        server.public, client_id=key_id, private_key=pem, audience=issuer(server)
    ) as client:
        first = client.get(validate)
        renewed = client.access_token(force=True)
        second = client.get(validate)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["X-Keyturn-Subject"] == second.headers["X-Keyturn-Subject"]
    assert key_id in first.headers["X-Keyturn-Subject"]
    assert renewed


async def test_private_key_jwt_with_the_async_client_and_keyturn_auth(
    server: KeyturnServer,
) -> None:
    """The token endpoint URL is an accepted audience too (OpenID Connect Core §9)."""
    device = SigningKey.generate("EdDSA")
    key_id = device_key(server, device)
    audience = f"{issuer(server)}/v1/token"

    async with AsyncClient(
        server.public, client_id=key_id, private_key=device, audience=audience
    ) as client:
        response = await client.get(f"{server.public}/v1/validate")
    auth = KeyturnAuth(server.public, client_id=key_id, private_key=device, audience=audience)
    with httpx.Client(auth=auth) as http:
        again = http.get(f"{server.public}/v1/validate")

    assert (response.status_code, again.status_code) == (200, 200)


def test_a_private_key_keyturn_does_not_know_is_rejected(server: KeyturnServer) -> None:
    key_id = device_key(server, SigningKey.generate("ES256"))
    stranger = SigningKey.generate("ES256")

    with pytest.raises(CredentialsRejectedError) as refused:
        Client(
            server.public, client_id=key_id, private_key=stranger, audience=issuer(server)
        ).access_token()

    assert (refused.value.status_code, refused.value.error_code) == (401, "invalid_client")
