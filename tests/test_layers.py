"""The package's layering, read from the source: no import cycle at import time, and no layer that reaches
up (executors and backends never import the runner; the backend interface imports neither the plan nor
anything that runs a grid)."""

from __future__ import annotations

import ast
from pathlib import Path

import gridgen

PACKAGE = Path(gridgen.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], top_level_only: bool) -> set[str]:
    """The gridgen modules `path` imports; with `top_level_only`, those run when it is imported (not inside
    functions, not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    statements = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:
        statements = [s for s in statements if not (isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test))]
        statements += [inner for s in list(statements) if isinstance(s, ast.If | ast.Try) for inner in ast.walk(s)]
    found = set()
    for node in statements:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= submodules or ({node.module} & modules)
    return found


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths), top_level_only) - {name} for name, path in paths.items()}


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_module_imports_itself_back_when_imported():
    graph = _graph(top_level_only=True)
    assert [name for name in graph if name in _reaches(graph, name)] == []


def test_no_layer_reaches_up():
    graph = _graph(top_level_only=False)  # imports inside functions count here
    for name, imported in graph.items():
        if name.startswith(("gridgen.executors", "gridgen.backends")):
            assert "gridgen.runner" not in imported, name
    interface = _reaches(_graph(top_level_only=True), "gridgen.backends.base")
    assert not interface & {"gridgen.plan", "gridgen.runner", "gridgen.store"}, interface
    assert not any(name.startswith(("gridgen.executors", "gridgen.backends.sd")) for name in interface), interface
