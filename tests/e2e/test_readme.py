"""The README's curl sequences, run as printed against a real ``keyturn serve``.

The blocks between ``<!-- curl-sequence -->`` and ``<!-- /curl-sequence -->`` (JWThenticator's
routes) and ``<!-- v1-sequence -->`` / ``<!-- /v1-sequence -->`` (``keyturn keys create``,
``/v1/token``, ``/v1/validate``) are run with bash; only ``KT`` and ``KT_ADMIN`` (which the
blocks themselves read) point them at this test's server, and ``KEYTURN_DATA_DIR`` points
the CLI at its data, as running in the server's directory would. Their output must be
exactly what the README says they print.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.serve_fixtures import KeyturnServer, server_environment

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_section(name: str = "curl-sequence") -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", text, re.S)
    assert match is not None, f"README.md has no {name} markers"
    return match.group(1)


def fenced(section: str, language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section, re.S | re.M)
    assert len(blocks) == 1, f"expected one ```{language} block in the curl sequence"
    return str(blocks[0])


@pytest.mark.parametrize("name", ["curl-sequence", "v1-sequence"])
def test_curl_sequence_needs_only_curl_and_python(name: str) -> None:
    """No jq (not installed by default): fields are read with ``python3 -c``."""
    script = fenced(readme_section(name), "sh")
    words = set(re.findall(r"[\w-]+", script))
    assert "jq" not in words
    assert {"curl", "python3"} <= words


def test_the_v1_sequence_shows_keys_create_and_the_token_endpoint() -> None:
    """Finding 18: the README showed neither ``keyturn keys create`` nor ``/v1/token``."""
    section = readme_section("v1-sequence")
    script = fenced(section, "sh")

    assert "keyturn keys create" in script
    assert "/v1/token" in script
    assert "/v1/validate" in script
    assert ". .venv/bin/activate" in section


#: What each block may print on stderr: ``keys create`` warns that the key is shown once.
STDERR = {
    "curl-sequence": "",
    "v1-sequence": "warning: this is the only time the key is shown; store it now.\n",
}


@pytest.mark.parametrize("name", ["curl-sequence", "v1-sequence"])
def test_curl_sequence_runs_as_printed(
    keyturn_server: Callable[..., KeyturnServer], name: str
) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed; the README's curl sequence cannot be checked")
        pytest.skip("curl is not installed")
    section = readme_section(name)
    script, expected = fenced(section, "sh"), fenced(section, "text")
    server = keyturn_server()
    env = server_environment(
        {"KT": server.public, "KT_ADMIN": server.admin, "KEYTURN_DATA_DIR": str(server.data_dir)}
    )
    # `python3` as the reader's shell finds it; this interpreter's directory comes first
    # so the test does not depend on a system Python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    bash = shutil.which("bash") or "/bin/bash"
    result = subprocess.run(  # noqa: S603 -- the README's own block, by design
        [bash, "-euo", "pipefail", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, STDERR[name]), result
    assert result.stdout == expected
    assert server.stop() == 0
