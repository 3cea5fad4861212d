"""Each example's "Try it" recipe, pasted into bash as its docstring prints it.

The recipe is the docstring's first literal block (after ``::``) and what it prints the
second (in that order, among the log lines of the servers it starts). It runs from the
repository's root with only the variables a reader would move set to this test's values:
Keyturn's ports and data directory, ``KEYTURN_URL``, ``KT_ADMIN``, ``SERVICE_PORT`` and
the client's ``KEYTURN_REFRESH_TOKEN_FILE``. It starts ``keyturn serve`` itself, waits
for it, creates its key (or user) with the CLI, starts the example and stops both; its
own process group is killed afterwards whatever happened.

Findings 12 and 13 of the newcomer trial: the docstrings did not say which key (scope,
identifier) the example needs, and ``keyturn serve &`` raced the example's start-up.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.examples.test_examples import EXAMPLES
from tests.serve_fixtures import free_port, server_environment

ROOT = EXAMPLES.parent
#: How long a whole recipe may take: two servers start, one of them migrates a database.
RECIPE_DEADLINE = 120


def literal_blocks(docstring: str) -> list[str]:
    """The reStructuredText literal blocks (after a ``::`` line), dedented."""
    blocks = re.findall(r"::\n\n((?:(?: {4}.*)?\n)+)", docstring + "\n")
    return [textwrap.dedent(block).strip("\n") + "\n" for block in blocks]


def recipe(name: str) -> tuple[str, str]:
    docstring = ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text()))
    assert docstring is not None
    script, prints = literal_blocks(docstring)[:2]
    return script, prints


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("fastapi_service", ["--scope orders:read"]),
        ("aiohttp_service", ["--identifier acme", "--scope orders:read"]),
    ],
)
def test_the_recipe_creates_the_key_the_example_needs_and_waits_for_keyturn(
    name: str, needs: list[str]
) -> None:
    script, _ = recipe(name)
    create = next(line for line in script.splitlines() if "keyturn keys create" in line)
    serving = script.index("keyturn serve &")
    waiting = script.index("/healthz", serving)

    assert all(option in create for option in needs)
    assert serving < waiting < script.index("keyturn keys create")
    assert "KEYTURN_ISSUER" in script


@pytest.mark.parametrize(
    "name",
    [
        "fastapi_service",
        "aiohttp_service",
        "aiohttp_jwthenticator",
        "aiohttp_tutorial",
        "client_script",
    ],
)
def test_the_recipe_runs_as_printed(name: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed; the examples' recipes cannot be checked")
        pytest.skip("curl is not installed")
    script, prints = recipe(name)
    public_port, admin_port, service_port = free_port(), free_port(), free_port()
    env = server_environment(
        {
            "KEYTURN_URL": f"http://127.0.0.1:{public_port}",
            "KEYTURN_PUBLIC_PORT": str(public_port),
            "KEYTURN_ADMIN_PORT": str(admin_port),
            "KEYTURN_DATA_DIR": str(tmp_path / "data"),
            "KT_ADMIN": f"http://127.0.0.1:{admin_port}",
            "SERVICE_PORT": str(service_port),
            "KEYTURN_REFRESH_TOKEN_FILE": str(tmp_path / "refresh-token"),
        }
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 -- the example's own recipe, by design
            [shutil.which("bash") or "/bin/bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own group: the teardown reaches what it started
        )
    try:
        returncode = process.wait(timeout=RECIPE_DEADLINE)
        left = True
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            left = False
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    printed, logged = out.read_text(), err.read_text()
    assert returncode == 0, f"{printed}\n{logged}"
    # The services log to the same terminal: the recipe's lines come in order among them.
    lines = iter(printed.splitlines())
    assert all(line in lines for line in prints.splitlines()), printed
    assert "Traceback" not in logged, logged
    assert not left, "the recipe left a process running"
