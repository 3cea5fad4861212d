"""Suite-wide fixtures: a clean environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from keyturn.config import LEGACY_VARIABLES

pytest_plugins = ["tests.storage_fixtures"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without KEYTURN_* (and legacy JWThenticator) settings."""
    for name in list(os.environ):
        if name.startswith("KEYTURN_") or name in LEGACY_VARIABLES:
            monkeypatch.delenv(name)


# --- CI guard: PostgreSQL-backed tests may skip on a laptop, never in CI ---------------

_skipped_postgresql: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember every PostgreSQL-marked test that ended skipped."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and item.get_closest_marker("postgresql") is not None:
        _skipped_postgresql.append(item.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With KEYTURN_REQUIRE_POSTGRESQL=1 (set by .ci/run under CI=true), skips are failures."""
    if os.environ.get("KEYTURN_REQUIRE_POSTGRESQL") == "1" and _skipped_postgresql:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"FAILED: {len(_skipped_postgresql)} PostgreSQL test(s) were skipped but "
                "KEYTURN_REQUIRE_POSTGRESQL=1: " + ", ".join(_skipped_postgresql[:5]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
