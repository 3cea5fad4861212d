"""Run ``keyturn serve`` as a real subprocess for end-to-end and compatibility tests.

`KeyturnServer.start` launches ``python -m keyturn serve`` on free loopback-reachable
ports with a private data directory, waits for both listeners to answer ``GET /healthz``
(polling with a deadline, never a fixed sleep) and returns a handle. The ``keyturn_server``
fixture is a factory; whatever it started is stopped at teardown (SIGTERM, then SIGKILL
of the whole process group), pass or fail.

Imported by ``tests/e2e/conftest.py`` and ``tests/compat/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from keyturn.config import LEGACY_VARIABLES

__all__ = [
    "START_DEADLINE",
    "STOP_DEADLINE",
    "KeyturnServer",
    "free_port",
    "keyturn_server",
    "server_environment",
]

#: How long a server may take to answer /healthz (a loaded two-core CI machine included).
START_DEADLINE = 30.0
#: How long a graceful shutdown may take after SIGTERM.
STOP_DEADLINE = 20.0
#: Starts tried when a free port is taken before the server binds it.
PORT_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port nothing listens on right now (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without Keyturn or JWThenticator settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("KEYTURN_") and name not in LEGACY_VARIABLES
    }
    env.update(extra)
    return env


def keyturn_command(*args: str) -> list[str]:
    """``python -m keyturn ARGS`` with this interpreter (the project's venv)."""
    return [sys.executable, "-m", "keyturn", *args]


@dataclass
class KeyturnServer:
    """A running ``keyturn serve`` process and the base URLs of its two listeners."""

    process: subprocess.Popen[bytes]
    public: str
    admin: str
    public_port: int
    admin_port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        prefix: str = "",
    ) -> KeyturnServer:
        """Start a server and wait until both listeners answer ``/healthz``.

        ``env`` adds or overrides ``KEYTURN_*`` settings; the data directory and both
        ports are always set here. ``prefix`` is the ``KEYTURN_URL_PREFIX`` in ``env``.
        A port taken between `free_port` and the server's bind is retried on new ports.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            server = cls._launch(data_dir, log_path, env=env or {}, args=args, prefix=prefix)
            try:
                if server.wait_ready():
                    return server
            except BaseException:
                server.kill()
                raise
            server.kill()
            log = server.log()
            if "Address already in use" not in log or attempt == PORT_ATTEMPTS:
                pytest.fail(f"keyturn serve exited with {server.process.returncode}:\n{log}")
        raise AssertionError("unreachable")

    @classmethod
    def _launch(
        cls,
        data_dir: Path,
        log_path: Path,
        *,
        env: Mapping[str, str],
        args: Sequence[str],
        prefix: str,
    ) -> KeyturnServer:
        public_port, admin_port = free_port(), free_port()
        settings = {
            "KEYTURN_DATA_DIR": str(data_dir),
            "KEYTURN_PUBLIC_PORT": str(public_port),
            "KEYTURN_ADMIN_PORT": str(admin_port),
            **env,
        }
        full_env = server_environment(settings)
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 -- this interpreter, a fixed argv
                keyturn_command("serve", *args),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown reaches workers
            )
        return cls(
            process=process,
            public=f"http://127.0.0.1:{public_port}{prefix}",
            admin=f"http://127.0.0.1:{admin_port}{prefix}",
            public_port=public_port,
            admin_port=admin_port,
            data_dir=data_dir,
            log_path=log_path,
            env=full_env,
        )

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, deadline: float = START_DEADLINE) -> bool:
        """Poll ``GET /healthz`` on both listeners until they answer 200 (True), the
        process exits (False) or time runs out (the test fails)."""
        end = time.monotonic() + deadline
        pending = [f"{self.public}/healthz", f"{self.admin}/healthz"]
        while pending:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(pending[0], timeout=2.0).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                pytest.fail(f"keyturn serve not ready after {deadline} s:\n{self.log()}")
            time.sleep(0.05)  # poll interval, not a wait for an event
        return True

    def wait_for_log(
        self, predicate: Callable[[str], bool], deadline: float = START_DEADLINE
    ) -> str:
        """Poll the log until ``predicate(log)`` holds; return the log."""
        end = time.monotonic() + deadline
        while True:
            text = self.log()
            if predicate(text):
                return text
            if self.process.poll() is not None or time.monotonic() > end:
                pytest.fail(f"the expected log lines never came:\n{text}")
            time.sleep(0.05)  # poll interval

    def stop(self, deadline: float = STOP_DEADLINE) -> int:
        """SIGTERM, then wait for the exit; returns the exit code (0 = graceful)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"keyturn serve did not stop within {deadline} s of SIGTERM:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the process group (the server and any workers) if anything is left."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_DEADLINE)


@pytest.fixture
def keyturn_server(tmp_path: Path) -> Iterator[Callable[..., KeyturnServer]]:
    """A factory: ``keyturn_server(env={...}, args=[...], data_dir=...)`` -> a running server.

    Servers started through it are stopped at teardown: SIGTERM with a deadline, then
    SIGKILL of the process group, so no worker outlives a failing test.
    """
    started: list[KeyturnServer] = []
    count = 0

    def start(
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        data_dir: Path | None = None,
    ) -> KeyturnServer:
        nonlocal count
        count += 1
        settings = env or {}
        prefix = settings.get("KEYTURN_URL_PREFIX", settings.get("URL_PREFIX", "")).rstrip("/")
        server = KeyturnServer.start(
            data_dir or tmp_path / "data",
            tmp_path / f"keyturn-{count}.log",
            env=env,
            args=args,
            prefix=prefix,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=STOP_DEADLINE)
        server.kill()  # a no-op unless something (a worker) is left in the group
