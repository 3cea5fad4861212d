"""The curated top-level API: sorted, complete, and importable (after httpx's test)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import keyturn


def test_all_is_sorted_and_unique() -> None:
    assert keyturn.__all__ == sorted(set(keyturn.__all__))


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name in dir(keyturn)
        if not name.startswith("_")
        and not isinstance(getattr(keyturn, name), type(keyturn))
        and name != "annotations"  # from __future__
    }

    assert public == set(keyturn.__all__) - {"__version__"}


def test_every_exported_error_is_a_keyturn_error() -> None:
    errors = [getattr(keyturn, name) for name in keyturn.__all__ if name.endswith("Error")]

    assert errors
    assert all(issubclass(error, keyturn.KeyturnError) for error in errors)


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("JWKSVerifier", "keyturn.verify"),
        ("OfflineVerifier", "keyturn.verify"),
        ("RemoteVerifier", "keyturn.verify"),
        ("Verifier", "keyturn.verify"),
        ("AsyncClient", "keyturn.client"),
        ("Client", "keyturn.client"),
        ("KeyturnAuth", "keyturn.client"),
        ("Settings", "keyturn.config"),
    ],
)
def test_what_users_need_is_exported(name: str, module: str) -> None:
    """STYLE habit 5: a verifier, the clients and the settings, from ``keyturn`` itself."""
    assert name in keyturn.__all__
    assert getattr(keyturn, name) is getattr(importlib.import_module(module), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'KeyturnServer'"):
        _ = keyturn.KeyturnServer  # type: ignore[attr-defined]


def test_importing_keyturn_loads_no_http_or_database_library() -> None:
    """The verifiers, clients and settings load on first use only."""
    probe = (
        "import json, sys, keyturn; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))"
    )
    heavy = ["httpx", "sqlalchemy", "pydantic_settings", "starlette", "typer"]
    result = subprocess.run(  # noqa: S603 -- our own interpreter and a fixed script
        [sys.executable, "-c", probe, *heavy],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert json.loads(result.stdout) == []


def test_every_module_declares_its_all() -> None:
    """Each module says what it exports, so star-imports and docs stay honest."""
    missing = []
    for info in pkgutil.walk_packages(keyturn.__path__, "keyturn."):
        if ".migrations" in info.name or info.name.endswith("__about__"):
            continue
        module = importlib.import_module(info.name)
        if not info.ispkg and not hasattr(module, "__all__"):
            missing.append(info.name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name!r}"

    assert missing == []
