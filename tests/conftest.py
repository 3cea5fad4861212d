"""Suite-wide fixtures: a clean environment for every test."""

from __future__ import annotations

import os

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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every PostgreSQL-marked test that ended skipped.

    A report hook, not ``makereport``: under pytest-xdist the controller gets every
    worker's reports here, so the guard below sees the whole run.
    """
    if report.skipped and "postgresql" in report.keywords:
        _skipped_postgresql.append(report.nodeid)


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
