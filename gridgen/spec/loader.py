"""Builds a `GridSpec` from a YAML grid file, collecting every problem with its location.

The format is a superset of the Infinity Grid Generator's: its files load unchanged. Keys are
matched the way that script matches them (case-insensitively, and parameter names also ignore
spaces and underscores). Problems are gathered, not raised one at a time, so a user fixes a file
in one pass; `load_spec` raises `SpecError` holding all of them at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gridgen import params as P
from gridgen.errors import Location, Problem, SpecError
from gridgen.resources import data_dir
from gridgen.spec import limits as L
from gridgen.spec.ids import slugify, unique_ids
from gridgen.spec.model import PAGE_DEFAULTS, Axis, AxisValue, GridMeta, GridSpec
from gridgen.spec.peer_names import Resolved, resolve
from gridgen.spec.resolved import resolved_form
from gridgen.spec.values import expand_numbers, split_list
from gridgen.spec.yamlnodes import Node, read_yaml

_GRID_KEYS = {
    "title", "author", "description", "params", "format", "stylesheet", "outpath", "skipinvalid",
    "backend", "modelsdir", *(P.normalize_key(k) for k in PAGE_DEFAULTS),
}
_TOP_KEYS = {"grid", "axes", "variables", "include"}
_NONE_WORDS = {"", "none", "null"}
__all__ = ["load_spec", "read_meta", "slugify"]


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
        self.skip_invalid = False
        self.left_out: list[str] = []  # axes of ignored params only

    # -- reporting -------------------------------------------------------------------------------

    def error(self, message: str, where: Location | None) -> None:
        self.problems.append(Problem(message, where))

    def warn(self, message: str, where: Location | None) -> None:
        if self.strict:
            self.error(f"{message} (an error because of --strict)", where)
        else:
            self.warnings.append(Problem(message, where, "warning"))

    # -- small readers ---------------------------------------------------------------------------

    def text(self, node: Node | None, default: str = "", variables: bool = True) -> str:
        """A scalar as text, with variables substituted unless told not to; maps and lists are reported."""
        if node is None or node.kind == "scalar" and node.value is None:
            return default
        if node.kind != "scalar":
            self.error("expected text here, found a " + ("mapping" if node.kind == "map" else "list"),
                       node.location)
            return default
        text = str(node.value) if not isinstance(node.value, bool) else str(node.value).lower()
        return self.substitute(text, node.location) if variables else text

    def substitute(self, text: str, where: Location | None) -> str:
        # Variable names match whatever their case (Infinity Grid lower-cases them); the result is capped.
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
        resolved = self.resolve_param(name, where)
        if resolved is None:
            return None
        try:
            return resolved.name, P.coerce(resolved.param, resolved.value(raw))
        except ValueError as err:
            self.error(str(err), where)
            return None

    def resolve_param(self, name: str, where: Location, ignored: str = "is ignored") -> Resolved | None:
        """The param `name` means (gridgen's spelling or a peer tool's); None when it is unknown
        (an error) or known but not supported by this backend (a warning, once per param)."""
        resolved = resolve(self.registry, name)
        if resolved is None:
            hint = self.registry.suggest(name)
            advice = f"did you mean '{hint}'?" if hint else "run `gridgen params` to list them"
            self.error(f"unknown parameter '{name}'; {advice}", where)
            return None
        if resolved.param is None or self.supported is not None and resolved.name not in self.supported:
            self.warn_unsupported(resolved, name, where, ignored)
            return None
        return resolved

    def warn_unsupported(self, resolved: Resolved, written: str, where: Location, ignored: str) -> None:
        if resolved.name in self.warned_params:
            return
        self.warned_params.add(resolved.name)
        spelled = "" if P.normalize_key(written) == P.normalize_key(resolved.name) else f" ('{written}')"
        why = f" ({resolved.note})" if resolved.note else ""
        self.warn(f"parameter '{resolved.name}'{spelled} is not supported by this backend{why} and {ignored}", where)

    def settle_invalid(self, value: AxisValue, problems_before: int) -> None:
        """Problems with a skipped value's params, and with skip_invalid an invalid value's, are warnings:
        Infinity Grid does not check skipped values and skips the invalid ones."""
        found = self.problems[problems_before:]
        if not found or not (value.skip or self.skip_invalid):
            return
        why = "the value is skipped" if value.skip else "skip_invalid: the value is skipped"
        value.skip = True
        del self.problems[problems_before:]
        self.warnings.extend(Problem(f"{p.message} ({why})", p.location, "warning") for p in found)

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

    def meta(self, node: Node | None, with_params: bool = True) -> tuple[GridMeta, dict[str, Any], dict[str, Location]]:
        meta = GridMeta(title=self.path.stem)
        block = self.mapping(node, "grid")
        if block is None:
            return meta, {}, {}
        base, base_locations = {}, {}
        for key, where, value in block.entries:
            name = P.normalize_key(key)
            if name == "params":
                if with_params:
                    base, base_locations = self.params_block(value, "grid params")
            elif name in ("title", "author", "description", "stylesheet", "outpath", "backend"):
                setattr(meta, name, self.text(value))
            elif name == "modelsdir":
                meta.models_dir = self.text(value) or None
            elif name == "format":
                try:
                    meta.format = P.coerce(self.registry.params["format"], self.text(value)) if self.text(value) \
                        else "png"
                except ValueError as err:
                    self.error(str(err), value.location)
            elif name == "skipinvalid":
                meta.skip_invalid = self.skip_invalid = _truthy(self.text(value))
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
        default_node, listed = None, True
        if node.kind in ("scalar", "seq"):
            values = self.list_values(key, node)
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
                listed = False
                values = [v for v in (self.full_value(k, w, n) for k, w, n in values_node.entries) if v]
            else:
                values = self.list_values(key, values_node)
            default_node = fields.get("default", (None, None))[1]
        else:
            values = []
        if values is None:
            self.left_out.append(str(key))  # it varies only an ignored param; the warning says so
            return None
        axis.values = values
        if not axis.values:
            if len(self.problems) > problems_before:
                return None  # its values are already reported; "empty" would only repeat them
            where = node.location if node.kind != "map" else key_where
            self.error(f"axis '{key}' is empty; give it at least one value", where)
            return None
        for value, value_id in zip(axis.values, unique_ids([slugify(v.key) for v in axis.values]), strict=True):
            value.id = value_id
        too_many = L.axis_problem(axis, self.limits)
        if too_many is not None:
            self.problems.append(too_many)
            return None
        if default_node is not None:
            axis.default = self.default(axis, default_node, listed)
        return axis

    def default(self, axis: Axis, node: Node, listed: bool) -> str | None:
        """The value `default:` names: by key, id or title; on a listed axis also by position (1 = first),
        which is how Infinity Grid reads it there."""
        wanted = self.text(node)
        by_value = next((v.id for v in axis.values if wanted in (v.key, v.id) or slugify(wanted) == v.id), None)
        by_position = None
        if listed and wanted.strip().isdigit() and 1 <= int(wanted) <= len(axis.values):
            by_position = axis.values[int(wanted) - 1].id
        if by_value is not None and by_position is not None and by_value != by_position:
            self.warn(f"default '{wanted}' picks the value {wanted} of axis '{axis.title}'; Infinity Grid reads a "
                      f"listed axis's default as a position and would pick value {wanted} in order "
                      f"('{axis.value(by_position).title}')", node.location)
        chosen = by_value or by_position
        if chosen is None:
            names = ", ".join(v.key for v in axis.values)
            self.warn(f"default '{wanted}' names no value of axis '{axis.title}', so the page starts on its first "
                      f"value; use one of: {names}", node.location)
        return chosen

    def list_values(self, axis_key: str, node: Node) -> list[AxisValue] | None:
        """`seed: 1, 2, 3` and friends: each item sets the param the axis is named after.

        None when that param is known but ignored here (warned): the axis is left out, since its values
        would render the same image. Variables are substituted after the split, as Infinity Grid does,
        so a variable holding a comma stays one value.
        """
        problems_before = len(self.problems)
        resolved = self.resolve_param(axis_key, node.location, ignored="the axis is left out")
        if resolved is None:
            return [] if len(self.problems) > problems_before else None
        param = resolved.param
        if node.kind == "seq":
            items = [str(self.raw_value(item)).strip() for item in node.items]
        else:
            written = self.text(node, variables=False)
            items = split_list(written)
            if len(items) <= self.limits.max_axis_values:  # over the cap it is refused below, unsubstituted
                items = [self.substitute(item, node.location) for item in items]
            if '"' in written and "||" not in written and len(items) != len(written.split(",")):
                self.warn(f"axis '{axis_key}': quotes keep commas inside a value, as in A1111; Infinity Grid "
                          f"splits on every comma", node.location)
        too_many = L.values_over_cap(len(items), self.limits, f"axis '{axis_key}'")
        if too_many:
            self.problems.append(L.OverCap(too_many, node.location))
            return []
        raw_items: list[Any] = items
        if param.kind in ("int", "seed", "float"):
            notes: list[str] = []
            try:
                raw_items = expand_numbers(items, integer=param.kind != "float", notes=notes, limits=self.limits)
            except ValueError as err:
                found = L.OverCap if isinstance(err, L.CapExceeded) else Problem
                self.problems.append(found(f"axis '{axis_key}': {err}", node.location))
                return []
            for message in notes:
                self.warn(f"axis '{axis_key}': {message}", node.location)
        titles = [_title_of(raw) for raw in raw_items]
        if resolved.name == "prompt_replace" and raw_items and not any("=" in str(raw) for raw in raw_items):
            # The short form of Infinity Grid and A1111's Prompt S/R: the first value is the text each replaces.
            raw_items = [f"{raw_items[0]}={raw}" for raw in raw_items]
        values = []
        for raw, title in zip(raw_items, titles, strict=True):
            value = AxisValue(id="", key=title, title=title, location=node.location)
            problems_before = len(self.problems)
            try:
                value.params = {resolved.name: P.coerce(param, resolved.value(raw))}
                value.param_locations = {resolved.name: node.location}
            except ValueError as err:
                self.error(str(err), node.location)
            self.settle_invalid(value, problems_before)
            values.append(value)
        return values

    def full_value(self, key: str, key_where: Location, node: Node) -> AxisValue | None:
        value = AxisValue(id="", key=str(key), title=str(key), location=key_where)
        problems_before = len(self.problems)
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
            self.settle_invalid(value, problems_before)
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
            problems_before = len(self.problems)
            value.params, value.param_locations = self.params_block(fields["params"][1], f"params of value '{key}'")
            self.settle_invalid(value, problems_before)
        return value

    # -- includes --------------------------------------------------------------------------------

    def include_paths(self, node: Node) -> list[tuple[str, Location]]:
        nodes = node.items if node.kind == "seq" else [node]
        # Paths as written: a variable named like a letter of the path must not rewrite it.
        return [(self.text(item, variables=False), item.location) for item in nodes]

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
        for key, where, value in block.entries:
            if override or key not in self.variables:
                self.variables[key] = "" if value.value is None else str(value.plain())
            if key != key.lower():
                self.warn(f"variable '{key}' matches whatever its case here; Infinity Grid lower-cases variable "
                          f"names and would replace only '{key.lower()}'", where)

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
        included = len(axis_entries)
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
        axes: list[Axis] = []
        from_include: list[bool] = []
        for position, (key, where, node) in enumerate(axis_entries):
            axis = self.axis(key, where, node)
            if axis is None:
                continue
            # An axis replaces an included one of the same id; two of the spec's own (`cfg scale`, `cfg_scale`)
            # are both kept, as Infinity Grid keeps them.
            earlier = next((i for i, old in enumerate(axes) if old.id == axis.id and from_include[i]), None)
            if earlier is None:
                axes.append(axis)
                from_include.append(position < included)
            else:
                axes[earlier], from_include[earlier] = axis, position < included
        for axis, axis_id in zip(axes, unique_ids([axis.id for axis in axes]), strict=True):
            axis.id = axis_id
        spec = GridSpec(self.path, meta, base, axes, base_locations)
        too_many = L.cells_problem(spec.axes, self.limits, axes_entry[0] if axes_entry else Location(self.path, 1, 1))
        if too_many is not None:
            self.problems.append(too_many)
        self.check_grid(spec, axes_entry[0] if axes_entry else Location(self.path, 1, 1))
        spec.warnings = self.warnings
        spec.resolved = resolved_form(spec)
        if self.problems:
            raise SpecError(self.problems + self.warnings)
        return spec

    def check_grid(self, spec: GridSpec, axes_where: Location) -> None:
        if not spec.axes and not self.problems:
            left_out = f" (axes {', '.join(self.left_out)} vary only ignored parameters)" if self.left_out else ""
            self.error(f"the grid has no axes{left_out}, so it has zero cells; add at least one axis under `axes:`",
                       axes_where)
            return
        skipped = next((axis for axis in spec.axes if all(value.skip for value in axis.values)), None)
        if skipped is not None:
            self.warn(f"every value of axis '{skipped.title}' is skipped, so the grid has zero cells to render",
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


def read_meta(path: str | Path) -> GridMeta:
    """A spec's `grid:` settings (backend, models_dir, outpath, ...), variables and includes applied, read
    before its backend is known: the full load needs the backend's params. Problems are left to `load_spec`."""
    path = Path(path)
    loader = _Loader(path, P.Registry(), None, strict=False)
    root = read_yaml(path)
    if root.kind != "map":
        return GridMeta(title=path.stem)
    fields = loader.lowered(root)
    if "variables" in fields:
        loader.read_variables(fields["variables"][1])
    loader.included_axes(root, path.parent, (path.resolve(),))  # the included files' variables
    return loader.meta(fields.get("grid", (None, None))[1], with_params=False)[0]
