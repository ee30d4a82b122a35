"""modscope's own import graph: no private name imported across modules, and no import circle.

Every module under `modscope/` is parsed with `ast`, and every import in it counts: at the top,
inside a function, and under `if TYPE_CHECKING:` (a circle there is still a circle to a reader,
and to a type checker).

What counts as an edge from module A to module B (both inside modscope):
- `import modscope.x.y` in A: an edge to `modscope.x.y`.
- `from modscope.x import name` in A: an edge to `modscope.x.name` when that is a module
  (`from modscope.core import hooks`), else to `modscope.x` (a name defined there). Relative
  imports are resolved against A's package first.

The rule for packages: importing `modscope.x.y` runs `modscope/x/__init__.py` first, so it is an
edge to `modscope.x` too, unless `modscope.x` is a package of A itself: A's own packages are in
`sys.modules` before A runs (Python puts a package there before its `__init__` runs). So a
package's `__init__` importing its own submodules (`modscope.x -> modscope.x.y`) is not a circle
by itself, nor is a submodule importing its siblings; it is one only when a submodule, or what
it imports, names the package (`from modscope.x import Thing` where `Thing` is defined or
re-exported in the `__init__`, or `import modscope.x`): then the `__init__` waits on a module that
needs the `__init__` finished.

A private name is one with a single leading underscore (`_fire`); dunders (`__version__`) are not
private. `from modscope.x import _name` in another module is refused; what a shared helper needs is
a public name in the module its users import.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modscope"


def module_files() -> dict[str, Path]:
    """Every module of modscope by its dotted name (a package by its own, for its `__init__`)."""
    files: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


MODULES = module_files()


def is_package(name: str) -> bool:
    """Whether the dotted module name is a package (its file an `__init__.py`)."""
    return MODULES[name].name == "__init__.py"


def is_private(name: str) -> bool:
    """One leading underscore and not a dunder."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def absolute(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (a relative one resolved for the importer)."""
    if not node.level:
        return node.module or ""
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports(importer: str) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported, name imported from it or None) for every import in the module."""
    tree = ast.parse(MODULES[importer].read_text(encoding="utf-8"), str(MODULES[importer]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = absolute(importer, node)
            for alias in node.names:
                yield node.lineno, source, alias.name


def packages_of(name: str) -> set[str]:
    """The packages a module is in (itself too, for a package's `__init__`)."""
    package = name if is_package(name) else name.rpartition(".")[0]
    parts = package.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def edges() -> dict[str, dict[str, int]]:
    """Module -> {module it imports within modscope: the first line that imports it}, with the
    packages whose `__init__` an import runs (the rule for packages in this file's docstring)."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for importer in MODULES:
        own = packages_of(importer)
        for line, source, name in imports(importer):
            target = source
            if name is not None and f"{source}.{name}" in MODULES:
                target = f"{source}.{name}"
            if target not in MODULES:
                continue
            parts = target.split(".")
            runs = [".".join(parts[:i]) for i in range(1, len(parts))]
            for module in [*runs, target]:
                if module not in own and module != importer:
                    graph[importer].setdefault(module, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One circle as a path that ends where it starts, or None; a depth-first search."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                found = visit(target)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_modscope() -> None:
    graph = edges()
    assert "modscope.core.hooks.manager" in graph
    assert graph["modscope.cli"], "modscope.cli imports modscope modules"


def test_no_private_name_is_imported_across_modules() -> None:
    found = [
        f"{MODULES[importer].relative_to(ROOT)}:{line}: from {source} import {name}"
        for importer in MODULES
        for line, source, name in imports(importer)
        if name is not None
        and is_private(name)
        and (source == "modscope" or source.startswith("modscope."))
    ]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_no_import_circle() -> None:
    graph = edges()
    cycle = find_cycle(graph)
    if cycle:
        steps = [
            f"{source} -> {target} ({MODULES[source].relative_to(ROOT)}:{graph[source][target]})"
            for source, target in itertools.pairwise(cycle)
        ]
        raise AssertionError("import circle: " + " -> ".join(cycle) + "\n" + "\n".join(steps))


def test_a_package_importing_its_own_submodules_is_no_circle() -> None:
    graph = edges()
    assert "modscope.core.breaks.armed" in graph["modscope.core.breaks"]
    assert "modscope.core.breaks" not in graph["modscope.core.breaks.armed"]
    # From outside the package, importing a submodule runs the package's __init__ first.
    assert "modscope.core.breaks" in graph["modscope.core.session"]


def test_a_circle_is_reported_as_a_path() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None
