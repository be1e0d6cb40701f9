"""YAML parsing that keeps the source position of every key and value.

`parse_yaml` returns a tree of `Node`s: a mapping keeps its entries in order (duplicates
included, so the loader can report them), and every node knows its file, line and column, so a
problem found long after parsing still points at the text that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gridgen.errors import Location, Problem, SpecError


@dataclass
class Node:
    kind: str  # "map", "seq" or "scalar"
    location: Location
    value: Any = None  # scalars: the Python value YAML resolves (str, int, float, bool, None)
    entries: list[tuple[str, Location, Node]] = field(default_factory=list)  # maps: (key, key location, value)
    items: list[Node] = field(default_factory=list)  # sequences

    def get(self, key: str) -> Node | None:
        """The last entry whose key equals `key` exactly."""
        found = None
        for name, _, node in self.entries:
            if name == key:
                found = node
        return found

    def plain(self) -> Any:
        """The node as ordinary Python data, positions dropped."""
        if self.kind == "map":
            return {key: node.plain() for key, _, node in self.entries}
        if self.kind == "seq":
            return [item.plain() for item in self.items]
        return self.value


def _location(path: Path, mark: yaml.Mark | None) -> Location:
    if mark is None:
        return Location(path)
    return Location(path, mark.line + 1, mark.column + 1)


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: Path) -> Node:
    where = _location(path, node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        result = Node("map", where)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_text = "" if key is None else str(key)
            result.entries.append((key_text, _location(path, key_node.start_mark),
                                   _convert(loader, value_node, path)))
        return result
    if isinstance(node, yaml.SequenceNode):
        return Node("seq", where, items=[_convert(loader, item, path) for item in node.value])
    return Node("scalar", where, value=loader.construct_object(node, deep=True))


def parse_yaml(text: str, path: Path) -> Node:
    """Parse one YAML document; syntax errors raise SpecError located at the offending character."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Node("map", Location(path, 1, 1))
        return _convert(loader, root, path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        detail = " ".join(part for part in (err.context, err.problem) if part)
        raise SpecError([Problem(f"YAML syntax error: {detail}; check indentation, colons and quotes",
                                 _location(path, mark))]) from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(f"YAML error: {err}", Location(path))]) from None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Node:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError([Problem("the file is not UTF-8 text; save it as UTF-8", Location(path))]) from None
    except OSError as err:
        raise SpecError([Problem(f"cannot read the file: {err.strerror}", Location(path))]) from None
    return parse_yaml(text, path)
