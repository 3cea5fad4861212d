"""Recipes in ``docs/`` that a reader copies as they are: run or checked here.

Each test names the finding of the newcomer trial (issue 15) it guards.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from keyturn.core.assertions import load_client_public_key
from tests.deploy.conftest import main_config
from tests.serve_fixtures import KeyturnServer, free_port, keyturn_command, server_environment

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section(page: str, heading: str) -> str:
    """The text under ``heading`` (any level) up to the next heading of any level."""
    text = (DOCS / page).read_text()
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match is not None, f"{page} has no heading {heading!r}"
    return match.group(1)


def fenced_blocks(text: str, language: str) -> list[str]:
    return [str(block) for block in re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)]


def test_the_verify_testing_snippet_passes_with_plain_pytest(tmp_path: Path) -> None:
    """Finding 27: run with plain ``pytest`` (no ``asyncio_mode = auto``), the snippet
    failed with "async def functions are not natively supported"."""
    (snippet,) = fenced_blocks(section("verify.md", "Testing code that verifies tokens"), "python")
    (tmp_path / "test_snippet.py").write_text(snippet)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # pytest's defaults, not this project's

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "warning" not in result.stdout.lower()


#: Values the reader supplies: a password they chose, a token or refresh token they got.
READERS_OWN = {"PASSWORD", "NEW_PASSWORD", "RT", "TOKEN"}


def shell_variables(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """Names assigned (``NAME=``, ``read -rs NAME``) and used (``$NAME``), in order."""
    assigned, used = [], []
    for block in fenced_blocks(text, "sh"):
        for match in re.finditer(r"(?:^|\s)([A-Z_]+)=|read -rs ([A-Z_]+)|\$\{?([A-Z_]+)", block):
            name = match.group(1) or match.group(2)
            if name:
                assigned.append(name)
            else:
                used.append((len(assigned), match.group(3)))
    return assigned, used


def test_the_users_page_defines_every_variable_its_commands_use() -> None:
    """Finding 28: ``curl -X POST $ADMIN/v1/admin/users`` used a variable defined nowhere
    (the README calls the admin listener ``KT_ADMIN``)."""
    assigned, used = shell_variables((DOCS / "users.md").read_text())

    undefined = {
        name for count, name in used if name not in READERS_OWN and name not in assigned[:count]
    }
    assert undefined == set()
    assert {"KT", "KT_ADMIN"} <= set(assigned)


ROOT = DOCS.parent


def test_the_one_machine_nginx_recipe_points_the_shipped_file_at_local_ports(
    tmp_path: Path,
) -> None:
    """Finding 16: the "Try it by hand" curls needed nginx and Keyturn both on 8080 and
    never said which ports to use; the upstreams were Compose names."""
    nginx = section("deployment.md", "nginx `auth_request`")
    (block,) = [b for b in fenced_blocks(nginx, "sh") if "deploy/nginx/keyturn.conf |" in b]
    command = re.search(r"^sed .*?deploy/nginx/keyturn\.conf", block, re.S | re.M)
    assert command is not None

    rendered = subprocess.run(  # noqa: S603 -- the page's own sed line
        ["/bin/bash", "-euo", "pipefail", "-c", command.group(0)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout

    assert re.findall(r"^\s*server (\S+);", rendered, re.M) == ["127.0.0.1:8080", "127.0.0.1:9000"]
    assert re.findall(r"^\s*listen (\S+);", rendered, re.M) == ["127.0.0.1:8000"]
    assert "keyturn serve &" in block
    assert "http.server 9000" in block
    curls = [line for line in block.splitlines() if line.startswith(("TOKEN=", "curl "))]
    assert curls
    assert all("http://localhost:8000/" in line for line in curls)  # through nginx
    (tmp_path / "keyturn.conf").write_text(rendered)
    nginx_binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx_binary is not None:  # tests/deploy/test_nginx.py runs the file itself
        (tmp_path / "temp").mkdir()
        conf = tmp_path / "nginx.conf"
        # nginx -t may open the listening socket: a free port, not the reader's 8000.
        checkable = rendered.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{free_port()};")
        conf.write_text(main_config(tmp_path, checkable))
        checked = subprocess.run(  # noqa: S603
            [
                nginx_binary,
                "-p",
                str(tmp_path),
                "-e",
                str(tmp_path / "e.log"),
                "-c",
                str(conf),
                "-t",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr


def test_every_page_writes_the_key_as_the_basic_password() -> None:
    """Finding 16: ``docs/deployment.md`` used ``-u "$KEY:"``, ``docs/api.md``
    ``-u ":$KEY"``; both work, but the pages now agree on one."""
    pages = [*DOCS.glob("*.md"), ROOT / "README.md", *(ROOT / "examples").glob("*.py")]
    other_form = [page.name for page in pages if '-u "$KEY:"' in page.read_text()]

    assert other_form == []


def test_every_page_that_verifies_against_keyturn_says_the_issuer_must_match() -> None:
    """Finding 10: with ``keyturn serve --port 18680`` the examples' verifiers expected
    ``http://localhost:18680`` while tokens said ``http://localhost:8080``, and no page
    said that ``KEYTURN_ISSUER`` must be set and given to verifiers."""
    pages = [*DOCS.glob("*.md"), ROOT / "README.md", *(ROOT / "examples").glob("*.py")]
    verifying = [page for page in pages if "JWKSVerifier(" in page.read_text()]
    silent = [page.name for page in verifying if "KEYTURN_ISSUER" not in page.read_text()]

    assert len(verifying) >= 5
    assert silent == []


def indented_blocks(text: str, language: str) -> list[str]:
    """Fenced blocks inside list items too, dedented."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```$", text, re.S | re.M)
    return [textwrap.dedent(block) for _, block in found]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(  # noqa: S603 -- this interpreter and the doc's commands
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_keyless_device_walkthrough_runs(tmp_path: Path) -> None:
    """Issue 17: keyless.md's "A device, step by step" as written: `keys keypair` on the
    device (which creates no data directory there), `keys create --public-key` on the
    server, then the Python client signing assertions with the PEM file."""
    steps = section("keyless.md", "A device, step by step")
    keypair_block, create_block = indented_blocks(steps, "sh")
    (client_block,) = indented_blocks(steps, "python")
    device = tmp_path / "device"
    device.mkdir()
    server = KeyturnServer.start(tmp_path / "data", tmp_path / "keyturn.log")
    try:
        on_device = server_environment({})
        keypair = shlex.split(keypair_block.splitlines()[0], comments=True)
        _run(keyturn_command(*keypair[1:]), device, on_device)
        on_server = server_environment({"KEYTURN_DATA_DIR": str(server.data_dir)})
        create = shlex.split(create_block.replace("\\\n", " "), comments=True)
        created = json.loads(_run(keyturn_command(*create[1:]), device, on_server))
        issuer = httpx.get(f"{server.public}/.well-known/oauth-authorization-server").json()
        script = (
            client_block.replace(
                '"https://auth.example.com",',
                f'"{server.public}", audience="{issuer["issuer"]}",',
            )
            .replace("3Jx...", created["record"]["id"])
            .replace("https://api.example.com/telemetry", f"{server.public}/v1/validate")
        )
        printed = _run([sys.executable, "-c", script], device, on_device)
    finally:
        stopped = server.stop()
        server.kill()

    assert stopped == 0
    assert printed == "200\n"
    assert sorted(p.name for p in device.iterdir()) == ["device.pem", "device.pub.pem"]
    assert [k["kid"] for k in created["public_keys"]] == [
        load_client_public_key((device / "device.pub.pem").read_bytes()).kid
    ]
