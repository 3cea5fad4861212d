"""Fixtures for the files in ``deploy/``: a real nginx, a header-echoing upstream, Keyturn.

nginx runs as a foreground subprocess with its own prefix, temp directories, logs and
pid file under ``tmp_path``, on a free loopback port: never ``/etc/nginx`` or port 80.
Where nginx is not installed the nginx tests skip with the reason, except under
``CI=true``, where ``.ci/run`` installs it and a missing binary fails them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serve_fixtures import START_DEADLINE, STOP_DEADLINE, free_port, keyturn_server

__all__ = ["DEPLOY", "NginxGateway", "echo_upstream", "keyturn_server", "nginx_binary"]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ECHO_UPSTREAM = Path(__file__).with_name("echo_upstream.py")
_NGINX_PLACES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """The nginx executable; skips (or fails under ``CI=true``) when there is none."""
    found = shutil.which("nginx") or next(
        (place for place in _NGINX_PLACES if os.access(place, os.X_OK)), None
    )
    if found is None:
        reason = "nginx is not installed (Debian: apt-get install nginx-light)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it, so under CI=true this is a failure")
        pytest.skip(reason)
    return found


@dataclass
class Upstream:
    """The echoing application: its ``host:port`` and its process."""

    address: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[Upstream]:
    """A stdlib HTTP server that answers every request with the headers it received."""
    process = subprocess.Popen(  # noqa: S603 -- this interpreter, a fixed script
        [sys.executable, str(ECHO_UPSTREAM)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()  # printed once bound: the ready signal
        assert port.isdigit(), f"the echo upstream did not start (exit {process.poll()})"
        yield Upstream(address=f"127.0.0.1:{port}", process=process)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_DEADLINE)
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def render_nginx_site(keyturn: str, app: str, listen: int) -> str:
    """``deploy/nginx/keyturn.conf`` with this test's addresses in place of the shipped ones."""
    site = (DEPLOY / "nginx" / "keyturn.conf").read_text()
    replacements = {
        r"server keyturn:8080;": f"server {keyturn};",
        r"server app:8000;": f"server {app};",
        r"listen 80;": f"listen 127.0.0.1:{listen};",
    }
    for shipped, local in replacements.items():
        site, count = re.subn(re.escape(shipped), local, site)
        assert count == 1, f"deploy/nginx/keyturn.conf no longer has {shipped!r}"
    return site


def main_config(prefix: Path, site: str) -> str:
    """A complete nginx.conf around an http-context ``site``, everything under ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx would run its workers as `nobody`, who cannot enter tmp_path.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"    access_log {prefix / 'access.log'};\n"
        f"{temp}\n"
        f"{site}\n"
        "}\n"
    )


@dataclass
class NginxGateway:
    """A running nginx: the base URL it listens on and its error log."""

    url: str
    process: subprocess.Popen[bytes]
    prefix: Path

    def error_log(self) -> str:
        """Everything nginx logged so far."""
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL if nginx lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_DEADLINE)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def nginx_gateway(
    nginx_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., NginxGateway]]:
    """A factory: ``nginx_gateway(keyturn="127.0.0.1:P", app="127.0.0.1:Q")`` starts nginx
    on the shipped site config and waits until it answers; stopped at teardown."""
    started: list[NginxGateway] = []

    def start(*, keyturn: str, app: str) -> NginxGateway:
        prefix = tmp_path_factory.mktemp("nginx")
        (prefix / "temp").mkdir()
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(main_config(prefix, render_nginx_site(keyturn, app, port)))
        command = [nginx_binary, "-p", str(prefix), "-e", str(prefix / "error.log")]
        command += ["-c", str(conf)]
        test = subprocess.run(  # noqa: S603 -- nginx -t on our own file
            [*command, "-t"], capture_output=True, text=True, check=False
        )
        assert test.returncode == 0, f"nginx -t rejected the shipped config:\n{test.stderr}"
        process = subprocess.Popen(  # noqa: S603
            [*command, "-g", f"daemon off; pid {prefix / 'nginx.pid'};"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        gateway = NginxGateway(url=f"http://127.0.0.1:{port}", process=process, prefix=prefix)
        started.append(gateway)
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if process.poll() is not None:
                pytest.fail(f"nginx exited with {process.returncode}:\n{gateway.error_log()}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{gateway.url}/.well-known/jwks.json", timeout=2.0)
                return gateway
            if time.monotonic() > deadline:
                pytest.fail(f"nginx not answering after {START_DEADLINE} s:\n{gateway.error_log()}")
            time.sleep(0.05)  # poll interval, not a wait for an event

    yield start
    for gateway in started:
        gateway.stop()
