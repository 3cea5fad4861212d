"""``keyturn healthcheck``: the container image's ``HEALTHCHECK`` (``keyturn/healthcheck.py``).

Its probe URL follows the settings ``keyturn serve`` uses, JWThenticator's ``PORT`` and
``URL_PREFIX`` included, and it exits only 0 or 1 (Docker reserves 2). The whole
command against a real server, as the Dockerfile runs it, is in
``tests/deploy/test_docker.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from keyturn.cli import app
from keyturn.config import Settings
from keyturn.healthcheck import probe_url

runner = CliRunner()


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:8080/healthz"),
        ({"PORT": "9000", "URL_PREFIX": "/auth"}, "http://127.0.0.1:9000/auth/healthz"),
        ({"KEYTURN_PUBLIC_PORT": "9001", "PORT": "9000"}, "http://127.0.0.1:9001/healthz"),
        ({"KEYTURN_URL_PREFIX": "/kt/"}, "http://127.0.0.1:8080/kt/healthz"),
        ({"KEYTURN_PUBLIC_HOST": "::"}, "http://[::1]:8080/healthz"),
        ({"KEYTURN_PUBLIC_HOST": "10.0.0.5"}, "http://10.0.0.5:8080/healthz"),
        ({"KEYTURN_PUBLIC_HOST": "fd00::5"}, "http://[fd00::5]:8080/healthz"),
    ],
)
def test_the_probe_follows_the_servers_own_settings(environ: dict[str, str], url: str) -> None:
    assert probe_url(Settings.from_environment(environ)) == url


def test_ready_asks_readyz() -> None:
    settings = Settings.from_environment({"URL_PREFIX": "/auth"})

    assert probe_url(settings, ready=True) == "http://127.0.0.1:8080/auth/readyz"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_nothing_listening_is_unhealthy_in_one_line(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", str(closed_port))
    monkeypatch.setenv("URL_PREFIX", "/auth")

    result = runner.invoke(app, ["healthcheck", "--timeout", "2"])

    url = f"http://127.0.0.1:{closed_port}/auth/healthz"
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {url}: no answer (Connection refused); is `keyturn serve` running with "
        "these settings?\n"
    )


def test_invalid_settings_are_unhealthy_not_dockers_reserved_exit_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYTURN_PUBLIC_PORT", "not-a-port")

    result = runner.invoke(app, ["healthcheck"])

    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid setting")
    assert "public_port" in result.stderr.lower()  # the setting at fault is named
    assert "Traceback" not in result.output
