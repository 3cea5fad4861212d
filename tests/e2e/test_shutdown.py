"""Shutdown under load on a real ``keyturn serve`` (issue 18, "Also fix").

At ``KEYTURN_SHUTDOWN_TIMEOUT`` a request that is not writing is cancelled with a 503 and
``Retry-After``, never a 500; a refresh whose rotation may be committing gets
``KEYTURN_SHUTDOWN_WRITE_TIMEOUT`` more, so its answer is sent and no client loses its
refresh family; a request sent on a kept-alive connection right after SIGTERM is answered
(with ``Connection: close``), not reset.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.serve_fixtures import STOP_DEADLINE, KeyturnServer

StartServer = Callable[..., KeyturnServer]
SHUTDOWN_TIMEOUT = 1.0
CLIENTS = 6


@dataclass
class RefreshingClient:
    """One client with its own refresh family, refreshing in a loop on a kept-alive
    connection; it keeps the newest refresh token it was *answered*."""

    base_url: str
    key: str
    token: str
    answers: list[tuple[int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self.base_url, timeout=STOP_DEADLINE) as client:
            while not stop.is_set():
                form = {"grant_type": "refresh_token", "refresh_token": self.token}
                try:
                    response = client.post("/v1/token", data=form, auth=(self.key, ""))
                except httpx.TransportError as exc:  # the server is gone
                    self.errors.append(type(exc).__name__)
                    return
                self.answers.append((response.status_code, time.monotonic()))
                if response.status_code == 200:
                    self.token = response.json()["refresh_token"]
                elif response.status_code != 503:
                    return  # anything else is a failure the test reports

    def successes(self) -> int:
        return sum(1 for status, _ in self.answers if status == 200)


def _families(server: KeyturnServer, count: int) -> tuple[str, list[str]]:
    """A key and ``count`` refresh-token families of it (the server issues refresh tokens
    to key clients: KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS)."""
    with httpx.Client(timeout=10) as client:
        key = client.post(f"{server.admin}/v1/admin/keys", json={}).json()["key"]
        form = {"grant_type": "client_credentials"}
        return key, [
            client.post(f"{server.public}/v1/token", data=form, auth=(key, "")).json()[
                "refresh_token"
            ]
            for _ in range(count)
        ]


def _wait_for(check: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what} never happened")
        time.sleep(0.02)  # poll interval


def _stuck_request(port: int) -> socket.socket:
    """A POST whose body never comes: in flight in the app, not writing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=STOP_DEADLINE)
    sock.sendall(
        b"POST /v1/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 40\r\nExpect: 100-continue\r\n\r\n"
    )
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


@contextlib.contextmanager
def _refresh_writes_blocked(server: KeyturnServer, backend_env: dict[str, str]) -> Iterator[None]:
    """Hold a lock that blocks writes to the refresh tokens (reads go on) until the exit."""
    url = backend_env.get("KEYTURN_DATABASE_URL")
    if url is None:
        lock = sqlite3.connect(server.data_dir / "keyturn.db", isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    psql = subprocess.Popen(  # noqa: S603 -- psql with a fixed argv
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url.replace("+asyncpg", "")],  # noqa: S607
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert psql.stdin is not None
    assert psql.stdout is not None
    try:
        psql.stdin.write(
            "SET search_path TO keyturn, public;\nBEGIN;\n"
            "LOCK TABLE refresh_tokens IN SHARE MODE;\nSELECT 'locked';\n"
        )
        psql.stdin.flush()
        assert psql.stdout.readline().strip() == "locked"
        yield
    finally:
        psql.stdin.write("ROLLBACK;\n")
        psql.stdin.close()
        psql.wait(timeout=STOP_DEADLINE)
        psql.stdout.close()


def test_shutdown_under_load_answers_no_500_and_loses_no_refresh_family(
    keyturn_server: StartServer, backend_env: dict[str, str]
) -> None:
    env = {
        **backend_env,
        "KEYTURN_DATABASE_POOL_SIZE": "4",
        "KEYTURN_SHUTDOWN_TIMEOUT": str(int(SHUTDOWN_TIMEOUT)),
        "KEYTURN_SHUTDOWN_WRITE_TIMEOUT": "30",
        "KEYTURN_BODY_TIMEOUT": "60",
        "KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS": "true",
    }
    server = keyturn_server(env=env)
    key, tokens = _families(server, CLIENTS)
    clients = [RefreshingClient(server.public, key, token) for token in tokens]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: all(c.successes() >= 3 for c in clients), "refreshes under load")
        stuck = _stuck_request(server.public_port)
        # Hold the database's write lock: the refreshes in flight now wait to commit, past
        # the shutdown timeout.
        with _refresh_writes_blocked(server, backend_env):
            server.process.terminate()
            terminated = time.monotonic()
            # The stuck request is answered at the shutdown timeout: the writes are due too.
            cancelled = _read_all(stuck)
        assert server.process.wait(timeout=STOP_DEADLINE) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=STOP_DEADLINE)

    assert cancelled.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"retry-after: 1" in cancelled.lower()
    assert b'"error":"server_stopping"' in cancelled
    statuses = {status for c in clients for status, _ in c.answers}
    assert statuses <= {200, 503}, statuses
    # After a restart every client's family still works with the token it holds.
    restarted = keyturn_server(env=env, data_dir=server.data_dir)
    with httpx.Client(base_url=restarted.public, timeout=10) as client:
        for c in clients:
            form = {"grant_type": "refresh_token", "refresh_token": c.token}
            response = client.post("/v1/token", data=form, auth=(key, ""))
            assert response.status_code == 200, response.text
    # The rotations held past the shutdown timeout were committed *and* answered.
    late = [t for c in clients for status, t in c.answers if status == 200 and t > terminated]
    assert late
    assert max(late) > terminated + SHUTDOWN_TIMEOUT
    log = server.log()
    assert "Exception in ASGI application" not in log
    assert "keyturn stopped" in log


def test_a_request_on_a_kept_alive_connection_after_sigterm_is_answered(
    keyturn_server: StartServer,
) -> None:
    """Idle kept-alive connections are not reset at SIGTERM: a request sent right then
    gets its answer, with ``Connection: close``."""
    server = keyturn_server()
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.public_port), timeout=STOP_DEADLINE)
    sock.sendall(request)
    first = b""
    while not first.endswith(b'{"status":"ok"}'):  # the whole first answer
        chunk = sock.recv(65536)
        assert chunk, first  # closed before the whole answer came
        first += chunk
    assert first.startswith(b"HTTP/1.1 200 OK")

    server.process.terminate()

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", server.public_port), timeout=1).close()
        except OSError:
            return True
        return False

    _wait_for(refused, "the listener closing")  # shutdown has begun
    sock.sendall(request)
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in answer.lower()
    assert server.process.wait(timeout=STOP_DEADLINE) == 0
