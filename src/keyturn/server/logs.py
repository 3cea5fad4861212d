"""Structured logs: one JSON object a line, with the request id of the request being served.

`configure_logging` routes every standard-library logger (Keyturn's, uvicorn's,
SQLAlchemy's) through structlog's `ProcessorFormatter`, so each record becomes one line
with ``timestamp``, ``level``, ``logger``, ``event`` and whatever the request bound:
``request_id`` always, ``key_id`` and ``jti`` once the service has named them, and
``route``, ``method``, ``status`` and ``duration_ms`` on the access line. ``console``
renders the same events for people at a terminal.

A request id is taken from the caller's ``X-Request-ID`` when it is sane (1-128
characters of ``A-Z a-z 0-9 . _ : + / = @ -``), otherwise made here, and returned in the
response's ``X-Request-ID``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, Literal

import structlog

__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID_HEADER",
    "configure_logging",
    "new_request_id",
    "sane_request_id",
]

#: Database loggers: SQLAlchemy writes every statement at INFO and rows at DEBUG, the
#: drivers print statement parameters at DEBUG.
_QUIET_DRIVERS: Final = ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool")

REQUEST_ID_HEADER: Final = b"x-request-id"
#: The logger of the one line each request writes when it ends.
ACCESS_LOGGER: Final = logging.getLogger("keyturn.access")
_SANE_ID: Final = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")
# Unique without a system call per request: a random per-process prefix and a counter.
_PREFIX: Final = os.urandom(10).hex().encode()
_COUNTER: Final = itertools.count(1)


def new_request_id() -> bytes:
    """A fresh request id: 32 hex characters, unique across processes and restarts."""
    return b"%s%012x" % (_PREFIX, next(_COUNTER) & 0xFFFFFFFFFFFF)


def sane_request_id(value: bytes | None) -> bytes:
    """``value`` if it is a sane request id, else a fresh one (log injection stays out)."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return new_request_id()


def _drop_color_message(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # uvicorn passes an ANSI-coloured copy of its message as an extra field.
    event.pop("color_message", None)
    return event


class _OncePerProcess(logging.Filter):
    """Let uvicorn's per-server lines through once: both listeners share a process."""

    _PER_SERVER: Final = ("Started server process", "Shutting down", "Finished server process")

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self._PER_SERVER):
            return True
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


class _MigrationChatter(logging.Filter):
    """Alembic's set-up lines are for debugging; "Running upgrade ..." stays at info."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage().startswith(
            "Running upgrade"
        ) or logging.getLogger().isEnabledFor(logging.DEBUG)


def _renderer(log_format: str) -> Any:
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer()


def configure_logging(
    level: str = "info", log_format: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Send every log record to stderr as JSON lines (or ``console`` text) at ``level``.

    ``auto`` is ``console`` on a terminal and ``json`` otherwise. Safe to call again: the
    root logger's handlers are replaced, not added to.
    """
    chosen = log_format
    if chosen == "auto":
        chosen = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if chosen == "json":
        # Tracebacks as text in one field: still one line, with newlines escaped.
        final.append(structlog.processors.format_exc_info)
    final.append(_renderer(chosen))
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from the standard library: their `extra=` fields become keys.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=final,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Database loggers stay at WARNING whatever the level asked for: their INFO is a line
    # per statement (on the hot path), their DEBUG prints parameters (key, refresh-token
    # and password hashes).
    for name in _QUIET_DRIVERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # uvicorn's access log is off (Keyturn writes its own); its other loggers propagate.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    _replace_filter(logging.getLogger("uvicorn.error"), _OncePerProcess())
    _replace_filter(logging.getLogger("alembic.runtime.migration"), _MigrationChatter())


def _replace_filter(logger: logging.Logger, new: logging.Filter) -> None:
    for old in logger.filters[:]:
        if type(old) is type(new):
            logger.removeFilter(old)
    logger.addFilter(new)
