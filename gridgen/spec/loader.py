"""Builds a `GridSpec` from a YAML grid file, collecting every problem with its location.

The format is a superset of the Infinity Grid Generator's: its files load unchanged. Keys are
matched the way that script matches them (case-insensitively, and parameter names also ignore
spaces and underscores). Problems are gathered, not raised one at a time, so a user fixes a file
in one pass; `load_spec` raises `SpecError` holding all of them at the end.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gridgen import params as P
from gridgen.errors import Location, Problem, SpecError
from gridgen.resources import data_dir
from gridgen.spec import limits as L
from gridgen.spec.model import PAGE_DEFAULTS, Axis, AxisValue, GridMeta, GridSpec
from gridgen.spec.values import expand_numbers, split_list
from gridgen.spec.yamlnodes import Node, read_yaml

_GRID_KEYS = {
    "title", "author", "description", "params", "format", "stylesheet", "outpath", "skipinvalid",
    "backend", "modelsdir", *(P.normalize_key(k) for k in PAGE_DEFAULTS),
}
_TOP_KEYS = {"grid", "axes", "variables", "include"}
_NONE_WORDS = {"", "none", "null"}
_SLUG_LIMIT = 48


def slugify(text: Any) -> str:
    """A value or axis id: lower case, every run of other characters an underscore, kept short."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(text).strip().lower()).strip("_") or "_"
    if len(slug) > _SLUG_LIMIT:
        import hashlib

        slug = f"{slug[:_SLUG_LIMIT - 9]}_{hashlib.sha1(str(text).encode()).hexdigest()[:8]}"
    return slug


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "yes", "on", "1")


class _Loader:
    """One load: walks the node tree and fills `problems` and `warnings` as it goes."""

    def __init__(self, path: Path, registry: P.Registry, supported: set[str] | None, strict: bool,
                 limits: L.Limits = L.DEFAULT_LIMITS):
        self.path = path
        self.limits = limits
        self.registry = registry
        self.supported = supported
        self.strict = strict
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.warned_params: set[str] = set()
        self.variables: dict[str, str] = {}

    # -- reporting -------------------------------------------------------------------------------

    def error(self, message: str, where: Location | None) -> None:
        self.problems.append(Problem(message, where))

    def warn(self, message: str, where: Location | None) -> None:
        if self.strict:
            self.error(f"{message} (an error because of --strict)", where)
        else:
            self.warnings.append(Problem(message, where, "warning"))

    # -- small readers ---------------------------------------------------------------------------

    def text(self, node: Node | None, default: str = "") -> str:
        """A scalar as text with variables substituted; maps and lists are reported."""
        if node is None or node.kind == "scalar" and node.value is None:
            return default
        if node.kind != "scalar":
            self.error("expected text here, found a " + ("mapping" if node.kind == "map" else "list"),
                       node.location)
            return default
        return self.substitute(str(node.value) if not isinstance(node.value, bool) else str(node.value).lower(),
                               node.location)

    def substitute(self, text: str, where: Location | None) -> str:
        return L.substitute_variables(text, self.variables, where)

    def raw_value(self, node: Node) -> Any:
        """A param value: scalars keep their YAML type (strings get variables); lists stay lists."""
        if node.kind == "seq":
            return [self.raw_value(item) for item in node.items]
        if node.kind == "map":
            return node.plain()
        return self.substitute(node.value, node.location) if isinstance(node.value, str) else node.value

    def mapping(self, node: Node | None, what: str) -> Node | None:
        if node is None:
            return None
        if node.kind != "map":
            found = "a list" if node.kind == "seq" else f"the value {node.value!r}"
            self.error(f"{what} must be a mapping of `key: value` lines, found {found}", node.location)
            return None
        return node

    @staticmethod
    def lowered(node: Node) -> dict[str, tuple[Location, Node]]:
        """Entries keyed case-insensitively (later duplicates win, as YAML readers do)."""
        return {key.lower().strip(): (where, value) for key, where, value in node.entries}

    # -- params ----------------------------------------------------------------------------------

    def param(self, name: str, raw: Any, where: Location) -> tuple[str, Any] | None:
        """Look up and coerce one param; None when it is reported and should be dropped."""
        param = self.registry.lookup(name)
        if param is None:
            key = P.normalize_key(name)
            if key in P.KNOWN_UNSUPPORTED:
                self.warn_unsupported(P.KNOWN_UNSUPPORTED[key], where)
                return None
            hint = self.registry.suggest(name)
            advice = f"did you mean '{hint}'?" if hint else "run `gridgen params` to list them"
            self.error(f"unknown parameter '{name}'; {advice}", where)
            return None
        if self.supported is not None and param.name not in self.supported:
            self.warn_unsupported(param.name, where)
            return None
        try:
            return param.name, P.coerce(param, raw)
        except ValueError as err:
            self.error(str(err), where)
            return None

    def warn_unsupported(self, name: str, where: Location) -> None:
        if name not in self.warned_params:
            self.warned_params.add(name)
            self.warn(f"parameter '{name}' is not supported by this backend and is ignored", where)

    def params_block(self, node: Node | None, what: str) -> tuple[dict[str, Any], dict[str, Location]]:
        values: dict[str, Any] = {}
        locations: dict[str, Location] = {}
        block = self.mapping(node, what)
        if block is None:
            return values, locations
        for name, _, value_node in block.entries:
            parsed = self.param(name, self.raw_value(value_node), value_node.location)
            if parsed is None:
                continue
            canonical, value = parsed
            if canonical in values and self.registry.params[canonical].accumulate:
                value = values[canonical] + value
            values[canonical] = value
            locations[canonical] = value_node.location
        return values, locations

    # -- grid block --------------------------------------------------------------------------------

    def meta(self, node: Node | None) -> tuple[GridMeta, dict[str, Any], dict[str, Location]]:
        meta = GridMeta(title=self.path.stem)
        block = self.mapping(node, "grid")
        if block is None:
            return meta, {}, {}
        base, base_locations = {}, {}
        for key, where, value in block.entries:
            name = P.normalize_key(key)
            if name == "params":
                base, base_locations = self.params_block(value, "grid params")
            elif name in ("title", "author", "description", "stylesheet", "outpath", "backend"):
                setattr(meta, name, self.text(value))
            elif name == "modelsdir":
                meta.models_dir = self.text(value) or None
            elif name == "format":
                try:
                    meta.format = P.coerce(self.registry.params["format"], self.text(value) or "png")
                except ValueError as err:
                    self.error(str(err), value.location)
            elif name == "skipinvalid":
                meta.skip_invalid = _truthy(self.text(value))
            elif name in {P.normalize_key(k): k for k in PAGE_DEFAULTS}:
                page_key = {P.normalize_key(k): k for k in PAGE_DEFAULTS}[name]
                if page_key.endswith("axis"):
                    axis = self.text(value).strip()
                    meta.page[page_key] = None if axis.lower() in _NONE_WORDS else axis
                else:
                    meta.page[page_key] = _truthy(self.text(value))
            else:
                import difflib

                close = difflib.get_close_matches(name, sorted(_GRID_KEYS), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.warn(f"unknown grid setting '{key}' is ignored{hint}", where)
        return meta, base, base_locations

    # -- axes ------------------------------------------------------------------------------------

    def axis(self, key: str, key_where: Location, node: Node) -> Axis | None:
        problems_before = len(self.problems)
        axis = Axis(id=slugify(key), title=str(key), location=key_where)
        if node.kind in ("scalar", "seq"):
            axis.values = self.list_values(key, node)
        elif node.kind == "map":
            fields = self.lowered(node)
            axis.title = self.text(fields.get("title", (None, None))[1], str(key)) or str(key)
            axis.description = self.text(fields.get("description", (None, None))[1])
            for field_key, (where, _) in fields.items():
                if field_key not in ("title", "description", "default", "values"):
                    self.warn(f"unknown axis setting '{field_key}' in axis '{key}' is ignored "
                              "(expected title, description, default, values)", where)
            values_entry = fields.get("values")
            if values_entry is None:
                self.error(f"axis '{key}' has no `values:`; list its values or write `{key}: a, b, c`",
                           key_where)
                return None
            values_node = values_entry[1]
            if values_node.kind == "map":
                axis.values = [v for v in (self.full_value(k, w, n) for k, w, n in values_node.entries) if v]
            else:
                axis.values = self.list_values(key, values_node)
            default_entry = fields.get("default")
            if default_entry is not None:
                axis.default = self.default(axis, default_entry[1])
        if not axis.values:
            if len(self.problems) > problems_before:
                return None  # its values are already reported; "empty" would only repeat them
            where = node.location if node.kind != "map" else key_where
            self.error(f"axis '{key}' is empty; give it at least one value", where)
            return None
        self.check_duplicate_ids(axis)
        too_many = L.axis_problem(axis, self.limits)
        if too_many is not None:
            self.problems.append(too_many)
            return None
        return axis

    def default(self, axis: Axis, node: Node) -> str | None:
        wanted = self.text(node)
        for value in axis.values:
            if wanted in (value.key, value.id) or slugify(wanted) == value.id:
                return value.id
        names = ", ".join(v.key for v in axis.values)
        self.error(f"default '{wanted}' names no value of axis '{axis.title}'; use one of: {names}",
                   node.location)
        return None

    def check_duplicate_ids(self, axis: Axis) -> None:
        seen: dict[str, AxisValue] = {}
        for value in axis.values:
            if value.id in seen:
                first = seen[value.id]
                self.error(f"value '{value.key}' of axis '{axis.title}' has the same id '{value.id}' as "
                           f"value '{first.key}' (line {first.location.line if first.location else '?'}); "
                           "ids are the keys made lower case with other characters as '_': rename one",
                           value.location)
            else:
                seen[value.id] = value

    def list_values(self, axis_key: str, node: Node) -> list[AxisValue]:
        """`seed: 1, 2, 3` and friends: each item sets the param the axis is named after."""
        param = self.registry.lookup(axis_key)
        if param is None:
            self.param(axis_key, None, node.location)  # reports unknown/unsupported with a did-you-mean
            return []
        if node.kind == "seq":
            items = [str(self.raw_value(item)).strip() for item in node.items]
        else:
            items = split_list(self.text(node))
        too_many = L.values_over_cap(len(items), self.limits, f"axis '{axis_key}'")
        if too_many:
            self.problems.append(L.OverCap(too_many, node.location))
            return []
        if param.kind in ("int", "seed", "float"):
            try:
                raw_items: list[Any] = expand_numbers(items, integer=param.kind != "float", limits=self.limits)
            except ValueError as err:
                found = L.OverCap if isinstance(err, L.CapExceeded) else Problem
                self.problems.append(found(f"axis '{axis_key}': {err}", node.location))
                return []
        else:
            raw_items = items
        values = []
        for raw in raw_items:
            parsed = self.param(axis_key, raw, node.location)
            if parsed is None:
                continue
            name, value = parsed
            title = _title_of(raw)
            values.append(AxisValue(id=slugify(title), key=title, title=title, params={name: value},
                                    location=node.location, param_locations={name: node.location}))
        return values

    def full_value(self, key: str, key_where: Location, node: Node) -> AxisValue | None:
        value = AxisValue(id=slugify(key), key=str(key), title=str(key), location=key_where)
        if node.kind == "scalar":
            text = self.text(node)
            if "=" not in text:
                self.error(f"value '{key}': expected `param=value` (like `15: steps=15`) or a mapping "
                           f"with title and params, found {text!r}", node.location)
                return None
            name, raw = (part.strip() for part in text.split("=", 1))
            parsed = self.param(name, raw, node.location)
            if parsed is not None:
                value.params = {parsed[0]: parsed[1]}
                value.param_locations = {parsed[0]: node.location}
            value.title = raw
            return value
        if node.kind != "map":
            self.error(f"value '{key}': expected `param=value` or a mapping with title and params, "
                       "found a list", node.location)
            return None
        fields = self.lowered(node)
        for field_key, (where, _) in fields.items():
            if field_key not in ("title", "description", "params", "skip", "show"):
                self.warn(f"unknown value setting '{field_key}' in value '{key}' is ignored "
                          "(expected title, description, params, skip, show)", where)
        if "title" in fields:
            value.title = self.text(fields["title"][1], str(key))
        value.description = self.text(fields.get("description", (None, None))[1])
        value.skip = _truthy(self.text(fields["skip"][1])) if "skip" in fields else False
        value.show = not (str(self.text(fields["show"][1])).strip().lower() == "false") if "show" in fields else True
        if "params" in fields:
            value.params, value.param_locations = self.params_block(fields["params"][1], f"params of value '{key}'")
        return value

    # -- includes --------------------------------------------------------------------------------

    def include_paths(self, node: Node) -> list[tuple[str, Location]]:
        nodes = node.items if node.kind == "seq" else [node]
        return [(self.text(item), item.location) for item in nodes]

    def resolve_include(self, name: str, where: Location, base: Path) -> Path | None:
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
        self.error(f"include '{name}' not found (looked for {looked}); check the path, which is "
                   "relative to this spec's folder", where)
        return None

    def included_axes(self, root: Node, base: Path, seen: tuple[Path, ...]) -> list[tuple[str, Location, Node]]:
        entries: list[tuple[str, Location, Node]] = []
        fields = self.lowered(root)
        if "include" not in fields:
            return entries
        for name, where in self.include_paths(fields["include"][1]):
            path = self.resolve_include(name, where, base)
            if path is None:
                continue
            if path.resolve() in seen:
                self.error(f"include '{name}' includes itself (through {' -> '.join(p.name for p in seen)})", where)
                continue
            try:
                included = read_yaml(path)
            except SpecError as err:
                self.problems.extend(err.problems)
                continue
            if self.mapping(included, f"included file {path.name}") is None:
                continue
            entries.extend(self.included_axes(included, path.parent, (*seen, path.resolve())))
            inc_fields = self.lowered(included)
            if "variables" in inc_fields:
                self.read_variables(inc_fields["variables"][1], override=False)
            axes = inc_fields.get("axes")
            if axes is None or self.mapping(axes[1], f"axes of {path.name}") is None:
                if axes is None:
                    self.error("included file has no `axes:` block", Location(path, 1, 1))
                continue
            entries.extend(axes[1].entries)
        return entries

    def read_variables(self, node: Node, override: bool = True) -> None:
        block = self.mapping(node, "variables")
        if block is None:
            return
        for key, _, value in block.entries:
            if override or key not in self.variables:
                self.variables[key] = "" if value.value is None else str(value.plain())

    # -- the whole file --------------------------------------------------------------------------

    def load(self, root: Node, overrides: dict[str, str]) -> GridSpec:
        if self.mapping(root, "a grid file") is None:
            raise SpecError(self.problems)
        fields = self.lowered(root)
        for key, (where, _) in fields.items():
            if key not in _TOP_KEYS:
                self.warn(f"unknown top-level key '{key}' is ignored (expected grid, axes, variables, include)",
                          where)
        if "variables" in fields:
            self.read_variables(fields["variables"][1])
        axis_entries = self.included_axes(root, self.path.parent, (self.path.resolve(),))
        grid_node = fields.get("grid", (None, None))[1]
        meta, base, base_locations = self.meta(grid_node)
        for name, raw in overrides.items():
            parsed = self.param(name, raw, Location(None))
            if parsed is not None:
                base[parsed[0]] = parsed[1]
                base_locations[parsed[0]] = Location(None)
        axes_entry = fields.get("axes")
        if axes_entry is not None and self.mapping(axes_entry[1], "axes") is not None:
            axis_entries.extend(axes_entry[1].entries)
        axes: dict[str, Axis] = {}
        for key, where, node in axis_entries:
            axis = self.axis(key, where, node)
            if axis is not None:
                axes[axis.id] = axis  # a spec's own axis replaces an included one of the same id
        spec = GridSpec(self.path, meta, base, list(axes.values()), base_locations)
        too_many = L.cells_problem(spec.axes, self.limits, axes_entry[0] if axes_entry else Location(self.path, 1, 1))
        if too_many is not None:
            self.problems.append(too_many)
        self.check_grid(spec, axes_entry[0] if axes_entry else Location(self.path, 1, 1))
        spec.warnings = self.warnings
        spec.resolved = resolved_form(spec, self.variables)
        if self.problems:
            raise SpecError(self.problems + self.warnings)
        return spec

    def check_grid(self, spec: GridSpec, axes_where: Location) -> None:
        if not spec.axes and not self.problems:
            self.error("the grid has no axes, so it has zero cells; add at least one axis under `axes:`",
                       axes_where)
            return
        skipped = next((axis for axis in spec.axes if all(value.skip for value in axis.values)), None)
        if skipped is not None:
            self.error(f"every value of axis '{skipped.title}' is skipped, so the grid has zero cells to render",
                       skipped.location)
        ids = {axis.id for axis in spec.axes}
        for page_key in ("x_axis", "y_axis", "x_super_axis", "y_super_axis"):
            chosen = spec.meta.page.get(page_key)
            if chosen and slugify(chosen) not in ids:
                self.warn(f"`{page_key.replace('_', ' ')}: {chosen}` names no axis; the page picks one itself",
                          axes_where)
                spec.meta.page[page_key] = None
            elif chosen:
                spec.meta.page[page_key] = slugify(chosen)


def _title_of(raw: Any) -> str:
    return f"{raw:g}" if isinstance(raw, float) else str(raw)


def resolved_form(spec: GridSpec, variables: dict[str, str]) -> dict[str, Any]:
    """The spec as run, in full form with includes and variables resolved; it loads back unchanged."""
    meta = spec.meta
    grid: dict[str, Any] = {
        "title": meta.title, "author": meta.author, "description": meta.description, "format": meta.format,
        "stylesheet": meta.stylesheet, "skip_invalid": meta.skip_invalid, "backend": meta.backend,
        "params": dict(spec.base_params),
    }
    if meta.outpath:
        grid["outpath"] = meta.outpath
    if meta.models_dir:
        grid["models_dir"] = meta.models_dir
    grid.update({key: value for key, value in meta.page.items() if value is not None})
    axes = {}
    for axis in spec.axes:
        entry: dict[str, Any] = {"title": axis.title, "description": axis.description, "values": {
            value.key: {"title": value.title, "description": value.description, "params": dict(value.params),
                        "skip": value.skip, "show": value.show}
            for value in axis.values}}
        if axis.default:
            entry["default"] = axis.value(axis.default).key
        axes[axis.id] = entry
    return {"grid": grid, "axes": axes}


def load_spec(path: str | Path, *, overrides: dict[str, str] | None = None,
              registry: P.Registry | None = None, supported: set[str] | None = None,
              strict: bool = False, limits: L.Limits = L.DEFAULT_LIMITS) -> GridSpec:
    """Load and validate a grid spec; raises SpecError listing every problem found.

    `overrides` are `--set` values that replace base params; `supported` names the params the
    chosen backend acts on (others warn, or fail with `strict`); `limits` caps the values per axis and the cells.
    """
    path = Path(path)
    loader = _Loader(path, registry or P.Registry(), supported, strict, limits)
    return loader.load(read_yaml(path), overrides or {})
