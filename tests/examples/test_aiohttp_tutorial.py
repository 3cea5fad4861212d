"""``examples/aiohttp_tutorial.py`` (the aiohttp + PyJWT tutorial app) against a real Keyturn.

One ``keyturn serve`` for the module, with its default issuer and audience, so the
example's defaults are checked against the server's. Users come from the CLI
(``keyturn users add --password-stdin``, the documented recipe) or the admin API.
"""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from keyturn.config import Settings
from tests.examples.test_examples import EXAMPLES, bearer, create_key, load_example, token_for
from tests.serve_fixtures import START_DEADLINE, KeyturnServer, free_port, keyturn_command

#: Keyturn's login throttle for one email from one address, lowered to test the relay.
PER_ACCOUNT_ADDRESS = 3


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example("aiohttp_tutorial")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyturnServer]:
    base = tmp_path_factory.mktemp("tutorial")
    limit = {"KEYTURN_LOGIN_RATE_LIMIT_PER_ACCOUNT_ADDRESS": str(PER_ACCOUNT_ADDRESS)}
    running = KeyturnServer.start(base / "data", base / "keyturn.log", env=limit)
    try:
        yield running
    finally:
        running.stop()
        running.kill()


@dataclass(frozen=True)
class Person:
    email: str
    password: str
    user_id: str


def add_user_with_cli(server: KeyturnServer, *scopes: str) -> Person:
    """``keyturn users add EMAIL --scope S --password-stdin``, on the server's database."""
    email, password = f"alice-{uuid.uuid4().hex[:8]}@example.com", f"tutorial {uuid.uuid4()}"
    options = [arg for scope in scopes for arg in ("--scope", scope)]
    added = subprocess.run(  # noqa: S603 -- this interpreter, a fixed argv
        keyturn_command("users", "add", email, *options, "--password-stdin", "--json"),
        input=f"{password}\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    return Person(email, password, json.loads(added.stdout)["id"])


def add_user_with_api(server: KeyturnServer, *scopes: str) -> Person:
    email, password = f"bob-{uuid.uuid4().hex[:8]}@example.com", f"tutorial {uuid.uuid4()}"
    created = httpx.post(
        f"{server.admin}/v1/admin/users",
        json={"email": email, "password": password, "scopes": list(scopes)},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return Person(email, password, created.json()["id"])


def config_for(example: ModuleType, server: KeyturnServer, **overrides: Any) -> Any:
    return example.TutorialConfig(keyturn_url=server.public, allow_insecure_http=True, **overrides)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_defaults_match_keyturn_serve(example: ModuleType) -> None:
    """With no options the example expects the issuer and audience ``keyturn serve`` uses."""
    config, host, port = example.parse_config([], {})

    assert config.issuer == Settings.model_fields["issuer"].default
    assert config.audience == Settings.model_fields["audience"].default
    assert config.resolved_jwks_url == "http://localhost:8080/.well-known/jwks.json"
    assert (config.verify, config.allow_insecure_http, host, port) == (
        "jwks",
        False,
        "127.0.0.1",
        8000,
    )


async def test_login_then_get_user(example: ModuleType, server: KeyturnServer) -> None:
    alice = add_user_with_cli(server, "notes:read")

    async with serve(example.create_app(config_for(example, server))) as client:
        login = await client.post("/login", data={"email": alice.email, "password": alice.password})
        token = (await login.json())["token"]
        me = await client.get("/get-user", headers=bearer(token))
        notes = await client.get("/notes", headers=bearer(token))

        assert login.status == 200
        assert login.headers["Cache-Control"] == "no-store"
        assert (me.status, await me.json()) == (
            200,
            {"user": {"id": alice.user_id, "email": alice.email}},
        )
        assert (notes.status, await notes.json()) == (200, {"notes": [], "for": alice.email})


async def test_login_takes_json_too(example: ModuleType, server: KeyturnServer) -> None:
    bob = add_user_with_api(server)

    async with serve(example.create_app(config_for(example, server))) as client:
        login = await client.post("/login", json={"email": bob.email, "password": bob.password})
        me = await client.get("/get-user", headers=bearer((await login.json())["token"]))

        assert (me.status, (await me.json())["user"]["email"]) == (200, bob.email)


async def test_get_user_without_a_token_is_a_401_challenge(
    example: ModuleType, server: KeyturnServer
) -> None:
    async with serve(example.create_app(config_for(example, server))) as client:
        anonymous = await client.get("/get-user")
        forged = await client.get("/get-user", headers=bearer("e30.e30.AAAA"))

        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="keyturn"'
        assert forged.status == 401
        assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]


async def test_wrong_password_fails_like_an_unknown_email(
    example: ModuleType, server: KeyturnServer
) -> None:
    carol = add_user_with_api(server)

    async with serve(example.create_app(config_for(example, server))) as client:
        wrong = await client.post(
            "/login", data={"email": carol.email, "password": "not it at all"}
        )
        unknown = await client.post(
            "/login", data={"email": f"nobody-{carol.email}", "password": carol.password}
        )
        wrong_body, unknown_body = await wrong.read(), await unknown.read()

        assert (wrong.status, wrong.content_type) == (400, "application/problem+json")
        assert (await wrong.json())["message"] == "Wrong credentials"
        assert (unknown.status, unknown.content_type, unknown_body) == (
            wrong.status,
            wrong.content_type,
            wrong_body,
        )


async def test_missing_scope_is_a_403(example: ModuleType, server: KeyturnServer) -> None:
    dave = add_user_with_api(server, "profile:read")

    async with serve(example.create_app(config_for(example, server))) as client:
        login = await client.post("/login", data={"email": dave.email, "password": dave.password})
        notes = await client.get("/notes", headers=bearer((await login.json())["token"]))

        assert notes.status == 403
        assert 'error="insufficient_scope"' in notes.headers["WWW-Authenticate"]
        assert 'scope="notes:read"' in notes.headers["WWW-Authenticate"]


async def test_an_api_keys_token_is_not_a_user(example: ModuleType, server: KeyturnServer) -> None:
    """A valid Keyturn token whose subject is ``key:<id>`` gets no user: 401."""
    key_token = token_for(server, create_key(server, "notes:read"))

    async with serve(example.create_app(config_for(example, server))) as client:
        refused = await client.get("/get-user", headers=bearer(key_token))

        assert refused.status == 401
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


async def test_throttled_login_is_relayed_with_retry_after(
    example: ModuleType, server: KeyturnServer
) -> None:
    erin = add_user_with_api(server)
    wrong = {"email": erin.email, "password": "not the password"}

    async with serve(example.create_app(config_for(example, server))) as client:
        refused = [
            (await client.post("/login", data=wrong)).status for _ in range(PER_ACCOUNT_ADDRESS)
        ]
        throttled = await client.post(
            "/login", data={"email": erin.email, "password": erin.password}
        )

        assert refused == [400] * PER_ACCOUNT_ADDRESS
        assert throttled.status == 429
        assert int(throttled.headers["Retry-After"]) > 0


async def test_disabling_a_user_stops_remote_verification_at_once(
    example: ModuleType, server: KeyturnServer
) -> None:
    """JWKS verification is offline: a disabled user's token lives until it expires.
    ``--verify remote`` (RemoteVerifier) refuses it at once; nobody can log in again."""
    frank = add_user_with_api(server)
    profiles: dict[str, Any] = {}  # one user store, two ways to verify
    offline_app = example.create_app(config_for(example, server), profiles=profiles)
    remote_app = example.create_app(config_for(example, server, verify="remote"), profiles=profiles)
    credentials = {"email": frank.email, "password": frank.password}

    async with serve(offline_app) as offline, serve(remote_app) as remote:
        token = (await (await offline.post("/login", data=credentials)).json())["token"]
        before = [
            (await app.get("/get-user", headers=bearer(token))).status for app in (offline, remote)
        ]
        disabled = httpx.post(
            f"{server.admin}/v1/admin/users/{frank.user_id}/disable",
            json={"reason": "left"},
            timeout=10,
        )
        offline_after = await offline.get("/get-user", headers=bearer(token))
        remote_after = await remote.get("/get-user", headers=bearer(token))
        login_again = await offline.post("/login", data=credentials)

        assert before == [200, 200]
        assert disabled.status_code == 200
        assert offline_after.status == 200  # offline: the JWKS cannot say "revoked"
        assert remote_after.status == 401
        assert 'error="invalid_token"' in remote_after.headers["WWW-Authenticate"]
        assert (login_again.status, (await login_again.json())["message"]) == (
            400,
            "Wrong credentials",
        )


def test_the_script_runs_against_keyturn(server: KeyturnServer, tmp_path: Path) -> None:
    """``python examples/aiohttp_tutorial.py`` with the documented options, end to end."""
    grace = add_user_with_api(server)
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        str(EXAMPLES / "aiohttp_tutorial.py"),
        "--keyturn-url",
        server.public,
        "--allow-insecure-http",
        "--port",
        str(port),
    ]
    log_path = tmp_path / "tutorial.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 -- this interpreter, a fixed argv
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_listening(process, f"{app_url}/get-user", log_path)
        login = httpx.post(
            f"{app_url}/login", data={"email": grace.email, "password": grace.password}, timeout=10
        )
        me = httpx.get(f"{app_url}/get-user", headers=bearer(login.json()["token"]), timeout=10)
    finally:
        process.terminate()
        process.wait(timeout=START_DEADLINE)

    assert me.json() == {"user": {"id": grace.user_id, "email": grace.email}}


def wait_until_listening(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Poll ``url`` until it answers (any status), with a deadline."""
    end = time.monotonic() + START_DEADLINE
    while time.monotonic() < end:
        if process.poll() is not None:
            pytest.fail(f"the example exited:\n{log_path.read_text(errors='replace')}")
        try:
            httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            time.sleep(0.05)  # poll interval, not a wait for an event
            continue
        return
    pytest.fail(f"the example did not listen within {START_DEADLINE} s")
