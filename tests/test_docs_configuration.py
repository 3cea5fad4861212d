"""docs/configuration.md keeps up with `keyturn.config.Settings`."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyturn.config import LEGACY_ENVIRONMENT, Settings

DOC = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_variable(name: str) -> None:
    assert f"| `{name}` | `KEYTURN_{name.upper()}` |" in DOC


@pytest.mark.parametrize(
    "variable", [*sorted(LEGACY_ENVIRONMENT), "DB_USER", "DB_PASS", "DB_HOST", "DB_NAME"]
)
def test_every_jwthenticator_variable_is_documented(variable: str) -> None:
    assert f"`{variable}`" in DOC


def test_no_documented_setting_is_gone() -> None:
    """A row in the settings tables names a field that still exists."""
    documented = {
        line.split("`")[1]
        for line in DOC.splitlines()
        if line.startswith("| `") and line.split("|")[2].strip().startswith("`KEYTURN_")
    }

    assert documented == set(Settings.model_fields)
