"""The curated top-level API: sorted, complete, and importable (after httpx's test)."""

from __future__ import annotations

import importlib
import pkgutil

import keyturn


def test_all_is_sorted_and_unique() -> None:
    assert keyturn.__all__ == sorted(set(keyturn.__all__))


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(keyturn).items()
        if not name.startswith("_")
        and not isinstance(value, type(keyturn))
        and name != "annotations"  # from __future__
    }

    assert public == set(keyturn.__all__) - {"__version__"}


def test_every_exported_error_is_a_keyturn_error() -> None:
    errors = [getattr(keyturn, name) for name in keyturn.__all__ if name.endswith("Error")]

    assert errors
    assert all(issubclass(error, keyturn.KeyturnError) for error in errors)


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
