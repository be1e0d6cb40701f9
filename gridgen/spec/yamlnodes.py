"""YAML parsing that keeps the source position of every key and value, and refuses hostile input.

`parse_yaml` returns a tree of `Node`s: a mapping keeps its entries in order (duplicates
included, so the loader can report them), and every node knows its file, line and column, so a
problem found long after parsing still points at the text that caused it.

A spec may come from anyone (the viewer accepts them from the browser), so reading one costs time
and memory linear in its size and every refusal is a located `SpecError`:
- `read_yaml` opens regular files only (never a FIFO or a device) and reads at most
  `MAX_SPEC_BYTES`; the text must be UTF-8 (or carry a UTF-16 byte-order mark) without control
  characters;
- nesting deeper than `MAX_DEPTH`, more than `MAX_NODES` nodes, an alias that contains itself, and
  aliases that expand to more than `MAX_NODES` nodes (an "alias bomb") are refused;
- scalars follow the YAML 1.2 core schema (`1:30` is text, not 90; `yes` is text, not true; only
  decimal numbers are numbers), and an explicit tag is either one of the core types, whose text
  must then fit it, or refused.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gridgen.errors import Location, Problem, SpecError
from gridgen.spec.limits import OverCap

MAX_SPEC_BYTES = 512 * 1024
MAX_DEPTH = 64
MAX_NODES = 20_000  # values, keys, lists and mappings of one file, aliases expanded: a big spec has a few thousand
_LARGEST_NUMBER = 2**64

_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {".inf": math.inf, ".Inf": math.inf, ".INF": math.inf, "+.inf": math.inf, "+.Inf": math.inf,
                   "+.INF": math.inf, "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
                   ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
# Characters YAML forbids in a stream (C0 controls but tab and newlines, DEL, C1 controls but NEL, surrogates).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _fail(message: str, where: Location, over_cap: bool = False) -> SpecError:
    return SpecError([(OverCap if over_cap else Problem)(message, where)])


def _position(text: str, index: int, path: Path) -> Location:
    line = text.count("\n", 0, index) + 1
    return Location(path, line, index - (text.rfind("\n", 0, index) + 1) + 1)


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe reader with core-schema scalars and a nesting limit; nodes only, no Python objects."""

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.path = path
        self.depth = 0
        self.composed = 0

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            for tag, pattern in (("null", _NULL), ("bool", _BOOL), ("int", _INT), ("float", _FLOAT)):
                if pattern.fullmatch(value):
                    return _TAG + tag
            if value in _SPECIAL_FLOATS:
                return _TAG + "float"
            if value == "<<":
                return _TAG + "merge"
            return _TAG + "str"
        return super().resolve(kind, value, implicit)

    def compose_node(self, parent, index):
        self.depth += 1
        self.composed += 1
        try:
            if self.composed > MAX_NODES:
                raise _fail(f"the YAML holds more than {MAX_NODES:,} values, lists and mappings, more than any grid "
                            "spec needs; write ranges like 1-100 instead of long lists",
                            _location(self.path, self.peek_event().start_mark), over_cap=True)
            if self.depth > MAX_DEPTH:
                raise _fail(f"the YAML nests more than {MAX_DEPTH} levels deep; a grid spec needs a few",
                            _location(self.path, self.peek_event().start_mark), over_cap=True)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    """Turns PyYAML's node graph into `Node`s, counting every node made so aliases cannot multiply work."""

    def __init__(self, path: Path):
        self.path = path
        self.made = 0
        self.open: set[int] = set()  # ids of the nodes being converted: an alias to one of them is a cycle

    def convert(self, node: yaml.Node) -> Node:
        where = _location(self.path, node.start_mark)
        self.made += 1
        if self.made > MAX_NODES:
            raise _fail(f"the aliases (*name) here expand to more than {MAX_NODES:,} values; "
                        "write the values out or use fewer aliases", where, over_cap=True)
        if id(node) in self.open or len(self.open) >= MAX_DEPTH:
            raise _fail("an alias (*name) here refers to a node that contains it, or aliases nest more than "
                        f"{MAX_DEPTH} levels deep; an alias must point at a finished node", where)
        if isinstance(node, yaml.ScalarNode):
            return Node("scalar", where, value=self.scalar(node))
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                self.check_tag(node, "seq", "a list")
                return Node("seq", where, items=[self.convert(item) for item in node.value])
            self.check_tag(node, "map", "a mapping")
            return Node("map", where, entries=self.entries(node))
        finally:
            self.open.discard(id(node))

    def entries(self, node: yaml.MappingNode) -> list[tuple[str, Location, Node]]:
        merged: list[tuple[str, Location, Node]] = []
        own: list[tuple[str, Location, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merged[:0] = self.merge_sources(value_node)
                continue
            key_where = _location(self.path, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _fail("a key must be plain text, not a list or mapping", key_where)
            key = self.scalar(key_node)
            own.append(("" if key is None else str(key), key_where, self.convert(value_node)))
        return merged + own  # the mapping's own keys come last, so they win over merged ones

    def merge_sources(self, node: yaml.Node) -> list[tuple[str, Location, Node]]:
        """`<<: *a` or `<<: [*a, *b]`: the entries merged in, earlier sources winning over later ones."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        entries: list[tuple[str, Location, Node]] = []
        for source in sources:
            converted = self.convert(source)
            if converted.kind != "map":
                raise _fail("`<<:` merges mappings only; point it at a mapping (&name) or a list of them",
                            converted.location)
            entries[:0] = converted.entries
        return entries

    def check_tag(self, node: yaml.Node, kind: str, what: str) -> None:
        if node.tag != _TAG + kind:
            raise _fail(f"the tag {node.tag!r} is not supported on {what}; remove it",
                        _location(self.path, node.start_mark))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        text, tag, where = node.value, node.tag, _location(self.path, node.start_mark)
        if tag == _TAG + "str":
            if _SURROGATE.search(text):
                raise _fail("the text holds a lone surrogate escape (\\ud800-\\udfff), which is not a character; "
                            "write the character itself or a pair of escapes", where)
            return text
        if tag == _TAG + "null" and _NULL.fullmatch(text):
            return None
        if tag == _TAG + "bool" and _BOOL.fullmatch(text):
            return text.lower() == "true"
        if tag == _TAG + "int" and _INT.fullmatch(text):
            number = int(text) if len(text) < 30 else _LARGEST_NUMBER
            if abs(number) >= _LARGEST_NUMBER:
                raise _fail(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large; "
                            "numbers in a grid spec stay below 2^64", where)
            return number
        if tag == _TAG + "float" and (_FLOAT.fullmatch(text) or text in _SPECIAL_FLOATS):
            number = _SPECIAL_FLOATS.get(text) or float(text)
            if math.isinf(number) and text not in _SPECIAL_FLOATS:
                raise _fail(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large for a "
                            "floating-point value", where)
            return number
        known = {_TAG + name: name for name in ("null", "bool", "int", "float")}
        if tag in known:
            raise _fail(f"!!{known[tag]} {text[:40]!r}: the text is not a YAML 1.2 {known[tag]}; "
                        "fix the value or remove the tag", where)
        raise _fail(f"the tag {tag!r} is not supported in a grid spec; remove it (plain text, numbers, "
                    "true/false, lists and mappings are)", where)


def parse_yaml(text: str, path: Path) -> Node:
    """Parse one YAML document; every problem raises SpecError located at the offending character."""
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        code = ord(bad.group())
        hint = ("; the file looks like UTF-16 without a byte-order mark: save it as UTF-8"
                if code == 0 and text.count("\x00") * 3 > len(text) else "; remove it")
        raise _fail(f"the file holds the control character U+{code:04X}, which YAML does not allow{hint}",
                    _position(text, bad.start(), path))
    loader = None
    try:
        loader = _SpecLoader(text, path)
        root = loader.get_single_node()
        if root is None:
            return Node("map", Location(path, 1, 1))
        return _Builder(path).convert(root)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        detail = " ".join(part for part in (err.context, err.problem) if part)
        raise _fail(f"YAML syntax error: {detail}; check indentation, colons and quotes",
                    _location(path, mark)) from None
    except yaml.reader.ReaderError as err:
        raise _fail(f"YAML error: {err.reason}", _position(text, err.position, path)) from None
    except yaml.YAMLError as err:
        raise _fail(f"YAML error: {err}", Location(path, 1, 1)) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_spec_bytes(path: Path, limit: int = MAX_SPEC_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a located SpecError."""
    where = Location(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below then refuses it.
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise _fail(f"cannot read the file: {err.strerror}", where) from None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise _fail("not a regular file (a folder, device, FIFO or socket); give the path of a YAML file",
                        where)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(handle, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise _fail(f"cannot read the file: {err.strerror}", where) from None
    finally:
        os.close(handle)
    if size > limit:
        raise _fail(f"the file is larger than {limit // 1024} KiB, more than any grid spec needs; "
                    "split it with `include:`", where, over_cap=True)
    return b"".join(chunks)


def decode_spec(data: bytes, path: Path) -> str:
    """UTF-8 text (a UTF-8 or UTF-16 byte-order mark is honoured); other bytes are a located SpecError."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise _fail("the file is not UTF-8 text; save it as UTF-8",
                    Location(path, line, err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1)) from None


def read_yaml(path: Path) -> Node:
    path = Path(path)
    return parse_yaml(decode_spec(read_spec_bytes(path), path), path)
