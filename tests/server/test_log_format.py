"""`configure_logging`: one JSON object a line with the request's context, or console text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from keyturn.server.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_json_lines_carry_the_bound_request_id(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    structlog.contextvars.bind_contextvars(request_id="rid-1")

    logging.getLogger("keyturn.access").info("request", extra={"route": "/x", "status": 200})
    logging.getLogger("uvicorn.error").info("line\nbreak", extra={"color_message": "\x1b[36m"})

    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["event"] == "request"
    assert (first["request_id"], first["route"], first["status"]) == ("rid-1", "/x", 200)
    assert (first["level"], first["logger"]) == ("info", "keyturn.access")
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "line\nbreak"  # escaped: a newline cannot forge a line
    assert "color_message" not in second  # uvicorn's ANSI copy of the message


def test_console_format_is_text(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "console")

    logging.getLogger("keyturn.server").debug("hello")

    err = capsys.readouterr().err
    assert "hello" in err
    assert not err.lstrip().startswith("{")


def test_driver_debug_lines_stay_off_at_debug_level(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiosqlite and asyncpg print statement parameters (secret hashes) at DEBUG, and
    SQLAlchemy logs every statement at INFO."""
    drivers = [logging.getLogger(name) for name in ("aiosqlite", "asyncpg", "sqlalchemy.engine")]
    levels = [driver.level for driver in drivers]
    try:
        configure_logging("debug", "json")
        for driver in drivers:
            driver.debug("executing %r with %r", "SELECT ?", (b"hash-of-a-key",))
            driver.info("SELECT api_keys.id FROM api_keys")  # SQLAlchemy's per-statement line
        logging.getLogger("keyturn.access").debug("request")

        lines = capsys.readouterr().err.splitlines()
    finally:
        for driver, level in zip(drivers, levels, strict=True):
            driver.setLevel(level)
    assert [json.loads(line)["event"] for line in lines] == ["request"]
