"""No module over 600 lines, no class over 300, no function over 60 (issue 16).

Past these sizes a file or a class is a place where everything collects; split it along
its seams (docs/architecture.md says where each kind of code goes). The source of
``src/keyturn`` is read with `ast`, migrations included, so nothing is imported to check it.
A size counts every line from ``def``/``class`` to the last line of the body, docstring
included, decorators excluded.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def _source_root() -> Path:
    spec = importlib.util.find_spec("keyturn")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations)))


ROOT = _source_root()
SOURCES = {
    path.relative_to(ROOT.parent).as_posix(): path.read_text(encoding="utf-8")
    for path in sorted(ROOT.rglob("*.py"))
}


def _definitions(source: str) -> Iterator[tuple[str, str, int, int]]:
    """Every class and function in ``source``: (kind, qualified name, first line, size)."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                name = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                yield kind, name, child.lineno, child.end_lineno - child.lineno + 1
                yield from walk(child, f"{name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source), "")


def oversized(sources: dict[str, str]) -> list[str]:
    """One line per module, class or function over its limit, naming it and its size."""
    found = []
    limits = {"class": MAX_CLASS_LINES, "function": MAX_FUNCTION_LINES}
    for path, source in sources.items():
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path}: module has {lines} lines (limit {MAX_MODULE_LINES})")
        for kind, name, first, size in _definitions(source):
            if size > limits[kind]:
                found.append(
                    f"{path}:{first}: {kind} {name} has {size} lines (limit {limits[kind]})"
                )
    return found


def test_the_sources_are_read() -> None:
    assert "keyturn/config/settings.py" in SOURCES
    assert any("/migrations/versions/" in path for path in SOURCES)


def test_nothing_is_over_its_size_limit() -> None:
    assert oversized(SOURCES) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            "\n" * (MAX_MODULE_LINES + 1),
            f"big.py: module has {MAX_MODULE_LINES + 1} lines (limit {MAX_MODULE_LINES})",
            id="module",
        ),
        pytest.param(
            "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES,
            f"big.py:1: class Big has {MAX_CLASS_LINES + 1} lines (limit {MAX_CLASS_LINES})",
            id="class",
        ),
        pytest.param(
            "class Box:\n    async def big(self):\n" + "        pass\n" * MAX_FUNCTION_LINES,
            f"big.py:2: function Box.big has {MAX_FUNCTION_LINES + 1} lines "
            f"(limit {MAX_FUNCTION_LINES})",
            id="method",
        ),
        pytest.param(
            "def outer():\n    def big():\n" + "        pass\n" * MAX_FUNCTION_LINES,
            f"big.py:1: function outer has {MAX_FUNCTION_LINES + 2} lines "
            f"(limit {MAX_FUNCTION_LINES})",
            id="function",
        ),
    ],
)
def test_an_oversized_definition_is_named_with_its_size(source: str, expected: str) -> None:
    """Control: the check finds each kind of offender and says where and how big."""
    assert expected in oversized({"big.py": source})


def test_sizes_at_the_limits_pass() -> None:
    """Control: exactly at each limit is allowed."""
    module = "def f():\n" + "    pass\n" * (MAX_FUNCTION_LINES - 1)
    module += "\nclass C:\n" + "    x = 1\n" * (MAX_CLASS_LINES - 1)
    module += "\n" * (MAX_MODULE_LINES - len(module.splitlines()))

    assert oversized({"ok.py": module}) == []
