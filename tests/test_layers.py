"""Imports point one way: core <- service <- runtime <- server/cli (docs/architecture.md).

Every module of ``src/keyturn`` belongs to a layer, and each layer names what it may
import. The edges (the clients of the library: ``client``, ``verify``, ``integrations``,
``compat``) use only the public library, never the server, the service or storage.
Imports inside functions and under ``TYPE_CHECKING`` count: a lazy import is still a
dependency. The source is read with `ast`, so nothing is imported to check it.

`EXCEPTIONS` lists the edges that break a rule today, each with its reason; a step that
removes one deletes its entry (`test_every_exception_is_still_needed` insists).
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

#: Where the library's public surface lives: what an edge may build on.
_PUBLIC = ("keyturn", "keyturn.__about__", "keyturn.core", "keyturn.errors")
#: Framework-free edge rules and bodies (issue 16 adds them): the edges may use them.
_EDGE_RULES = ("keyturn.rfc6750", "keyturn.rfc9449", "keyturn.schemas")
#: What the composition root and the layers above it build on.
_BELOW_RUNTIME = (*_PUBLIC, *_EDGE_RULES, "keyturn.observer", "keyturn.config", "keyturn.service")

#: Each layer (a module or package prefix) and the prefixes it may import besides itself.
LAYERS: Mapping[str, tuple[str, ...]] = {
    # The curated __init__ re-exports the verifiers, clients and Settings (lazily).
    "keyturn": (*_PUBLIC, "keyturn.client", "keyturn.verify", "keyturn.config"),
    "keyturn.__about__": (),
    "keyturn.__main__": ("keyturn.cli",),
    "keyturn.errors": (),
    "keyturn.core": ("keyturn.errors",),
    # InMemoryStorage lives in storage.memory, which knows only storage.base and the core.
    "keyturn.testing": (*_PUBLIC, "keyturn.storage.base", "keyturn.storage.memory"),
    "keyturn.rfc6750": _PUBLIC,
    "keyturn.rfc9449": (*_PUBLIC, "keyturn.rfc6750"),
    "keyturn.schemas": _PUBLIC,
    "keyturn.observer": (),
    # Storage implements the interface in storage.base; it knows no service.
    "keyturn.storage": ("keyturn.core", "keyturn.errors"),
    # The service talks to storage only through the Protocols of storage.base.
    "keyturn.service": (*_PUBLIC, "keyturn.observer", "keyturn.storage.base"),
    "keyturn.config": (*_PUBLIC, "keyturn.service.config"),
    "keyturn.runtime": (*_BELOW_RUNTIME, "keyturn.storage"),
    "keyturn.problems": ("keyturn.errors", "keyturn.runtime.secrets", "keyturn.storage"),
    "keyturn.server": (*_BELOW_RUNTIME, "keyturn.runtime", "keyturn.storage"),
    # The CLI opens a Runtime; of the server it only starts one (`keyturn serve`).
    "keyturn.cli": (
        *_BELOW_RUNTIME,
        "keyturn.runtime",
        "keyturn.storage",
        "keyturn.problems",
        "keyturn.healthcheck",
        "keyturn.importers",
        "keyturn.server.runner",
    ),
    "keyturn.healthcheck": ("keyturn.config",),
    "keyturn.importers": (*_BELOW_RUNTIME, "keyturn.runtime", "keyturn.storage"),
    # The edges: only the public library.
    "keyturn.client": _PUBLIC,
    "keyturn.verify": _PUBLIC,
    "keyturn.compat": _PUBLIC,
    "keyturn.integrations": (*_PUBLIC, "keyturn.verify", "keyturn.rfc6750", "keyturn.rfc9449"),
}

#: (importing module, imported module) edges that break a rule today, with the reason.
EXCEPTIONS: Mapping[tuple[str, str], str] = {
    ("keyturn.config.storage", "keyturn.storage.schema"): (
        "DEFAULT_SCHEMA and the schema-name rule for KEYTURN_DATABASE_SCHEMA"
    ),
    ("keyturn.healthcheck", "keyturn.cli._runtime"): "the CLI's one wording of settings errors",
    ("keyturn.importers.cli", "keyturn.cli._output"): "the CLI's one-line errors",
    ("keyturn.importers.cli", "keyturn.cli._runtime"): "the CLI's settings and actor name",
}


def _source_root() -> Path:
    spec = importlib.util.find_spec("keyturn")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations)))


def _module_name(path: Path, root: Path) -> str:
    parts = ("keyturn", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str) -> set[str]:
    """Every ``keyturn`` module a source file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "keyturn" or name.startswith("keyturn.")}


def _within(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or below it; "keyturn" stands for the package's __init__ only."""
    return name == prefix or (prefix != "keyturn" and name.startswith(f"{prefix}."))


def layer_of(module: str) -> str | None:
    """The most specific layer ``module`` belongs to, or None."""
    return max((layer for layer in LAYERS if _within(module, layer)), key=len, default=None)


def violations(graph: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """The edges of ``graph`` that no layer rule allows (exceptions included)."""
    found = []
    for module, targets in graph.items():
        layer = layer_of(module)
        assert layer is not None, module
        allowed = (layer, *LAYERS[layer])
        found.extend(
            (module, target)
            for target in sorted(targets)
            if not any(_within(target, ok) for ok in allowed)
        )
    return found


def _graph() -> dict[str, set[str]]:
    root = _source_root()
    return {
        _module_name(path, root): imported_modules(path.read_text(encoding="utf-8"))
        for path in sorted(root.rglob("*.py"))
        if "migrations" not in path.relative_to(root).parts
    }


GRAPH = _graph()


def test_the_graph_is_read() -> None:
    assert "keyturn.runtime" in GRAPH["keyturn.server.state"]
    assert "keyturn.storage.base" in GRAPH["keyturn.service"]


def test_every_module_belongs_to_a_layer() -> None:
    assert [module for module in GRAPH if layer_of(module) is None] == []


def test_imports_point_down_the_layers() -> None:
    assert [edge for edge in violations(GRAPH) if edge not in EXCEPTIONS] == []


def test_every_exception_is_still_needed() -> None:
    """An allowed exception that no longer occurs is deleted from `EXCEPTIONS`."""
    assert [edge for edge in EXCEPTIONS if edge not in violations(GRAPH)] == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        pytest.param("keyturn.cli", "keyturn.server.state", id="cli-opens-the-server-state"),
        pytest.param("keyturn.config", "keyturn.storage.engine", id="config-imports-sql"),
        pytest.param("keyturn.core.tokens", "keyturn.service", id="core-imports-up"),
        pytest.param("keyturn.service.tokens", "keyturn.storage.sql", id="service-uses-sql"),
        pytest.param("keyturn.integrations.starlette", "keyturn.server", id="edge-uses-server"),
        pytest.param("keyturn.client._tokens", "keyturn.config", id="client-reads-settings"),
    ],
)
def test_a_forbidden_import_is_detected(module: str, target: str) -> None:
    """Control: the rules do catch the imports the architecture forbids."""
    source = f"def lazily() -> None:\n    import {target}\n"

    assert violations({module: imported_modules(source)}) == [(module, target)]
