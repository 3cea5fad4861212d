"""The core is sans-I/O: importing any ``keyturn.core`` module pulls in no async or web stack."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("asyncio", "sqlalchemy", "starlette", "aiohttp", "httpx", "uvicorn")


def _core_modules() -> list[str]:
    """Every module under keyturn/core, found on disk so that collection imports nothing."""
    spec = importlib.util.find_spec("keyturn")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    core = Path(next(iter(spec.submodule_search_locations))) / "core"
    names = {"keyturn.core", *(f"keyturn.core.{path.stem}" for path in core.glob("*.py"))}
    return sorted(names - {"keyturn.core.__init__"})


CORE_MODULES = _core_modules()

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in sys.argv[2:])))
"""


def test_the_core_modules_are_found() -> None:
    assert {"keyturn.core.tokens", "keyturn.core.signing", "keyturn.core.secrets"} <= set(
        CORE_MODULES
    )


@pytest.mark.parametrize("module", CORE_MODULES)
def test_importing_a_core_module_loads_no_io_framework(module: str) -> None:
    result = subprocess.run(  # noqa: S603 -- our own interpreter and a fixed script
        [sys.executable, "-c", PROBE, module, *FORBIDDEN],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_probe_does_detect_a_forbidden_import() -> None:
    """Control: the same probe reports asyncio when a module really imports it."""
    result = subprocess.run(  # noqa: S603 -- our own interpreter and a fixed script
        [sys.executable, "-c", PROBE, "asyncio.queues", *FORBIDDEN],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert "asyncio" in json.loads(result.stdout)
