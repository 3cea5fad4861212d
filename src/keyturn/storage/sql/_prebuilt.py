"""Statements rendered once, outside SQLAlchemy's execution layer, for the fast paths.

`PrebuiltStatement` compiles a statement for a dialect with a positional paramstyle and
keeps its SQL text and, in placeholder order, each parameter's name, bind processor and
literal default (``LIMIT 1``). `keyturn.storage.sql.hot_postgres` (asyncpg) and
`keyturn.storage.sql.hot_sqlite` (sqlite3) send that text to the driver themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["PrebuiltStatement"]


class PrebuiltStatement:
    """A statement's SQL for one dialect, and how to turn named parameters into its own."""

    __slots__ = ("_binds", "sql")

    def __init__(
        self, statement: sa.ClauseElement, dialect: Dialect, *, dialect_types: bool
    ) -> None:
        """Render ``statement``; ``dialect_types`` processes binds as the dialect's own types.

        SQLAlchemy's execution uses the dialect's implementation of each type (SQLite keeps
        datetimes and JSON as text); asyncpg's codecs take the generic values.
        """
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - DML and SELECT are
            raise TypeError(f"cannot render {type(statement).__name__} for {dialect.name}")
        names = compiled.positiontup
        if names is None:  # pragma: no cover - both drivers' paramstyles are positional
            raise ValueError("the dialect's paramstyle is not positional")
        defaults = compiled.params  # values of literal binds, such as LIMIT 1
        self.sql: Final = compiled.string
        self._binds: Final = tuple(
            (name, _bind_type(compiled, name, dialect, dialect_types), defaults.get(name))
            for name in names
        )

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``params``, through the types' bind processors.

        A value its type refuses (a naive datetime, ``detail`` that is not JSON) raises
        `sqlalchemy.exc.StatementError`, as on the SQLAlchemy path, before anything is sent.
        """
        arguments = []
        try:
            for name, process, default in self._binds:
                value = params.get(name, default)
                arguments.append(value if process is None else process(value))
        except Exception as exc:
            reason = f"({type(exc).__module__}.{type(exc).__qualname__}) {exc}"
            raise sa.exc.StatementError(reason, self.sql, None, exc, hide_parameters=True) from exc
        return arguments


def _bind_type(compiled: SQLCompiler, name: str, dialect: Dialect, dialect_types: bool) -> Any:
    bind_type = compiled.binds[name].type
    if dialect_types:
        bind_type = bind_type.dialect_impl(dialect)
    return bind_type.bind_processor(dialect)
