"""``keyturn serve`` as a real subprocess: both listeners over HTTP, on SQLite and PostgreSQL.

Each test starts the server on free ports with a private data directory (see
``tests/serve_fixtures.py``), drives it with httpx, and stops it with SIGTERM, asserting
exit status 0: a graceful shutdown.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from keyturn.core.signing import SigningKey
from tests.serve_fixtures import (
    START_DEADLINE,
    STOP_DEADLINE,
    KeyturnServer,
    free_port,
    keyturn_command,
    server_environment,
)

Serve = Callable[..., KeyturnServer]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def legacy_key() -> tuple[str, str]:
    """A JWThenticator-style caller-chosen key and the UUID identifier it is registered for."""
    return "e2e-" + secrets.token_urlsafe(24), str(uuid.uuid4())


def assert_clean_log(server: KeyturnServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log
    assert "unhandled error" not in log, log


def test_serve_drives_both_listeners(keyturn_server: Serve, backend_env: dict[str, str]) -> None:
    """Register -> authenticate -> validate -> refresh (legacy), then the v1 API and the
    admin API up to a revoked key being refused; SIGTERM then exits 0."""
    server = keyturn_server(env=backend_env)
    key, identifier = legacy_key()
    with (
        httpx.Client(base_url=server.admin, timeout=10) as admin,
        httpx.Client(base_url=server.public, timeout=10) as public,
    ):
        # -- JWThenticator's routes ------------------------------------------------------
        response = admin.post("/register_key", json={"key": key, "identifier": identifier})
        assert (response.status_code, response.json()) == (201, {"result": True})
        response = admin.post("/is_key_registered", json={"key": key})
        assert (response.status_code, response.json()) == (200, {"result": True})
        response = public.post("/register_key", json={"key": key, "identifier": identifier})
        assert response.status_code == 404  # internal routes live on the admin listener only

        response = public.post("/authenticate", json={"key": key, "identifier": identifier})
        assert response.status_code == 200
        tokens = response.json()
        assert sorted(tokens) == ["jwt", "refresh_token"]
        response = public.get("/validate_request", headers=bearer(tokens["jwt"]))
        assert (response.status_code, response.json()) == (200, {})
        response = public.post("/validate", json={"jwt": tokens["jwt"]})
        assert (response.status_code, response.json()) == (200, {"result": True})

        response = public.post(
            "/refresh", json={"refresh_token": tokens["refresh_token"], "identifier": identifier}
        )
        assert response.status_code == 200
        assert sorted(response.json()) == ["jwt"]
        refreshed = response.json()["jwt"]
        assert refreshed != tokens["jwt"]
        assert public.get("/validate_request", headers=bearer(refreshed)).status_code == 200

        response = public.post("/authenticate", json={"key": key + "x", "identifier": identifier})
        assert (response.status_code, response.json()) == (401, {})
        assert public.get("/validate_request", headers=bearer("not.a.jwt")).status_code == 401

        # -- the v1 API (RFC 6749 client_credentials, the key as the Basic password) --------
        response = public.post(
            "/v1/token", data={"grant_type": "client_credentials"}, auth=("", key)
        )
        assert response.status_code == 200, response.text
        grant = response.json()
        # RFC 6749 §4.4.3: no refresh token for client_credentials by default.
        assert sorted(grant) == ["access_token", "expires_in", "scope", "token_type"]
        assert (grant["token_type"], grant["expires_in"]) == ("Bearer", 900)
        response = public.get("/v1/validate", headers=bearer(grant["access_token"]))
        assert response.status_code == 200
        assert response.headers["X-Keyturn-Identifier"] == identifier

        # -- the admin API: create a key, use it, revoke it, see it refused ----------------
        response = admin.post("/v1/admin/keys", json={"name": "e2e", "scopes": ["read"]})
        assert response.status_code == 201, response.text
        created = response.json()
        key_id, secret = created["record"]["id"], created["key"]
        assert secret.startswith(f"kt_{key_id}_")
        assert public.get(f"/v1/admin/keys/{key_id}").status_code == 404  # not on public

        response = public.post(
            "/v1/token", data={"grant_type": "client_credentials"}, auth=(key_id, secret)
        )
        assert response.status_code == 200, response.text
        issued = response.json()
        assert issued["scope"] == "read"
        response = public.get("/v1/validate?scope=read", headers=bearer(issued["access_token"]))
        assert response.status_code == 200
        assert response.headers["X-Keyturn-Client-Id"] == key_id

        response = admin.post(f"/v1/admin/keys/{key_id}/revoke", json={"reason": "e2e"})
        assert response.status_code == 200, response.text
        assert response.json()["revoked_reason"] == "e2e"

        response = public.post(
            "/v1/token", data={"grant_type": "client_credentials"}, auth=(key_id, secret)
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        response = public.post(
            "/v1/revoke", data={"token": issued["access_token"]}, auth=(key_id, secret)
        )
        assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
        response = public.get("/v1/validate", headers=bearer(issued["access_token"]))
        assert response.status_code == 401
        response = public.post("/validate", json={"jwt": issued["access_token"]})
        assert (response.status_code, response.json()) == (401, {})

    assert server.stop() == 0
    assert_clean_log(server)


def test_restart_keeps_tokens_and_jwks(
    keyturn_server: Serve, backend_env: dict[str, str], tmp_path: Path
) -> None:
    """T-KEY-04: signing keys persist: a token issued before a restart validates after it,
    and the JWKS is the same."""
    data_dir = tmp_path / "data"
    first = keyturn_server(env=backend_env, data_dir=data_dir)
    key, identifier = legacy_key()
    register = httpx.post(
        f"{first.admin}/register_key", json={"key": key, "identifier": identifier}
    )
    assert register.status_code == 201
    tokens = httpx.post(
        f"{first.public}/authenticate", json={"key": key, "identifier": identifier}
    ).json()
    jwks = httpx.get(f"{first.public}/.well-known/jwks.json").json()
    legacy_jwks = httpx.get(f"{first.public}/jwks").json()
    assert len(jwks["keys"]) >= 1
    assert first.stop() == 0

    second = keyturn_server(env=backend_env, data_dir=data_dir)
    assert httpx.get(f"{second.public}/.well-known/jwks.json").json() == jwks
    assert httpx.get(f"{second.public}/jwks").json() == legacy_jwks
    response = httpx.post(f"{second.public}/validate", json={"jwt": tokens["jwt"]})
    assert (response.status_code, response.json()) == (200, {"result": True})
    response = httpx.get(f"{second.public}/validate_request", headers=bearer(tokens["jwt"]))
    assert response.status_code == 200
    response = httpx.post(
        f"{second.public}/refresh",
        json={"refresh_token": tokens["refresh_token"], "identifier": identifier},
    )
    assert response.status_code == 200  # the pepper and KEK persisted in the data dir too
    assert second.stop() == 0
    assert_clean_log(second)


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN on ``port`` (Linux /proc/net/tcp[6])."""
    addresses: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            host, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(host)
            if width == 8:
                addresses.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addresses.add(socket.inet_ntop(socket.AF_INET6, words))
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net/tcp")
def test_default_listeners(keyturn_server: Serve) -> None:
    """With no host settings the admin listener binds 127.0.0.1 only; the public one 0.0.0.0."""
    server = keyturn_server()
    assert _listening(server.admin_port) == {"127.0.0.1"}
    assert _listening(server.public_port) == {"0.0.0.0"}  # noqa: S104
    response = httpx.get(f"{server.admin}/v1/admin/keys")
    assert (response.status_code, response.json()["keys"]) == (200, [])  # loopback: admitted
    assert server.stop() == 0


def test_admin_off_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    """T-OPS-02: KEYTURN_ADMIN_HOST=0.0.0.0 without KEYTURN_ADMIN_TOKEN: exit 1, saying why."""
    env = server_environment(
        {
            "KEYTURN_DATA_DIR": str(tmp_path / "data"),
            "KEYTURN_PUBLIC_PORT": str(free_port()),
            "KEYTURN_ADMIN_PORT": str(free_port()),
            "KEYTURN_ADMIN_HOST": "0.0.0.0",  # noqa: S104 -- the unsafe setting under test
        }
    )
    result = subprocess.run(  # noqa: S603 -- this interpreter, a fixed argv
        keyturn_command("serve"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE,
        check=False,
    )
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the admin listener is bound to 0.0.0.0, which is not loopback, and "
        "KEYTURN_ADMIN_TOKEN is not set: set a token or bind it to 127.0.0.1"
    )
    assert not (tmp_path / "data").exists()  # refused before touching any state


def test_admin_off_loopback_with_token_requires_it(keyturn_server: Serve) -> None:
    """With KEYTURN_ADMIN_TOKEN the admin listener may bind 0.0.0.0, and then every
    admin request needs the token, even from loopback."""
    token = secrets.token_urlsafe(32)
    env = {"KEYTURN_ADMIN_HOST": "0.0.0.0", "KEYTURN_ADMIN_TOKEN": token}  # noqa: S104
    server = keyturn_server(env=env)
    response = httpx.get(f"{server.admin}/v1/admin/keys")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="keyturn-admin"'
    response = httpx.get(f"{server.admin}/v1/admin/keys", headers=bearer(token))
    assert response.status_code == 200
    assert server.stop() == 0


def summed_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a scrape by name and sorted labels; a ``status`` label is summed away."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "status"))
            if sample.labels.get("status", "200") == "200":
                key = (sample.name, labels)
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def _worker_pids(log: str) -> set[str]:
    return set(re.findall(r"Started server process \[(\d+)\]", log))


def test_two_workers_share_the_database(keyturn_server: Serve) -> None:
    """``--workers 2``: two processes serve both listeners from one SQLite database; tokens
    from either validate on either, any worker's ``/metrics`` sums both workers', and
    SIGTERM stops both gracefully."""
    server = keyturn_server(args=["--workers", "2"], env={"KEYTURN_DATABASE_POOL_SIZE": "3"})
    server.wait_for_log(lambda log: len(_worker_pids(log)) == 2)
    key, identifier = legacy_key()
    response = httpx.post(
        f"{server.admin}/register_key", json={"key": key, "identifier": identifier}
    )
    assert response.status_code == 201
    tokens = []
    for _ in range(6):  # a new connection each time: the kernel spreads them over workers
        response = httpx.post(
            f"{server.public}/authenticate", json={"key": key, "identifier": identifier}
        )
        assert response.status_code == 200, response.text
        tokens.append(response.json()["jwt"])
    for token in tokens:
        response = httpx.post(f"{server.public}/validate", json={"jwt": token})
        assert (response.status_code, response.json()) == (200, {"result": True})
    for _ in range(3):  # each scrape is answered by one worker or the other
        samples = summed_metrics(httpx.get(f"{server.admin}/metrics").text)
        assert samples["keyturn_tokens_issued_total", (("grant", "api_key"),)] == 6
        assert samples["keyturn_db_pool_size", ()] == 6  # 3 in each live worker
    # The fast path's tallies reach the shared files when scraped or polled (every 2 s).
    validated = ("keyturn_http_requests_total", (("listener", "public"), ("method", "POST")))
    key = (validated[0], (*validated[1], ("route", "/validate")))
    deadline = time.monotonic() + 10
    while (count := summed_metrics(httpx.get(f"{server.admin}/metrics").text)[key]) != 6:
        assert time.monotonic() < deadline, count
        time.sleep(0.1)  # poll interval
    server.wait_for_log(lambda log: "tokens are issued by" in log)
    assert server.stop() == 0
    log = server.log()
    for pid in _worker_pids(log):
        assert f"Finished server process [{pid}]" in log, log
    assert log.count("keyturn ready: ") == 1  # one announcement, not one per worker
    assert_clean_log(server)


def test_a_killed_worker_stops_the_server(keyturn_server: Serve) -> None:
    """A worker that dies (here SIGKILL, as the OOM killer would) is not silently lost:
    the parent stops the other worker and exits 1, naming it, for the supervisor to
    restart the whole server."""
    server = keyturn_server(args=["--workers", "2"])
    victim, survivor = sorted(
        _worker_pids(server.wait_for_log(lambda log: len(_worker_pids(log)) == 2))
    )
    os.kill(int(victim), signal.SIGKILL)  # a child of the server this test started
    try:
        code = server.process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server kept running without its worker:\n{server.log()}")
    log = server.log()
    assert code == 1, log
    assert (
        f"error: worker {victim} exited with code -9 (a worker crashed or was killed); "
        "the server stopped"
    ) in log
    assert f"Finished server process [{survivor}]" in log  # the other one stopped gracefully


def test_start_up_logs_one_ready_line_with_the_urls_and_the_issuer(keyturn_server: Serve) -> None:
    """Findings 10 and 21: the listeners are announced once they accept connections, with
    where the docs are; the issuer and how to set it follow; uvicorn's per-server lines
    appear once per process, not once per listener; alembic's set-up chatter is gone."""
    server = keyturn_server()
    log = server.wait_for_log(lambda text: "tokens are issued by" in text)
    assert server.stop() == 0
    events = [json.loads(line)["event"] for line in server.log().splitlines()]

    ready = [event for event in events if event.startswith("keyturn ready")]
    assert ready == [
        f"keyturn ready: public http://0.0.0.0:{server.public_port} (docs at "
        f"http://localhost:{server.public_port}/docs), admin http://127.0.0.1:"
        f"{server.admin_port} (docs at http://127.0.0.1:{server.admin_port}/docs)"
    ]
    assert events[events.index(ready[0]) + 1] == (
        "tokens are issued by http://localhost:8080 (the default); verifiers must expect "
        "this issuer: set KEYTURN_ISSUER to the URL clients use"
    )
    assert any(event.startswith("Running upgrade") for event in events)  # the first start
    assert not any(event.startswith(("Context impl", "Will assume")) for event in events)
    for once in ("Started server process", "Shutting down", "Finished server process"):
        assert sum(event.startswith(once) for event in events) == 1, (once, log)
    # Nothing about the listeners before the database is ready.
    assert events.index(ready[0]) > max(
        i for i, event in enumerate(events) if event.startswith("Running upgrade")
    )


def test_the_issuer_line_names_the_variable_that_set_it(keyturn_server: Serve) -> None:
    server = keyturn_server(env={"KEYTURN_ISSUER": "https://auth.example"})
    log = server.wait_for_log(lambda text: "tokens are issued by" in text)

    assert (
        "tokens are issued by https://auth.example (KEYTURN_ISSUER); verifiers must expect "
        "this issuer" in log
    )


def test_an_imported_signing_key_is_logged_with_its_kid_and_source(
    keyturn_server: Serve, tmp_path: Path
) -> None:
    """Finding 14: JWThenticator's RSA_PRIVATE_KEY_PATH import is visible at start-up."""
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "jwt_rsa.pem"
    path.write_bytes(pem)
    kid = SigningKey.from_pem(pem).kid

    server = keyturn_server(env={"RSA_PRIVATE_KEY_PATH": str(path)})
    jwks = httpx.get(f"{server.public}/jwks").json()
    assert server.stop() == 0

    assert (
        f"signing key kid={kid} (RS256) loaded from the signing key file {path} "
        "(RSA_PRIVATE_KEY_PATH)"
    ) in server.log()
    assert kid in [key["kid"] for key in jwks["keys"]]
    assert pem.decode().splitlines()[1] not in server.log()
