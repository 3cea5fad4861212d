"""Operations on a real ``keyturn serve``: JSON logs without secrets, graceful shutdown.

Metrics summed over worker processes are checked in ``test_serve.py``'s two-worker test.
"""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.serve_fixtures import STOP_DEADLINE, KeyturnServer

StartServer = Callable[..., KeyturnServer]
#: A flow runs against both listeners and returns every secret that crossed the wire.
Flow = Callable[[httpx.Client, httpx.Client], list[str]]
ADMIN_TOKEN = "ops-admin-token-0123456789abcdef"
LEGACY_KEY = "ops-legacy-key-0123456789abcdef"
IDENTIFIER = "7d3c9b1e-5f0a-4c61-9a4e-2b8f6a0d1c55"


def legacy_flow(public: httpx.Client, admin: httpx.Client) -> list[str]:
    """JWThenticator's routes: register, authenticate, refresh, validate, bad keys."""
    body = {"key": LEGACY_KEY, "identifier": IDENTIFIER}
    assert admin.post("/register_key", json=body).status_code == 201
    tokens = public.post("/authenticate", json=body).json()
    refreshed = public.post(
        "/refresh", json={"refresh_token": tokens["refresh_token"], "identifier": IDENTIFIER}
    ).json()
    assert public.post("/validate", json={"jwt": tokens["jwt"]}).status_code == 200
    assert public.get("/validate_request", headers=bearer(refreshed["jwt"])).status_code == 200
    wrong = {"key": LEGACY_KEY + "-wrong", "identifier": IDENTIFIER}
    assert public.post("/authenticate", json=wrong).status_code == 401
    tampered = tokens["jwt"][:-4] + "AAAA"
    assert public.get("/validate_request", headers=bearer(tampered)).status_code == 401
    assert public.post("/validate", json={"jwt": tampered}).status_code == 401
    return [LEGACY_KEY, tokens["jwt"], tokens["refresh_token"], refreshed["jwt"], tampered]


def v1_flow(public: httpx.Client, admin: httpx.Client) -> list[str]:
    """Keyturn's routes: create, token, rotate, reuse, validate, introspect, revoke."""
    created = admin.post("/v1/admin/keys", json={"scopes": ["read"]}).json()
    key, key_id = created["key"], created["record"]["id"]
    form = {"grant_type": "client_credentials"}
    first = public.post("/v1/token", data=form, auth=(key, "")).json()
    rotate = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = public.post("/v1/token", data=rotate, auth=(key_id, key)).json()
    assert public.get("/v1/validate", headers=bearer(second["access_token"])).status_code == 200
    assert public.get("/v1/validate?scope=read", headers=bearer(second["access_token"])).is_success
    admin.post("/v1/introspect", data={"token": second["access_token"]})
    assert public.post("/v1/token", data=form, auth=(key[:-2] + "xx", "")).status_code == 401
    # ?access_token= is never read, and never logged (T-LOG-02).
    public.get(f"/v1/validate?access_token={second['access_token']}")
    revoke = {"token": second["refresh_token"]}
    assert public.post("/v1/revoke", data=revoke, auth=(key_id, key)).is_success
    assert public.post("/v1/revoke", data={"token": first["access_token"]}).is_success
    assert admin.post(f"/v1/admin/keys/{key_id}/revoke", json={}).status_code == 200
    secrets = [key, first["access_token"], first["refresh_token"]]
    return [*secrets, second["access_token"], second["refresh_token"]]


def login_flow(public: httpx.Client, admin: httpx.Client) -> list[str]:
    """People: create, log in (form and JSON), fail, refresh, change password, log out."""
    password, new_password = "ops correct horse battery", "ops another long passphrase"
    email = "ops.person@example.com"
    created = admin.post("/v1/admin/users", json={"email": email, "password": password})
    assert created.status_code == 201
    user_id = created.json()["id"]
    token = public.post("/login", data={"email": email, "password": password}).json()["token"]
    session = public.post("/v1/login", json={"email": email, "password": password}).json()
    wrong = {"email": email, "password": password + "!"}
    assert public.post("/login", data=wrong).status_code == 400
    refresh = {"grant_type": "refresh_token", "refresh_token": session["refresh_token"]}
    rotated = public.post("/v1/token", data=refresh).json()
    changed = admin.post(f"/v1/admin/users/{user_id}/password", json={"password": new_password})
    assert changed.is_success
    assert public.post("/v1/logout", data={"refresh_token": rotated["refresh_token"]}).is_success
    again = {"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}
    assert public.post("/v1/token", data=again).status_code in (400, 401)  # logged out
    return [
        password,
        new_password,
        password + "!",
        token,
        session["access_token"],
        session["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
    ]


#: Flows run in order, each returning the secrets it sent or received.
FLOWS: list[Flow] = [legacy_flow, v1_flow, login_flow]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def spellings(secret: str) -> set[str]:
    """A secret as it could appear in a log: plain, URL-encoded, base64; a JWT's signature."""
    raw = secret.encode()
    found = {
        secret,
        quote(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    if secret.count(".") == 2:
        found.add(secret.rsplit(".", 1)[1])
    return found


def test_a_full_flow_logs_json_lines_without_a_secret(keyturn_server: StartServer) -> None:
    """T-LOG-01 on the real server: every line is JSON; no key, token, password or signature
    leaks."""
    server = keyturn_server(
        env={
            "KEYTURN_LOG_LEVEL": "debug",
            "KEYTURN_LOG_FORMAT": "json",
            "KEYTURN_ADMIN_TOKEN": ADMIN_TOKEN,
            "KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS": "true",
        }
    )
    secrets = [ADMIN_TOKEN]
    with (
        httpx.Client(base_url=server.public, timeout=10) as public,
        httpx.Client(base_url=server.admin, timeout=10, headers=bearer(ADMIN_TOKEN)) as admin,
    ):
        for flow in FLOWS:
            secrets += flow(public, admin)
    assert server.stop() == 0

    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"timestamp", "level", "event"} <= set(line) for line in lines)
    access = [line for line in lines if line.get("logger") == "keyturn.access"]
    assert {"request_id", "route", "status", "duration_ms"} <= set(access[0])
    issued = [line for line in access if line["route"] == "/v1/token" and line["status"] == 200]
    assert issued
    assert all({"key_id", "jti"} <= set(line) for line in issued)
    assert any(line["event"].startswith("keyturn stopped") for line in lines)
    text = server.log()
    leaked = sorted(form for secret in secrets for form in spellings(secret) if form in text)
    assert leaked == []


def _raw_request(port: int, path: str, body: bytes) -> socket.socket:
    """Send a POST's head with ``Expect: 100-continue`` and wait for the 100.

    The server sends ``100 Continue`` when the app first asks for the body, so after this
    returns the request is in flight inside the app, waiting for ``body``.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=STOP_DEADLINE)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    sock.sendall(head.encode())
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
    return sock


def _wait_until_refused(port: int) -> None:
    """Poll until the listener stops accepting: shutdown has begun."""
    deadline = time.monotonic() + STOP_DEADLINE
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.02)  # poll interval
    pytest.fail("the listener kept accepting after SIGTERM")


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def _refresh_rows(data_dir: Path) -> list[tuple[str, str | None, str | None]]:
    with sqlite3.connect(data_dir / "keyturn.db") as db:
        rows = db.execute(
            "SELECT id, parent_id, used_at FROM refresh_tokens ORDER BY created_at, id"
        ).fetchall()
    return [tuple(row) for row in rows]


#: Keys get refresh tokens, whose refresh requests the shutdown tests hold in flight.
REFRESH_TOKENS = {"KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS": "true"}


def _refresh_body(server: KeyturnServer) -> bytes:
    """The form of a refresh request for a new key's refresh token, authenticated by it."""
    with httpx.Client(timeout=10) as client:
        key = client.post(f"{server.admin}/v1/admin/keys", json={}).json()["key"]
        form = {"grant_type": "client_credentials"}
        tokens = client.post(f"{server.public}/v1/token", data=form, auth=(key, "")).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    return urlencode({**refresh, "client_secret": key}).encode()


def test_sigterm_lets_an_in_flight_refresh_finish(keyturn_server: StartServer) -> None:
    """The rotation that was in flight at SIGTERM completes: 200, committed, exit 0."""
    server = keyturn_server(env=REFRESH_TOKENS)
    body = _refresh_body(server)
    sock = _raw_request(server.public_port, "/v1/token", body)

    server.process.terminate()
    _wait_until_refused(server.public_port)
    sock.sendall(body)
    response = _read_response(sock)

    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b'"refresh_token":"ktr_' in response
    assert server.process.wait(timeout=STOP_DEADLINE) == 0
    (old_id, _, used_at), (_, parent_id, _) = _refresh_rows(server.data_dir)
    assert used_at is not None  # rotated once, wholly: the old token used ...
    assert parent_id == old_id  # ... and its one successor stored
    assert "keyturn stopped" in server.log()


def test_shutdown_timeout_bounds_a_stuck_request(keyturn_server: StartServer) -> None:
    """A request that never finishes is cancelled after ``shutdown_timeout``; nothing half-done."""
    server = keyturn_server(env={"KEYTURN_SHUTDOWN_TIMEOUT": "1", **REFRESH_TOKENS})
    body = _refresh_body(server)
    sock = _raw_request(server.public_port, "/v1/token", body)

    server.process.terminate()

    assert server.process.wait(timeout=STOP_DEADLINE) == 0
    answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")  # never a 500
    assert b"retry-after: 1" in answer.lower()
    [(_, _, used_at)] = _refresh_rows(server.data_dir)
    assert used_at is None  # never rotated: the body never came
    assert "keyturn stopped" in server.log()
