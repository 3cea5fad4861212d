"""The README's curl sequence, run as printed against a real ``keyturn serve``.

The block between ``<!-- curl-sequence -->`` and ``<!-- /curl-sequence -->`` is run with
bash; only ``KT`` and ``KT_ADMIN`` (which the block itself reads) point it at this test's
server. Its output must be exactly what the README says it prints.
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


def readme_section() -> str:
    text = README.read_text()
    match = re.search(r"<!-- curl-sequence -->\n(.*?)<!-- /curl-sequence -->", text, re.S)
    assert match is not None, "README.md has no curl-sequence markers"
    return match.group(1)


def fenced(section: str, language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section, re.S | re.M)
    assert len(blocks) == 1, f"expected one ```{language} block in the curl sequence"
    return str(blocks[0])


def test_curl_sequence_needs_only_curl_and_python() -> None:
    """No jq (not installed by default): fields are read with ``python3 -c``."""
    script = fenced(readme_section(), "sh")
    words = set(re.findall(r"[\w-]+", script))
    assert "jq" not in words
    assert {"curl", "python3"} <= words


def test_curl_sequence_runs_as_printed(keyturn_server: Callable[..., KeyturnServer]) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed; the README's curl sequence cannot be checked")
        pytest.skip("curl is not installed")
    section = readme_section()
    script, expected = fenced(section, "sh"), fenced(section, "text")
    server = keyturn_server()
    env = server_environment({"KT": server.public, "KT_ADMIN": server.admin})
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
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout == expected
    assert server.stop() == 0
