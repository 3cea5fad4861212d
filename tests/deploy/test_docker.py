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
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from sqlalchemy.engine import URL

from keyturn.config import LEGACY_ENVIRONMENT, Settings
from tests.deploy.conftest import DEPLOY
from tests.serve_fixtures import START_DEADLINE, STOP_DEADLINE, free_port, server_environment
from tests.storage_fixtures import (
    create_postgresql_database,
    drop_postgresql_database,
    run_in_own_loop,
)

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


def test_the_image_exposes_the_public_port_and_sets_only_real_settings() -> None:
    env = RUNTIME.environment()
    exposed = {int(port) for port in (RUNTIME.last("EXPOSE") or "").split()}
    settings = Settings.from_environment(env)  # the values parse

    # The admin listener is on loopback inside the container: nothing to expose.
    assert exposed == {DEFAULTS.public_port}
    assert (settings.public_port, settings.admin_port) == (8080, 8081)
    assert env["KEYTURN_PUBLIC_HOST"] == "0.0.0.0"  # noqa: S104 -- reachable in a container
    assert env["KEYTURN_ADMIN_HOST"] == "127.0.0.1"
    assert env["KEYTURN_DATA_DIR"] == "/var/lib/keyturn"
    keyturn_names = {name for name in env if name.startswith("KEYTURN_")}
    assert keyturn_names <= SETTING_VARIABLES


def test_the_image_sets_no_setting_that_would_shadow_a_jwthenticator_variable() -> None:
    """Finding 7: ``ENV KEYTURN_PUBLIC_PORT=8080`` silently overrode ``-e PORT=9000``."""
    env = RUNTIME.environment()
    shadowing = {
        f"KEYTURN_{setting.upper()}": legacy
        for legacy, setting in LEGACY_ENVIRONMENT.items()
        if f"KEYTURN_{setting.upper()}" in env
    }

    assert shadowing == {}
    assert Settings.from_environment({**env, "PORT": "9000"}).public_port == 9000
    assert Settings.from_environment({**env, "URL_PREFIX": "/auth"}).url_prefix == "/auth"


def healthcheck_options() -> dict[str, str]:
    args = RUNTIME.last("HEALTHCHECK") or ""
    options, _, _ = args.partition("CMD ")
    return dict(option.removeprefix("--").split("=", 1) for option in options.split())


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def test_the_healthcheck_is_the_keyturn_command_and_probes_often_while_starting() -> None:
    """Finding 31: with a 30 s interval and no start interval, Compose's nginx (which
    waits for ``service_healthy``) started about 30 s after Keyturn on every ``up``."""
    options = healthcheck_options()

    assert healthcheck_command() == ["keyturn", "healthcheck"]
    assert seconds(options["start-interval"]) <= 2
    assert seconds(options["start-period"]) >= 20  # first start migrates the database
    # The command starts a Python process (about 1 s on a busy machine) and waits up to
    # 4 s for the answer: Docker's timeout leaves room for both.
    assert seconds(options["timeout"]) >= 8


def run_image_command(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- the Dockerfile's own command
        command, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def in_this_environment(command: list[str]) -> list[str]:
    """The image's command with its programs taken from this virtualenv."""
    programs = {"python": sys.executable, "keyturn": str(Path(sys.executable).with_name("keyturn"))}
    return [programs.get(command[0], command[0]), *command[1:]]


#: The listener settings a container gets: Keyturn's own names, or JWThenticator's
#: ``PORT`` and ``URL_PREFIX`` (then the health check must follow the prefix too).
LISTENERS = [
    pytest.param("KEYTURN_PUBLIC_PORT", {}, id="keyturn-names"),
    pytest.param("PORT", {"URL_PREFIX": "/auth"}, id="jwthenticator-PORT-URL_PREFIX"),
]


@pytest.mark.parametrize(("port_variable", "more"), LISTENERS)
def test_the_entrypoint_serves_and_the_healthcheck_sees_it(
    tmp_path: Path, port_variable: str, more: dict[str, str]
) -> None:
    """``ENTRYPOINT`` + ``CMD`` with the image's ``ENV`` (ports and data directory
    moved into this test) answer /healthz, and the health check passes, then fails.

    Finding 7: with ``-e PORT=... -e URL_PREFIX=/auth`` the old health check asked
    ``/healthz`` on the image's fixed port and the container was never healthy.
    """
    entrypoint = exec_form(RUNTIME.last("ENTRYPOINT") or "null")
    command = exec_form(RUNTIME.last("CMD") or "null")
    assert entrypoint == ["keyturn"]
    assert command[0] == "serve"
    public_port, admin_port = free_port(), free_port()
    prefix = more.get("URL_PREFIX", "")
    env = server_environment(
        {
            **RUNTIME.environment(),
            port_variable: str(public_port),
            **more,
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
        while (checked := run_image_command(health, env)).returncode != 0:
            assert checked.returncode == 1, checked  # Docker reserves exit status 2
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.1)  # poll interval, not a wait for an event
        url = f"http://127.0.0.1:{public_port}{prefix}/healthz"
        assert checked.stdout == f"ok: {url} answered 200\n"
        response = httpx.get(url, timeout=5)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
    finally:
        server.terminate()
        assert server.wait(timeout=STOP_DEADLINE) == 0
        log.close()

    stopped = run_image_command(health, env)  # a stopped server is unhealthy
    assert stopped.returncode == 1
    assert stopped.stderr.startswith(f"error: {url}: no answer (Connection refused)")


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


# -- the documented `docker run` commands (docs/deployment.md) ------------------------------


@dataclass
class DockerRun:
    """One documented ``docker run``: its ``-e`` variables and the image's arguments."""

    env: dict[str, str]
    args: list[str]


def documented_docker_runs() -> list[DockerRun]:
    """The ``docker run ... keyturn ...`` commands of the Docker section, in order, with
    the block's own shell variables (``DB=...``) expanded."""
    page = (ROOT / "docs" / "deployment.md").read_text()
    section = page.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)
    assert block is not None, "the Docker section has no sh block"
    variables: dict[str, str] = {}
    runs: list[DockerRun] = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 1 and re.fullmatch(r"[A-Z_]+=\S+", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        if words[:2] != ["docker", "run"]:
            continue
        words = [re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], w) for w in words[2:]]
        env: dict[str, str] = {}
        while words[0].startswith("-"):
            option = words.pop(0)
            if option in {"-e", "-p"}:
                value = words.pop(0)
                if option == "-e":
                    env.update([value.split("=", 1)])
        assert words.pop(0) == "keyturn", "the image is built as `keyturn`"
        runs.append(DockerRun(env=env, args=words or exec_form(RUNTIME.last("CMD") or "null")))
    return runs


@pytest.mark.postgresql
def test_the_documented_docker_commands_serve_a_new_postgresql_database(
    tmp_path: Path, postgresql_admin_url: URL
) -> None:
    """Finding 3: the page's ``docker run`` against a new database died on a missing
    table; it now runs ``keyturn db upgrade`` first. Each command runs as the image
    would run it (its ``ENV``, the page's ``-e`` values, ``keyturn`` + the arguments),
    on a database created for this test; ``...`` placeholders get real secrets."""
    runs = documented_docker_runs()
    upgrade, serve = runs[0], runs[1]
    assert upgrade.args == ["db", "upgrade"]
    assert serve.args == ["serve"]
    assert urlsplit(upgrade.env["KEYTURN_DATABASE_URL"]) == urlsplit(
        serve.env["KEYTURN_DATABASE_URL"]
    )
    database = run_in_own_loop(lambda: create_postgresql_database(postgresql_admin_url))
    public_port, admin_port = free_port(), free_port()
    here = {
        "KEYTURN_DATABASE_URL": database.render_as_string(hide_password=False),
        "KEYTURN_DATA_DIR": str(tmp_path / "keyturn"),
        "KEYTURN_PUBLIC_PORT": str(public_port),
        "KEYTURN_ADMIN_PORT": str(admin_port),
    }

    def image_env(run: DockerRun) -> dict[str, str]:
        filled = {k: secrets.token_urlsafe(32) if v == "..." else v for k, v in run.env.items()}
        return server_environment({**RUNTIME.environment(), **filled, **here})

    keyturn = in_this_environment(["keyturn"])
    try:
        migrated = run_image_command([*keyturn, *upgrade.args], image_env(upgrade))
        assert migrated.returncode == 0, migrated.stderr
        env = image_env(serve)
        log = (tmp_path / "serve.log").open("wb")
        server = subprocess.Popen(  # noqa: S603 -- the documented command
            [*keyturn, *serve.args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            health = in_this_environment(healthcheck_command())
            deadline = time.monotonic() + START_DEADLINE
            while run_image_command(health, env).returncode != 0:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "the health check never passed"
                time.sleep(0.1)  # poll interval, not a wait for an event
            ready = httpx.get(f"http://127.0.0.1:{public_port}/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
        finally:
            server.terminate()
            assert server.wait(timeout=STOP_DEADLINE) == 0
            log.close()
        cli = run_image_command([*keyturn, *runs[2].args], image_env(runs[2]))
        assert cli.returncode == 0, cli.stderr
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(postgresql_admin_url, database))
