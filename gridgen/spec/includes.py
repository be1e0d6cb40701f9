"""Resolves a spec's `include:` files (relative to the including file, else among the bundled `axes/`) and
collects their axes and variables, refusing a file that includes itself.
"""

from __future__ import annotations

from pathlib import Path

from gridgen.errors import Location, SpecError
from gridgen.resources import data_dir
from gridgen.spec.reader import SpecReader
from gridgen.spec.yamlnodes import Node, read_yaml


def _include_paths(reader: SpecReader, node: Node) -> list[tuple[str, Location]]:
    nodes = node.items if node.kind == "seq" else [node]
    # Paths as written: a variable named like a letter of the path must not rewrite it.
    return [(reader.text(item, variables=False), item.location) for item in nodes]


def _resolve_include(reader: SpecReader, name: str, where: Location, base: Path) -> Path | None:
    candidates = [(base / name)]
    bundled = data_dir("axes")
    relative = Path(name)
    if relative.parts and relative.parts[0] == "axes":
        relative = Path(*relative.parts[1:])
    candidates.append(bundled / relative)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    reader.error(f"include '{name}' not found (looked for {looked}); check the path, which is "
                 "relative to this spec's folder", where)
    return None


def included_axes(reader: SpecReader, root: Node, base: Path,
                  seen: tuple[Path, ...]) -> list[tuple[str, Location, Node]]:
    """The axis entries of every file `root` includes, in order, nested includes first; their variables are
    read without overriding the including file's."""
    entries: list[tuple[str, Location, Node]] = []
    fields = reader.lowered(root)
    if "include" not in fields:
        return entries
    for name, where in _include_paths(reader, fields["include"][1]):
        path = _resolve_include(reader, name, where, base)
        if path is None:
            continue
        if path.resolve() in seen:
            reader.error(f"include '{name}' includes itself (through {' -> '.join(p.name for p in seen)})", where)
            continue
        try:
            included = read_yaml(path)
        except SpecError as err:
            reader.problems.extend(err.problems)
            continue
        if reader.mapping(included, f"included file {path.name}") is None:
            continue
        entries.extend(included_axes(reader, included, path.parent, (*seen, path.resolve())))
        inc_fields = reader.lowered(included)
        if "variables" in inc_fields:
            reader.read_variables(inc_fields["variables"][1], override=False)
        axes = inc_fields.get("axes")
        if axes is None or reader.mapping(axes[1], f"axes of {path.name}") is None:
            if axes is None:
                reader.error("included file has no `axes:` block", Location(path, 1, 1))
            continue
        entries.extend(axes[1].entries)
    return entries
