"""The ``Dockerfile`` and ``deploy/compose.yaml``, checked without a Docker engine.

The Dockerfile is parsed (stages, user, health check, ports, environment), and the
image's ``ENTRYPOINT`` + ``CMD`` run here as a subprocess with the image's environment
(on free ports, with a private data directory), and so does its ``HEALTHCHECK``
command. The compose file is parsed and its settings, mounts and service names checked
against Keyturn and the other shipped files.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from keyturn.config import Settings
from tests.deploy.conftest import DEPLOY
from tests.serve_fixtures import START_DEADLINE, STOP_DEADLINE, free_port, server_environment

ROOT = DEPLOY.parent
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
DEFAULTS = Settings()
SETTING_VARIABLES = {f"KEYTURN_{name.upper()}" for name in Settings.model_fields}


@dataclass
class Stage:
    """One ``FROM`` stage: its name and its instructions as (keyword, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for word, args in self.instructions if word == keyword]
        return found[-1] if found else None

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for word, args in self.instructions:
            if word == "ENV":
                env.update(pair.split("=", 1) for pair in shlex.split(args))
        return env


def dockerfile_stages(text: str) -> list[Stage]:
    """Instructions by stage; continuation lines joined, comments and directives dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            stages.append(Stage(name=match.group(2), base=match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


STAGES = dockerfile_stages((ROOT / "Dockerfile").read_text())
RUNTIME = STAGES[-1]


def exec_form(args: str) -> list[str]:
    """A JSON-array instruction (``ENTRYPOINT ["keyturn"]``)."""
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


def healthcheck_command() -> list[str]:
    args = RUNTIME.last("HEALTHCHECK")
    assert args is not None, "the runtime stage has no HEALTHCHECK"
    _, _, command = args.partition("CMD ")
    return exec_form(command)


def test_the_dockerfile_builds_a_wheel_in_one_stage_and_runs_it_in_a_slim_one() -> None:
    builder, runtime = STAGES

    assert (builder.name, runtime.name) == ("builder", "runtime")
    assert builder.base == runtime.base == "python:${PYTHON_VERSION}-slim"
    assert any("--constraint constraints.txt" in a for w, a in builder.instructions if w == "RUN")
    assert any("from=builder" in a for w, a in runtime.instructions if w == "RUN")


def test_the_image_runs_as_an_unprivileged_user() -> None:
    user = RUNTIME.last("USER")

    assert user is not None
    assert user.split(":")[0] not in {"root", "0"}
    assert all(part.isdigit() for part in user.split(":"))  # runAsNonRoot can check it


def test_the_image_exposes_the_default_ports_and_sets_only_real_settings() -> None:
    env = RUNTIME.environment()
    exposed = {int(port) for port in (RUNTIME.last("EXPOSE") or "").split()}

    assert exposed == {DEFAULTS.public_port, DEFAULTS.admin_port}
    assert int(env["KEYTURN_PUBLIC_PORT"]) == DEFAULTS.public_port
    assert int(env["KEYTURN_ADMIN_PORT"]) == DEFAULTS.admin_port
    assert env["KEYTURN_PUBLIC_HOST"] == "0.0.0.0"  # noqa: S104 -- reachable in a container
    assert env["KEYTURN_DATA_DIR"] == "/var/lib/keyturn"
    keyturn_names = {name for name in env if name.startswith("KEYTURN_")}
    assert keyturn_names <= SETTING_VARIABLES
    Settings.from_environment(env)  # the values parse


def run_image_command(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- the Dockerfile's own command
        command, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def in_this_environment(command: list[str]) -> list[str]:
    """The image's command with its programs taken from this virtualenv."""
    programs = {"python": sys.executable, "keyturn": str(Path(sys.executable).with_name("keyturn"))}
    return [programs.get(command[0], command[0]), *command[1:]]


def test_the_entrypoint_serves_and_the_healthcheck_sees_it(tmp_path: Path) -> None:
    """``ENTRYPOINT`` + ``CMD`` with the image's ``ENV`` (ports and data directory
    moved into this test) answer /healthz, and the health check passes, then fails."""
    entrypoint = exec_form(RUNTIME.last("ENTRYPOINT") or "null")
    command = exec_form(RUNTIME.last("CMD") or "null")
    assert entrypoint == ["keyturn"]
    assert command[0] == "serve"
    public_port, admin_port = free_port(), free_port()
    env = server_environment(
        {
            **RUNTIME.environment(),
            "KEYTURN_PUBLIC_PORT": str(public_port),
            "KEYTURN_ADMIN_PORT": str(admin_port),
            "KEYTURN_DATA_DIR": str(tmp_path / "keyturn"),
        }
    )
    argv = in_this_environment([*entrypoint, *command])
    assert Path(argv[0]).exists(), f"no {argv[0]}: install the project (pip install -e .)"
    health = in_this_environment(healthcheck_command())
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(  # noqa: S603
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while run_image_command(health, env).returncode != 0:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.1)  # poll interval, not a wait for an event
        response = httpx.get(f"http://127.0.0.1:{public_port}/healthz", timeout=5)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
    finally:
        server.terminate()
        assert server.wait(timeout=STOP_DEADLINE) == 0
        log.close()

    assert run_image_command(health, env).returncode != 0  # a stopped server is unhealthy


# -- compose -----------------------------------------------------------------------------


def service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = COMPOSE["services"]
    assert name in services, f"deploy/compose.yaml has no {name} service"
    found: dict[str, Any] = services[name]
    return found


def test_compose_runs_keyturn_postgresql_and_nginx() -> None:
    assert {"keyturn", "postgres", "nginx"} <= set(COMPOSE["services"])


def test_compose_gives_keyturn_only_real_settings_and_its_database() -> None:
    keyturn, postgres = service("keyturn"), service("postgres")["environment"]
    env = {name: str(value) for name, value in keyturn["environment"].items()}
    database = urlsplit(env["KEYTURN_DATABASE_URL"])

    assert set(env) <= SETTING_VARIABLES
    Settings.from_environment(env)  # the values parse
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert (DEPLOY / keyturn["build"]["context"] / keyturn["build"]["dockerfile"]).is_file()
    assert keyturn["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_mounts_the_shipped_nginx_config_whose_upstreams_are_compose_services() -> None:
    nginx = service("nginx")
    mounts = [volume.split(":") for volume in nginx["volumes"]]
    site = (DEPLOY / "nginx" / "keyturn.conf").read_text()
    upstreams = dict(re.findall(r"server (\w+):(\d+);", site))

    assert [m[0] for m in mounts if m[1].startswith("/etc/nginx/conf.d/")] == [
        "./nginx/keyturn.conf"
    ]
    assert (DEPLOY / "nginx" / "keyturn.conf").is_file()
    assert set(upstreams) <= set(COMPOSE["services"])
    assert int(upstreams["keyturn"]) == DEFAULTS.public_port
    assert nginx["depends_on"]["keyturn"]["condition"] == "service_healthy"
    assert "80" in {port.split(":")[-1] for port in nginx["ports"]}
