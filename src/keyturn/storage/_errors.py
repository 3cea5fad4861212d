"""Driver and pool failures, turned into Keyturn's errors in one place."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc

from keyturn.errors import ConflictError, StorageUnavailableError

__all__ = ["driver_error", "storage_error", "translate_errors"]

_UNAVAILABLE = (
    sa_exc.OperationalError,  # refused, dropped, locked, read-only, disk full, cancelled
    sa_exc.InterfaceError,  # connection closed under us
    sa_exc.TimeoutError,  # no free connection in the pool within pool_timeout
    OSError,  # includes TimeoutError: connecting failed below the driver
)
# PostgreSQL SQLSTATE classes and codes that mean "try again later", whatever exception
# class the driver maps them to: connection (08), resources (53), operator intervention
# (57: statement timeout, shutdown), system (58), read-only (25006), and the transient
# transaction failures (40001 serialization, 40P01 deadlock, 55P03 lock not available).
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_RETRYABLE_SQLSTATES = ("25006", "40001", "40P01", "55P03")


@functools.cache
def _driver_connect_errors() -> tuple[type[BaseException], ...]:
    """asyncpg's own errors, which escape untranslated while a connection is opened."""
    try:
        import asyncpg  # noqa: PLC0415 -- optional driver, imported only if installed
    except ImportError:  # pragma: no cover - asyncpg is the ``postgres`` extra
        return ()
    return (asyncpg.PostgresError, asyncpg.InterfaceError)


def _is_retryable(exc: sa_exc.DBAPIError) -> bool:
    return _is_retryable_sqlstate(getattr(exc.orig, "sqlstate", None))


def _is_retryable_sqlstate(sqlstate: object) -> bool:
    if not isinstance(sqlstate, str):
        return False
    return sqlstate in _RETRYABLE_SQLSTATES or sqlstate[:2] in _RETRYABLE_SQLSTATE_CLASSES


def storage_error(exc: BaseException, doing: str) -> Exception | None:
    """The Keyturn error to raise (``from exc``) for what went wrong ``doing``, if any.

    `StorageUnavailableError` or `ConflictError`; None for anything else (a programming
    error), which the caller re-raises unchanged. Messages carry no parameters or secrets.
    """
    if isinstance(exc, sa_exc.IntegrityError):
        return ConflictError(f"cannot {doing}: it clashes with a stored record")
    reason = _unavailable_reason(exc)
    return None if reason is None else StorageUnavailableError(f"cannot {doing}: {reason}")


def driver_error(exc: BaseException, doing: str) -> Exception | None:
    """Like `storage_error`, for asyncpg's own exceptions from a statement it ran.

    The PostgreSQL fast path (`keyturn.storage.sql.hot_postgres`) runs statements on the pooled
    asyncpg connection directly, so its errors reach us unwrapped; they map as SQLAlchemy
    would have wrapped them: a constraint violation (SQLSTATE class 23) is a conflict, a
    retryable SQLSTATE, a lost connection or a timeout means unavailable.
    """
    import asyncpg  # noqa: PLC0415 -- optional driver; only its fast path calls this

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return ConflictError(f"cannot {doing}: it clashes with a stored record")
    # InternalClientError: the protocol state broke mid-operation (a connection dying
    # under a statement); like a lost connection, the caller may retry.
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError):
        return StorageUnavailableError(f"cannot {doing}: the database is unavailable")
    if isinstance(exc, asyncpg.PostgresError) and _is_retryable_sqlstate(exc.sqlstate):
        return StorageUnavailableError(f"cannot {doing}: the database is unavailable")
    return None


def _unavailable_reason(exc: BaseException) -> str | None:
    if isinstance(exc, _UNAVAILABLE):
        return "the database is unavailable"
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return "the connection was lost"
        return "the database is unavailable" if _is_retryable(exc) else None
    if isinstance(exc, _driver_connect_errors()):
        return "the database refused the connection"
    return None


@asynccontextmanager
async def translate_errors(doing: str) -> AsyncIterator[None]:
    """Raise `StorageUnavailableError` or `ConflictError` for what went wrong ``doing``.

    The driver's exception stays the cause; anything else passes through unchanged.
    """
    try:
        yield
    except Exception as exc:
        error = storage_error(exc, doing)
        if error is None:
            raise
        raise error from exc
