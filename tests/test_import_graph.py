"""The package's import graph: no module imports one that imports it back, directly or through others, and
validating a grid loads no torch, diffusers or transformers (only rendering needs them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gridgen

ROOT = Path(gridgen.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the gridgen modules it imports when it is itself imported (imports inside functions and under
    TYPE_CHECKING run later, or never, so they cannot close a circle at import time)."""
    modules = {module_name(path): path for path in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            found = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule; any other name comes from the module.
                found = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names]
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "gridgen.backends.diffusers_backend" in graph and len(graph) > 100
    assert circles(graph) == []


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def libraries_loaded_by_validate(spec: Path, cwd: Path) -> tuple[int, str, list[str]]:
    """`gridgen validate SPEC` in a fresh interpreter: its exit code, its stderr, and which of torch, diffusers
    and transformers it imported."""
    code = ("import sys\nfrom gridgen.cli import main\n"
            f"code = main(['validate', {str(spec)!r}])\n"
            "print(sorted(name for name in ('torch', 'diffusers', 'transformers') if name in sys.modules))\n"
            "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    return done.returncode, done.stderr, ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_validating_a_grid_loads_no_torch(tmp_path):
    code, err, loaded = libraries_loaded_by_validate(Path(__file__).resolve().parents[1] / "grids" / "demo.yaml",
                                                     tmp_path)
    assert code == 0, err
    assert loaded == []


def test_refusing_a_grid_loads_no_torch(tmp_path):
    """A missing model, a missing input file and bad values are all found from configs and file names alone."""
    spec = tmp_path / "bad.yaml"
    spec.write_text("grid:\n  params:\n    model: no-such-model\n    steps: 0\n    init_image: gone.png\n"
                    "axes:\n  seed: 1, 2\n", encoding="utf-8")
    code, err, loaded = libraries_loaded_by_validate(spec, tmp_path)
    assert code == 2 and "3 problem(s) found" in err, err
    assert loaded == []
